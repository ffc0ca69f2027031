"""QC check(s) (default: faces), before and after (issue #30): `merc qc --checks faces` with the merc of another
commit and with this checkout, interleaved, on the seen QC fixture (`bench_qc.py`'s synthetic MELD-layout corpus: 200
utterances, 6 speakers, 10% faults, seed 0) or any MELD-layout corpus; CPU seconds per media second and the flags
compared (status per utterance, largest distance difference, the chosen speaker track's boxes).

Each side runs in its own process, started in its code's folder (``bench_media.which_merc``), with a fresh QC
folder; ``--rounds`` alternates the order. "before" is the merc of ``--before`` (default: the merge-base with main).

    nice -n 5 .venv/bin/python benchmarks/bench_qc_faces.py --work $TMPDIR/qcfaces
writes benchmarks/results/qc/qc_faces.md and .json.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's merc, before _common imports one

from _common import atomic_write_text, write_json  # noqa: E402
from bench_media import PY, ROOT, compare_flags, git, timed, unpack  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "qc"


def track_boxes(qc: Path) -> dict[str, list]:
    p = qc / "speaker_tracks.json"
    return {u: t.get("boxes") for u, t in json.loads(p.read_text()).items()} if p.exists() else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=None, help="a MELD-layout corpus (default: build bench_qc's fixture)")
    ap.add_argument("--before", default=None, help="git ref of the 'before' code (default: merge-base with main)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--checks", default="faces", help="merc qc --checks (the flags of these are compared)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(RESULTS / "qc_faces"))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    from merc.data import load_corpus
    from merc.io import provenance, provenance_markdown
    from merc.media.decode import probe

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_qc_faces-")).resolve()
    before = args.before or git("merge-base", "HEAD", "main")
    srcs = {"before": unpack(before, work / "before_src"), "after": ROOT}
    if args.corpus:
        data_dir = str(Path(args.corpus).resolve())
        what = f"`{args.corpus}`"
    else:
        from bench_qc import spread_faults

        from merc.testing.synth import FAULTS, build_corpus_fixture
        fx = build_corpus_fixture(work / "fixture", layout="meld", n_dialogues=40, utts_per_dialogue=5, n_speakers=6,
                                  faults=spread_faults(20, list(FAULTS)), seed=0, too_long_seconds=40.0)
        data_dir = str(fx.data_dir)
        what = "bench_qc.py's fixture (200 utterances in 40 dialogues, 6 speakers, 10% faults, seed 0)"
    corpus = load_corpus("meld", data_dir, data_dir)
    utts = [u for s in corpus.splits for u in corpus.utterances(s)]
    media_s = 0.0
    for u in utts:
        try:
            media_s += probe(u.video).duration
        except Exception:  # noqa: BLE001 - a missing or corrupt clip (a fault) counts nothing
            pass
    runs = []
    for r in range(args.rounds):
        for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
            out = work / f"r{r}_{side}"
            cmd = [PY, "-m", "merc.cli", "qc", "--dataset", "meld", "--data-dir", data_dir, "--media-dir", data_dir,
                   "--out", str(out / "qc"), "--workers", str(args.workers), "--checks", args.checks, "--quiet"]
            res = timed(cmd, srcs[side], {"MERC_CACHE": str(out / "cache")})
            res.update(round=r, side=side, cpu_per_media_s=round(res["cpu_seconds"] / media_s, 4),
                       x_real_time_cpu=round(media_s / res["cpu_seconds"], 2))
            res.pop("stdout", None)
            runs.append(res)
            print(res, flush=True)
    a, b = work / "r0_before" / "qc", work / "r0_after" / "qc"
    flags = compare_flags(a / "flags.csv", b / "flags.csv")
    ta, tb = track_boxes(a), track_boxes(b)
    shift = [max(abs(x - y) for bx, by in zip(ta[u], tb[u]) for x, y in zip(bx, by))
             for u in ta if u in tb and len(ta[u]) == len(tb[u])]
    tracks = {"before": len(ta), "after": len(tb), "same_frames": sum(len(ta[u]) == len(tb.get(u) or []) for u in ta),
              "largest_box_shift_px": max(shift) if shift else None}
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:])
    res = {"provenance": provenance(), "command": cmd, "before": before, "corpus": what, "utterances": len(utts),
           "media_seconds": round(media_s, 1), "workers": args.workers, "checks": args.checks, "note": args.note,
           "runs": runs,
           "flags": flags, "tracks": tracks}
    write_json(Path(args.out).with_suffix(".json"), res)
    lines = [f"# QC check(s) {args.checks}, before and after (issue #30)", "",
             f"- corpus: {what}; {len(utts)} utterances, {media_s:.1f} s of media",
             f"- before: commit {before} (git archive of `merc/`); after: this checkout",
             provenance_markdown(res["provenance"]), f"- reproduce: `{cmd}`",
             *([f"- conditions: {args.note}"] if args.note else []),
             f"- `merc qc --checks {args.checks} --workers {args.workers}`, each run its own process and QC folder, "
             "interleaved; CPU = all the run's processes (model loading and decoding included)", "",
             "| code | CPU-s per media s | × real time (CPU) | wall s | load at start |", "|---|---|---|---|---|"]
    lines += [f"| {x['side']} | {x['cpu_per_media_s']} | {x['x_real_time_cpu']} | {x['wall_seconds']} | "
              f"{x['load_before']} |" for x in runs]
    lines += ["", "## Outputs against 'before'", "",
              f"- flags: {flags['same_status']}/{flags['flags']} utterances with the same status; {flags['n_changed']} "
              f"changed; largest score difference per check {flags['max_score_diff']}",
              *[f"  - {c['utterance_id']}: {c['before']} -> {c['after']}" for c in flags["changed"]],
              f"- speaker tracks (speaker_tracks.json): {tracks['before']} before, {tracks['after']} after; "
              f"{tracks['same_frames']} with the same frames; largest box coordinate shift "
              f"{tracks['largest_box_shift_px']} px"]
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
