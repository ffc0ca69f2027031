#!/usr/bin/env bash
# Rebuilds the small model that `merc demo` ships (merc/assets/demo_run): a Mamba dialogue head over
# MiniLM sentence embeddings, trained on MELD (../shared/data/meld) with early stopping on dev.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MELD_DIR:-../shared/data/meld}
rm -rf merc/assets/demo_run
.venv/bin/merc train --dataset meld --data-dir "$DATA" --model mamba --modalities text --text-encoder minilm \
  --d-model 128 --layers 2 --dropout 0.5 --lr 3e-4 --epochs 25 --patience 5 --seed 0 --quiet --out merc/assets/demo_run
# keep the package small: the plots stay, the per-epoch history stays in metrics.json
du -sh merc/assets/demo_run
