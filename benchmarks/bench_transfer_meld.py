"""Identity-based transfer on real MELD text (issue 13, "Must show"): does the stage-2 text adapter help?

Four systems through the Mamba dialogue model, 5 seeds, dev-selected, test scored once:

  (a) frozen MPNet                      (b) frozen MPNet + stage-2 text adapter
  (c) emotion-tuned MPNet               (d) emotion-tuned MPNet + stage-2 text adapter

and each adapter alone on MELD test, with no MELD training at all (cross-corpus transfer). The adapters are
trained only on the ../shared text corpora (GoEmotions, CrowdFlower, ISEAR; never MELD) by
``benchmarks/bench_adapters.py``; the dialogue models are the ``mamba`` / ``transfer`` rows of
``benchmarks/bench_matav.py``. This script runs both (each resumes what it finished before) and writes
benchmarks/results/transfer/transfer_meld_text.md and .json:

    .venv/bin/python benchmarks/bench_transfer_meld.py --tuned ../ft/mpnet-meld --per-class 500 --seeds 5

The emotion-tuned MPNet is made by ``benchmarks/bench_finetune.py`` (``merc encoder finetune``), outside the
repository. ``--report-only`` writes the table from finished parts.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from merc.io import provenance, provenance_markdown

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "transfer"
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import atomic_write_text, pm, welch, write_json  # noqa: E402
from bench_adapters import runs_dir  # noqa: E402


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tuned", required=True, help="folder of the emotion-tuned MPNet (bench_finetune.py --out)")
    ap.add_argument("--per-class", type=int, default=500, help="adapter sample cap per class")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "meld"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    py = sys.executable
    systems = [("mpnet", "mpnet", "frozen MPNet (all-mpnet-base-v2)"),
               ("mpnet-meld", str(Path(args.tuned).resolve()), "emotion-tuned MPNet (fine-tuned on MELD train)")]
    if not args.report_only:
        for label, enc, _ in systems:
            spec = enc if label == enc else f"{label}={enc}"
            _run([py, "benchmarks/bench_adapters.py", "--runs", f"{spec}:{args.per_class}", "--meld", label,
                  "--threads", "1"])
            adapter = runs_dir() / f"text-{label}-{args.per_class}-s0"
            _run([py, "benchmarks/bench_matav.py", "--label", f"meld_text_{label}", "--data-dir", args.data_dir,
                  "--modalities", "text", "--text-encoder", enc, "--seeds", str(args.seeds),
                  "--rows", "mamba,transfer", "--adapters", f"text={adapter}"])
    table, data = [], {"provenance": provenance(), "args": vars(args), "systems": {}}
    letters = iter("abcd")
    for label, _, desc in systems:
        matav = json.loads((RESULTS / "matav" / f"matav_meld_text_{label}.json").read_text())
        part = json.loads((RESULTS / "adapters" / "adapters_text" / f"{label}_{args.per_class}_s0.json").read_text())
        rows = matav["rows"]
        data["systems"][label] = {"dialogue": rows, "adapter": {k: part[k] for k in (
            "encoder", "encoder_path", "fingerprint", "per_class", "heldout", "meld_test", "meld_test_majority",
            "n_train", "n_heldout", "adapter_dir", "command", "date") if k in part}}
        for row, what in (("mamba", "stage-1 features"), ("transfer", "stage-2 adapter's 128-d bottleneck")):
            r = rows.get(row)
            table.append((next(letters), desc, what, r))
    lines = ["# Identity-based transfer on MELD text: stage-1 features vs the stage-2 adapter", "",
             "Command: `.venv/bin/python benchmarks/bench_transfer_meld.py " + " ".join(sys.argv[1:]) + "`", "",
             f"Mamba dialogue model (defaults of `merc train --model mamba`: d_model 128, 2 layers, dropout 0.5, "
             f"AdamW lr 3e-4 with weight-decay groups, at most 25 epochs, patience 5), {args.seeds} seeds, the "
             "dev-best epoch scored on test once; percent, mean ± sample std. Adapters: MLP (stage-1 → 512 → 128 "
             f"→ 7) trained on a balanced sample of at most {args.per_class} texts per class from GoEmotions, "
             "CrowdFlower and ISEAR (never MELD), early-stopped on a held-out 10% of that sample; frozen in the "
             "dialogue model.", "",
             "| | text encoder | dialogue-model input | test weighted F1 | test accuracy | test macro F1 | "
             "dev weighted F1 |", "|---|---|---|---:|---:|---:|---:|"]
    for letter, desc, what, r in table:
        if r is None:
            lines.append(f"| ({letter}) | {desc} | {what} | not run | | | |")
            continue
        lines.append(f"| ({letter}) | {desc} | {what} | {pm(r['test']['weighted_f1'])} | "
                     f"{pm(r['test']['accuracy'])} | {pm(r['test']['macro_f1'])} | {pm(r['dev']['weighted_f1'])} |")
    wd = RESULTS / "meld_text" / "meld_text_wd" / "mamba_mpnet-meld.json"
    c = table[2][3] if len(table) > 2 else None
    if wd.exists() and c is not None:
        same = abs(json.loads(wd.read_text())["test"]["weighted_f1"]["mean"] - c["test"]["weighted_f1"]["mean"]) < 1e-9
        lines += ["", "(c) is the experiment of the *after* mamba row of `meld_text_wd.md` (same code, encoder, "
                  "settings and seeds) run again by another script: "
                  + ("the test figures agree to the last digit (training is deterministic on this CPU)." if same
                     else "the test figures differ (see both files).")]
    lines += ["", "Does stage 2 help? Test weighted F1 with the adapter minus without (points; Welch's t-test over "
              "seeds):", ""]
    verdicts = []  # per encoder: "lowers" / "raises" / "no clear difference"
    for (la, desc, _, a), (lb, _, _, b) in zip(table[::2], table[1::2], strict=True):
        if a is None or b is None:
            lines.append(f"- {desc}: ({lb}) − ({la}) not measured")
            continue
        d = 100 * (b["test"]["weighted_f1"]["mean"] - a["test"]["weighted_f1"]["mean"])
        p = welch(b["test"]["weighted_f1"]["values"], a["test"]["weighted_f1"]["values"])
        effect = "no clear difference" if p is None or p >= 0.05 else ("lowers" if d < 0 else "raises")
        verdicts.append((desc, effect))
        lines.append(f"- {desc}: ({lb}) − ({la}) = {d:+.2f} points" + (f", p = {p:.3g}" if p is not None else "")
                     + f": {effect}")
    if verdicts:
        effects = {e for _, e in verdicts}
        head = ("Yes" if effects == {"raises"} else "No" if "raises" not in effects else "Only in part")
        lines += ["", f"**Verdict.** {head}: the stage-2 text adapter "
                  + "; ".join(f"{e if e != 'no clear difference' else 'makes no clear difference to'} "
                              f"MELD test weighted F1 over the {d}" for d, e in verdicts)
                  + " (a clear difference: Welch's p < 0.05 over seeds)."]
    lines += ["", "## Each adapter alone on MELD test (no MELD training)", "",
              "The adapter is trained without MELD, and so is the frozen MPNet under it. The emotion-tuned MPNet "
              "was itself fine-tuned on MELD train, so its row is not cross-corpus transfer: it shows how much of "
              "the tuned encoder's MELD knowledge survives an adapter trained on other corpora.", "",
              "| adapter over | held-out wF1 (own sample, n) | MELD test wF1 | accuracy | macro F1 | "
              "majority-class wF1 |",
              "|---|---:|---:|---:|---:|---:|"]
    for label, _, desc in systems:
        a = data["systems"][label]["adapter"]
        m, h, mj = a.get("meld_test"), a["heldout"], a.get("meld_test_majority")
        if m is None:
            lines.append(f"| {desc} | {100 * h['weighted_f1']:.2f} ({h['n']}) | not measured | | | |")
            continue
        lines.append(f"| {desc} | {100 * h['weighted_f1']:.2f} ({h['n']}) | {100 * m['weighted_f1']:.2f} | "
                     f"{100 * m['accuracy']:.2f} | {100 * m['macro_f1']:.2f} | {100 * mj['weighted_f1']:.2f} |")
    per_class = [(f"({letter})", r) for letter, _, _, r in table if r is not None]
    if per_class:
        labs = list(per_class[0][1]["test_per_class_f1"])
        lines += ["", "Test F1 per class (mean over seeds):", "", "| | " + " | ".join(labs) + " |",
                  "|---|" + "---:|" * len(labs)]
        lines += [f"| {k} | " + " | ".join(f"{100 * r['test_per_class_f1'][lab]:.1f}" for lab in labs) + " |"
                  for k, r in per_class]
    lines += ["", provenance_markdown(data["provenance"]), "",
              "The per-system details (commands, seeds, run folders) are in "
              + ", ".join(f"`matav_meld_text_{label}.md`" for label, _, _ in systems) + " and `adapters_text.md`.",
              "Published for comparison (Wang & Beigi, their full system with ≈6.2k texts per class and five text "
              "corpora, MELD text+speaker+face): 64.53 weighted F1; text-only figures of the stages are not given."]
    atomic_write_text(OUT / "transfer_meld_text.md", "\n".join(lines) + "\n")
    write_json(OUT / "transfer_meld_text.json", data)
    print((OUT / "transfer_meld_text.md").read_text())


if __name__ == "__main__":
    main()
