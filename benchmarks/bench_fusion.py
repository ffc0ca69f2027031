"""Fusion against the linear probe on the generated multimodal corpora (issue #32): does each dialogue model use
what every modality carries at least as well as a logistic regression on the same features?

For each setting (``signal``: prosody and face expression follow the label for a fraction of utterances;
``control``: they are drawn independently of the label), each modality set (text, audio, face, text+audio,
text+face, all three) and each row (the linear probe; the Mamba dialogue model and MaTAV, each as it was
before issue #32 and with today's multimodal defaults), train K seeds through ``merc.training.experiment``
(the same cached features, standardisation and splits as ``merc train``; dev-selected, test once) and report
test weighted F1 as mean ± std, with the probe beside every cell.

    .venv/bin/python benchmarks/bench_fusion.py --signal $MM_DATA/mm_signal --control $MM_DATA/mm_control \
        --seeds 3        # -> benchmarks/results/fusion/fusion_vs_probe.md / .json

Resumable: each finished (setting, row, modalities) cell is a JSON file under ``--work``; a rerun skips it.
``--rows`` / ``--modality-sets`` / ``--settings`` pick what to run; ``--report-only`` writes the table from
the cells finished so far. ``$MM_DATA`` is where ``benchmarks/make_mm_corpus.py`` wrote the corpora.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from merc.data import load_corpus  # noqa: E402
from merc.io import provenance, provenance_markdown  # noqa: E402
from merc.models.dialogue import DialogueConfig  # noqa: E402
from merc.models.linear import LinearConfig  # noqa: E402
from merc.models.matav import MatavConfig  # noqa: E402
from merc.training.defaults import RESIDUAL_MIN_STEPS, fusion_defaults  # noqa: E402
from merc.training.experiment import run_experiment  # noqa: E402
from merc.training.features import DEFAULT_ENCODERS  # noqa: E402
from merc.training.probe import selected_c  # noqa: E402
from merc.training.trainer import TrainConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_text, pm, write_json  # noqa: E402  (machine paths made portable)
from fusion_paired import intervals, paired_markdown  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "fusion"
MODALITY_SETS = ["text", "audio", "face", "text,audio", "text,face", "text,audio,face"]
ROWS = {  # name -> (title, model config before the run's modalities are known, apply today's fusion defaults)
    "linear": ("linear probe (`--model linear`, C on dev)", LinearConfig(), False),
    "mamba-before": ("Mamba, fusion before #32 (`--fusion plain`)", DialogueConfig(kind="mamba"), False),
    "mamba": ("Mamba, today's defaults (`--fusion auto`)", DialogueConfig(kind="mamba"), True),
    "matav-before": ("MaTAV, fusion before #32 (`--fusion plain`)", MatavConfig(), False),
    "matav": ("MaTAV, today's defaults (`--fusion auto`)", MatavConfig(), True),
}
# the diagnosis: which part of residual fusion does what (run with --rows, e.g. on audio and text+audio)
ABLATIONS = {
    "mamba-steps": ("Mamba, plain fusion, ≥ 600 steps (`--fusion plain --min-steps 600`)",
                    DialogueConfig(kind="mamba"), TrainConfig(min_steps=RESIDUAL_MIN_STEPS)),
    "mamba-utt": ("Mamba + per-utterance logits from zero (no probe), ≥ 600 steps",
                  DialogueConfig(kind="mamba", utterance_logits=True), TrainConfig(min_steps=RESIDUAL_MIN_STEPS)),
    "mamba-lp25": ("Mamba, residual fusion but 25 epochs (`--fusion residual --min-steps 0`)",
                   DialogueConfig(kind="mamba", utterance_logits=True), TrainConfig(probe_init=True)),
    "mamba-residual": ("Mamba, `--fusion residual` (also for text alone)",
                       DialogueConfig(kind="mamba", utterance_logits=True),
                       TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS)),
    "mamba-moddrop": ("Mamba, `--fusion auto --modality-dropout audio=0.3,face=0.3`",
                      DialogueConfig(kind="mamba", utterance_logits=True),
                      TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS)),
    "mamba-late": ("Mamba, residual with text alone in the context (audio and faces per utterance only)",
                   DialogueConfig(kind="mamba", utterance_logits=True, context_modalities=["text"]),
                   TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS)),
    "mamba-gated": ("Mamba, residual fusion with a per-utterance gate on each modality",
                    DialogueConfig(kind="mamba", utterance_logits=True, gated=True),
                    TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS)),
    "matav-residual": ("MaTAV, `--fusion residual`", MatavConfig(utterance_logits=True),
                       TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS)),
    # before probe_select existed, residual fusion started from the probe chosen on dev weighted F1
    "mamba-probe-f1": ("Mamba, residual from the dev-F1 probe (`--fusion auto --probe-select weighted_f1`)",
                       DialogueConfig(kind="mamba", utterance_logits=True),
                       TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS, probe_select="weighted_f1")),
    "matav-residual-probe-f1": ("MaTAV, `--fusion residual --probe-select weighted_f1`",
                                MatavConfig(utterance_logits=True),
                                TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS,
                                            probe_select="weighted_f1")),
    "mamba-stacked": ("Mamba, `--fusion stacked` (context on out-of-fold probe logits)",
                      DialogueConfig(kind="mamba", utterance_logits=True, stacked=True),
                      TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS)),
    "matav-stacked": ("MaTAV, `--fusion stacked`", MatavConfig(utterance_logits=True, stacked=True),
                      TrainConfig(probe_init=True, min_steps=RESIDUAL_MIN_STEPS)),
}

MODALITY_DROPOUT = {"mamba-moddrop": {"audio": 0.3, "face": 0.3}}  # row -> training-time modality dropout


def cell_path(work: Path, setting: str, row: str, mods: str) -> Path:
    return work / f"{setting}__{row}__{mods.replace(',', '+')}.json"


def configs(row: str, modalities: list[str]):
    if row in ABLATIONS:
        return ABLATIONS[row][1:]
    _, config, today = ROWS[row]
    return fusion_defaults(config, TrainConfig(), modalities) if today else (config, TrainConfig())


def run_cell(corpus, setting: str, root: str, row: str, mods: str, seeds: int, work: Path,
             encoders: dict[str, list[str]]) -> dict:
    part = cell_path(work, setting, row, mods)
    if part.is_file():
        return json.loads(part.read_text())
    t0 = time.time()
    modalities = mods.split(",")
    model_config, train_config = configs(row, modalities)
    before = f"{row}-before"
    if before in ROWS and row in ROWS and configs(before, modalities) == (model_config, train_config):
        # today's defaults are the old ones for this cell (text alone): the same runs, not trained twice
        res = {**run_cell(corpus, setting, root, before, mods, seeds, work, encoders), "row": row, "same_as": before}
        write_json(part, res)
        return res
    twin = same_start(work, setting, row, mods, model_config, train_config)
    if twin is None and row in ROWS:  # e.g. MaTAV's defaults on one modality are the `matav-residual` row
        twin = next((r for r in ABLATIONS if configs(r, modalities) == (model_config, train_config)
                     and MODALITY_DROPOUT.get(r) == MODALITY_DROPOUT.get(row)
                     and cell_path(work, setting, r, mods).is_file()), None)
    if twin is not None:  # the starting probe is the same under either criterion: the same runs, not trained twice
        res = {**run_cell(corpus, setting, root, twin, mods, seeds, work, encoders), "row": row, "same_as": twin}
        write_json(part, res)
        return res
    probe = isinstance(model_config, LinearConfig)  # deterministic (L-BFGS): one fit stands for every seed
    out = work / "runs" / setting / row / mods
    summary = run_experiment(dataset="meld", data_dir=root, media_dir=root, out=out / "seed_0" if probe else out,
                             model_config=model_config, train_config=train_config, modalities=modalities,
                             modality_dropout={m: q for m, q in MODALITY_DROPOUT.get(row, {}).items()
                                               if m in modalities},
                             encoders={m: encoders[m] for m in modalities},
                             text_encoder=encoders["text"][0], seeds=1 if probe else seeds, progress=False,
                             corpus=corpus, resume=True)
    res = {"setting": setting, "row": row, "modalities": mods, "seeds": summary["seeds"], "dev": summary["dev"],
           "test": summary["test"], "extraction": summary.get("extraction"),
           "train_seconds": summary["train_seconds"], "seconds": round(time.time() - t0, 1),
           "commit": summary["provenance"].get("git_commit", "")[:7] + ("+dirty" if summary["provenance"].get(
               "git_dirty") else ""),
           "model_config": {k: v for k, v in vars(model_config).items() if k != "input_dims"},
           "train_config": vars(train_config), "date": time.strftime("%Y-%m-%d %H:%M")}
    write_json(part, res)
    return res


def same_start(work: Path, setting: str, row: str, mods: str, model_config, train_config) -> str | None:
    """The ``-probe-f1`` twin of a residual ``row`` when both would start from the same probe: the probe row's
    dev history (one entry per C) gives the same C under dev log loss and dev weighted F1, and the configs differ
    in ``probe_select`` alone. Training is then the same computation (same seeds, same start)."""
    twin = f"{row}-probe-f1" if row in ROWS else "matav-residual-probe-f1" if row == "matav-residual" else None
    if twin not in ABLATIONS or not cell_path(work, setting, twin, mods).is_file():
        return None
    twin_model, twin_train = configs(twin, mods.split(","))
    if twin_model != model_config or replace(twin_train, probe_select=train_config.probe_select) != train_config:
        return None
    probe_run = work / "runs" / setting / "linear" / mods / "seed_0" / "metrics.json"
    if not probe_run.is_file():
        return None
    history = json.loads(probe_run.read_text())["history"]
    return twin if selected_c(history, "loss") == selected_c(history, "weighted_f1") else None


def values(r: dict, split: str = "test") -> list[float]:
    return r[split]["weighted_f1"].get("values") or [r[split]["weighted_f1"]["mean"]]


def report(results: list[dict], args, prov: dict) -> str:
    by = {(r["setting"], r["row"], r["modalities"]): r for r in results}
    rows = [r for r in args.rows.split(",") if r in ROWS or r in ABLATIONS]
    title = {k: v[0] for k, v in {**ROWS, **ABLATIONS}.items()}
    lines = ["# Fusion against the linear probe on the generated multimodal corpora (issue #32)", "",
             provenance_markdown(prov), "",
             f"Command: `.venv/bin/python benchmarks/bench_fusion.py --signal $MM_DATA/{Path(args.signal).name} "
             f"--control $MM_DATA/{Path(args.control).name} --seeds {args.seeds} --rows {args.rows} "
             f"--settings {args.settings} --text-encoders {','.join(args.encoders['text'])} --audio-encoders "
             f"{','.join(args.encoders['audio'])} --face-encoders {','.join(args.encoders['face'])}`", "",
             "Data: real MELD dialogues re-voiced with espeak-ng and re-faced with photos "
             "(`benchmarks/make_mm_corpus.py`; `mm_corpus.md`); *signal*: prosody and face expression follow the "
             "label for a fraction of utterances; *control*: drawn independently of the label. Encoders: text "
             f"{'+'.join(args.encoders['text'])} (frozen), audio {'+'.join(args.encoders['audio'])}, face "
             f"{'+'.join(args.encoders['face'])} (defaults: {json.dumps(DEFAULT_ENCODERS)}). "
             f"Each cell: {args.seeds} seeds unless it says otherwise, dev-selected (early stopping; C for the probe), "
             "test scored once; "
             "test weighted F1 mean ± std (%). The probe is deterministic (L-BFGS): it is fitted once (± 0.00). "
             "Δ = row − probe on the same features.", "",
             "Cells trained at commit(s) " + ", ".join(f"`{c}`" for c in sorted({r.get("commit", "?")
                                                                              for r in results}))
             + " (`+dirty`: the checkout held this script's own earlier report, nothing else).", "",
             "What it can answer: does a fusion model use a modality when it carries information, at least as "
             "well as a linear model? It says nothing about real-world multimodal accuracy.", ""]
    for setting in [s for s in ("signal", "control") if s in args.settings.split(",")]:
        lines += [f"## {setting}", "", "| modalities | " + " | ".join(title[r] for r in rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for mods in MODALITY_SETS:
            probe = by.get((setting, "linear", mods))
            cells = []
            for row in rows:
                r = by.get((setting, row, mods))
                if r is None:
                    cells.append("not run")
                    continue
                s = pm(r["test"]["weighted_f1"])
                n = r["test"]["weighted_f1"].get("n", args.seeds)
                if row != "linear" and n != args.seeds:  # e.g. control cells re-run with more seeds
                    s += f" ({n} seeds)"
                if probe is not None and row != "linear":
                    s += f" (Δ {100 * (r['test']['weighted_f1']['mean'] - probe['test']['weighted_f1']['mean']):+.1f})"
                cells.append(s)
            lines.append(f"| {mods} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"Dev weighted F1 ({setting}, the selection criterion):", "",
                  "| modalities | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
        for mods in MODALITY_SETS:
            lines.append(f"| {mods} | " + " | ".join(pm(by[(setting, r, mods)]["dev"]["weighted_f1"])
                                                     if (setting, r, mods) in by else "—" for r in rows) + " |")
        lines.append("")
    for row in rows:  # a cell trained with this row's settings (not one that reused the old row's runs)
        cfgs = [r for r in results if r["row"] == row and "same_as" not in r]
        if cfgs:
            lines.append(f"- `{row}` settings: model {json.dumps(cfgs[0]['model_config'])}; "
                         f"training {json.dumps(cfgs[0]['train_config'])}")
    for r in results:
        if r.get("same_as"):  # (a reused cell also carries its source's note)
            lines.append(f"- {r['setting']} · {r['row']} · {r['modalities']}: the runs of `{r['same_as']}` "
                         "(the same configuration and start, not trained twice)")
        elif r.get("note"):
            lines.append(f"- {r['setting']} · {r['row']} · {r['modalities']}: {r['note']}")
    lines += ["", "Per-seed scores, timings and absent-modality counts: fusion_vs_probe.json."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signal", required=True, help="generated corpus where audio/face follow the label")
    ap.add_argument("--control", required=True, help="generated corpus where audio/face ignore the label")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"comma list of {list(ROWS)} and the diagnosis rows {list(ABLATIONS)}")
    ap.add_argument("--modality-sets", default=";".join(MODALITY_SETS), help="';'-separated modality sets")
    ap.add_argument("--settings", default="signal,control", help="which corpora to run (signal, control)")
    ap.add_argument("--report-only", action="store_true", help="write the table from finished cells, train nothing")
    ap.add_argument("--paired", action="store_true",
                    help="add 95%% bootstrap intervals over test dialogues for today's rows against the probe "
                         "(and, on control, against text alone), from the saved runs (fusion_paired.py)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    for m in ("text", "audio", "face"):
        ap.add_argument(f"--{m}-encoders", default=",".join(DEFAULT_ENCODERS[m]), help=f"{m} encoders, in order")
    ap.add_argument("--work", default=os.path.join(os.environ.get("MERC_CACHE", "/tmp"), "bench_fusion"),
                    help="run directories and per-cell results (resumable)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prov, results = provenance(), []
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS) - set(ABLATIONS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {list(ROWS) + list(ABLATIONS)}")
    roots = {"signal": args.signal, "control": args.control}
    encoders = {m: getattr(args, f"{m}_encoders").split(",") for m in ("text", "audio", "face")}
    args.encoders = encoders
    for setting in [s for s in ("signal", "control") if s in args.settings.split(",")]:
        corpus = None if args.report_only else load_corpus("meld", roots[setting], media_dir=roots[setting])
        for mods in args.modality_sets.split(";"):
            for row in rows:
                p = cell_path(work, setting, row, mods)
                if args.report_only:
                    if p.is_file():
                        results.append(json.loads(p.read_text()))
                    continue
                r = run_cell(corpus, setting, roots[setting], row, mods, args.seeds, work, encoders)
                results.append(r)
                print(f"{setting:8s} {mods:16s} {row:14s} test wF1 {pm(r['test']['weighted_f1'])} "
                      f"(dev {pm(r['dev']['weighted_f1'])}, {r['seconds']:.0f} s)", flush=True)
    paired = intervals(results, args.settings.split(","), args.modality_sets.split(";"), work, roots,
                       encoders) if args.paired else []
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "fusion_vs_probe.json", {"provenance": prov, "results": results, "paired": paired,
                                              "mean_test_values": {f"{r['setting']}/{r['row']}/{r['modalities']}":
                                                                   values(r) for r in results}})
    text = report(results, args, prov) + paired_markdown(paired)
    atomic_write_text(OUT / "fusion_vs_probe.md", text)
    print(text)


if __name__ == "__main__":
    main()
