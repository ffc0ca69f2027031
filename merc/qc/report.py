"""Write a QC run's outputs into QC_DIR, every file atomically (temp file + fsync + rename).

- ``flags.csv``: utterance_id, check, status (passed / failed / not measured / kept), passed, score, threshold,
  reason (one row per utterance per check; "not measured" is neither a pass nor a failure and has passed=False;
  "kept" is a weak failure that corroboration overruled: the score is on the failing side, the utterance stays);
- ``dropped.csv``: one row per dropped utterance: utterance_id, split, conversation_id, speaker, the dropping
  checks that failed it and their reasons (its row count is summary.json's "dropped");
- ``summary.json``: counts per check and split, kept vs dropped, thresholds, timings;
- ``report.html``: self-contained (plots as base64 PNG): score distributions with thresholds, per-speaker
  tables, flagged examples, every flag;
- ``manifest.jsonl``: the kept utterances, one conversation per line with a ``split`` field, media paths
  relative to QC_DIR (``curated/`` ones relative to ``curated/``, so the folders move with the corpus);
  ``curated/{train,dev,test}.jsonl`` + ``labels.json`` for ``merc train --dataset jsonl``;
- ``speaker_tracks.json`` when a check (faces) exposed ``speaker_tracks`` among its artifacts.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from merc.io import atomic_write_text, write_json
from merc.qc.base import Flag, jsonable
from merc.qc.result import QCResult

FLAG_FIELDS = ("utterance_id", "check", "status", "passed", "score", "threshold", "reason")
DROPPED_FIELDS = ("utterance_id", "split", "conversation_id", "speaker", "checks", "reasons")
PASS_COLOUR, FAIL_COLOUR = "#4c9a2a", "#c0392b"


# the files

def write_flags_csv(flags: list[Flag], path: str | Path) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FLAG_FIELDS, lineterminator="\n")
    w.writeheader()
    for f in flags:
        w.writerow(f.to_row())
    return atomic_write_text(path, buf.getvalue())


def read_flags_csv(path: str | Path) -> list[Flag]:
    """flags.csv back into Flags (score/threshold None when empty; files without a status column read too)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [Flag(r["utterance_id"], r["check"], r["passed"] == "True",
                     float(r["score"]) if r["score"] else None,
                     float(r["threshold"]) if r["threshold"] else None, r["reason"],
                     measured=r.get("status", "") != "not measured", weak=r.get("status") == "kept",
                     overruled_by=_voucher(r["reason"]) if r.get("status") == "kept" else None)
                for r in csv.DictReader(f)]


def _voucher(reason: str) -> str:
    """The check that vouched for a kept weak failure, from its reason (merc.qc.corroborate writes it)."""
    m = re.search(r"but the (\S+) check verified it", reason)
    return m.group(1) if m else "corroboration"


def dropped_rows(result: QCResult) -> list[dict[str, str]]:
    """One row per dropped utterance (corpus order): who dropped it and why."""
    items = {it.utterance_id: it for it in result.items}
    rows = []
    for uid, checks in result.dropped.items():
        it = items[uid]
        why = {f.check: f.reason for f in result.flags_for(uid)}
        rows.append({"utterance_id": uid, "split": it.split, "conversation_id": it.conversation_id,
                     "speaker": it.utterance.speaker, "checks": "+".join(checks),
                     "reasons": " | ".join(f"{c}: {why.get(c, '')}" for c in checks)})
    return rows


def write_dropped_csv(result: QCResult, path: str | Path) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=DROPPED_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(dropped_rows(result))
    return atomic_write_text(path, buf.getvalue())


def write_manifest(result: QCResult, qc_dir: str | Path) -> tuple[Path, Path]:
    """``manifest.jsonl`` (``split`` per line) and ``curated/`` (write_corpus_jsonl), media paths relative to
    the file's own folder (as the JSONL format says: QC_DIR moved together with the corpus still reads)."""
    from merc.data.jsonl import _relative, write_corpus_jsonl

    if result.corpus is None:
        raise ValueError("QCResult has no corpus attached; cannot write the manifest")
    qc_dir = Path(qc_dir)
    kept = result.corpus.subset(set(result.kept))
    lines = []
    for split, convs in kept.splits.items():
        for c in convs:
            d = {"conversation_id": c.conversation_id, "split": split, "utterances": []}
            for u in c:
                ud = u.to_dict()
                for key in ("audio", "video"):
                    if ud.get(key):
                        ud[key] = _relative(ud[key], qc_dir.resolve())
                d["utterances"].append(ud)
            lines.append(json.dumps(d, ensure_ascii=False) + "\n")
    manifest = atomic_write_text(qc_dir / "manifest.jsonl", "".join(lines))
    if "train" not in kept.splits:  # read_jsonl requires train.jsonl; an empty one says "nothing kept"
        kept.splits = {"train": [], **kept.splits}
    curated = write_corpus_jsonl(kept, qc_dir / "curated")
    return manifest, curated


def write_outputs(result: QCResult, qc_dir: str | Path) -> dict[str, Path]:
    """Every output file of a QC run; returns name -> path."""
    qc_dir = Path(qc_dir)
    qc_dir.mkdir(parents=True, exist_ok=True)
    paths = {"flags": write_flags_csv(result.flags, qc_dir / "flags.csv"),
             "dropped": write_dropped_csv(result, qc_dir / "dropped.csv"),
             "summary": write_json(qc_dir / "summary.json", result.summary)}
    paths["manifest"], paths["curated"] = write_manifest(result, qc_dir)
    tracks = result.artifact("speaker_tracks")  # the faces check's
    if tracks is not None:
        tracks = jsonable(tracks)
        text = (json.dumps(tracks) + "\n" if not isinstance(tracks, dict) else  # one utterance per line
                "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in tracks.items()) + "\n}\n")
        paths["speaker_tracks"] = atomic_write_text(qc_dir / "speaker_tracks.json", text)
    paths["report"] = atomic_write_text(qc_dir / "report.html", render_html(result))
    return paths


# html

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def score_plot(flags: list[Flag], check: str) -> str | None:
    """Histogram of one check's scores, passed vs failed stacked, with the threshold; base64 PNG.

    A check whose flags carry a few different thresholds mixes scores of different sub-checks (integrity:
    speech fraction, duration, words/s): only the flags of the most common threshold are drawn, and the
    title says how many were left out. Many distinct thresholds (per speaker) are drawn without lines.
    """
    from matplotlib.figure import Figure

    scored = [f for f in flags if f.score is not None]
    if not scored:
        return None
    counts = Counter(f.threshold for f in scored if f.threshold is not None)
    title, line = "", None
    if 0 < len(counts) <= 5:
        line = counts.most_common(1)[0][0]
        shown = [f for f in scored if f.threshold in (line, None)]
        if len(shown) < len(scored):
            title = (f"scores against threshold {line:g}; "
                     f"{len(scored) - len(shown)} flag(s) of other sub-checks not shown")
        scored = shown
    elif counts:
        title = f"{len(counts)} distinct thresholds (per speaker or utterance); not drawn"
    ok = [f.score for f in scored if f.status in ("passed", "kept")]
    bad = [f.score for f in scored if f.status == "failed"]
    n_pass = sum(f.status in ("passed", "kept") for f in flags)
    n_fail = sum(f.status == "failed" for f in flags)
    n_nm = sum(f.status == "not measured" for f in flags)
    if n_nm:
        title = "; ".join(t for t in (title, f"{n_nm} not measured (no score)") if t)
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    lo, hi = min(ok + bad + ([line] if line is not None else [])), max(ok + bad + ([line] if line is not None else []))
    ax.hist([ok, bad], bins=30, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5), stacked=True,
            color=[PASS_COLOUR, FAIL_COLOUR], label=[f"passed ({len(ok)} drawn of {n_pass})",
                   f"failed ({len(bad)} drawn of {n_fail})"])
    if line is not None:
        ax.axvline(line, color="black", linestyle="--", linewidth=1, label=f"threshold {line:g}")
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_xlabel(f"{check} score")
    ax.set_ylabel("utterances")
    ax.legend(fontsize=8)
    return _png(fig)


def _gallery_size(result: QCResult, speaker: str) -> str:
    """Size of the speaker's face gallery (utterances the faces check used as the reference)."""
    galleries = result.artifact("galleries")
    if galleries is None:
        return ""
    return str(len(galleries.get(speaker, [])))


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>\n{body}\n</tbody></table>'


def render_html(result: QCResult, n_examples: int = 10) -> str:
    s = result.summary
    checks = list(s["checks"])
    items = {it.utterance_id: it for it in result.items}
    parts = [f"<h1>merc QC report: {html.escape(str(s.get('corpus')))}</h1>",
             f"<p>{s['utterances']} utterances; kept {s['kept']}, dropped {s['dropped']} "
             f"(drop on: {', '.join(s['drop_on'])}). Generated "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p>"]
    rows = [[c, *(s["checks"][c]["total"].get(k, 0) for k in ("checked", "passed", "kept", "failed", "not_measured")),
             s["timings"][c].get("measure_seconds"), s["timings"][c].get("rtf")] for c in checks]
    parts += ["<h2>Summary</h2>", _table(["check", "checked", "passed", "kept (weak failure, verified)", "failed",
                                          "not measured",
                                          "measure s", "real-time factor"], rows)]
    parts.append(_table(["split", "utterances", "kept", "dropped"],
                        [[sp, v["utterances"], v["kept"], v["dropped"]] for sp, v in s["splits"].items()]))
    combos = s.get("dropped_by_combination", {})
    if combos:
        parts.append("<p>Each dropped utterance once, by the dropping checks that failed it (sums to "
                     f"{s['dropped']}):</p>")
        parts.append(_table(["failed checks", "dropped utterances"], [[c, n] for c, n in combos.items()]))

    for c, cor in s.get("corroboration", {}).items():
        kept = [f for f in result.by_check(c) if f.overruled_by]
        parts.append(f"<p>{html.escape(c)}: {cor['weak']} failure(s) on weak evidence; {cor['overruled']} kept because "
                     f"the {html.escape(' or '.join(cor['by']) or '(none run)')} check verified them"
                     + (":</p>" if kept else ".</p>"))
        if kept:
            parts.append(_table(["utterance", "speaker", "reason"],
                                [[f.utterance_id, items[f.utterance_id].utterance.speaker, f.reason] for f in kept]))

    parts.append("<h2>Score distributions</h2>")
    for c in checks:
        img = score_plot(result.by_check(c), c)
        t = s["checks"][c]["total"]
        caption = (f"<p>passed {t['passed']}, kept {t.get('kept', 0)}, failed {t['failed']}, not measured (no score) "
                   f"{t['not_measured']} "
                   f"of {t['checked']}</p>")
        parts.append(f"<h3>{html.escape(c)}</h3>" + caption + (f'<img alt="{html.escape(c)} scores" src="{img}">'
                                                               if img else "<p>no scores (nothing measured)</p>"))

    parts.append("<h2>Speakers</h2>")
    per_spk: dict[str, Counter] = defaultdict(Counter)
    for it in result.items:
        per_spk[it.utterance.speaker]["utterances"] += 1
    if "speaker" in checks:
        for f in result.by_check("speaker"):
            spk = items[f.utterance_id].utterance.speaker
            per_spk[spk][f"spk_{'passed' if f.passed else f.status}"] += 1
    spk_rows = []
    for spk, c in sorted(per_spk.items(), key=lambda kv: -kv[1]["utterances"]):
        judged = c["spk_passed"] + c["spk_failed"]  # "not measured" is neither: out of the rate
        rate = f"{c['spk_passed'] / judged:.2f}" if judged else ""
        spk_rows.append([spk, c["utterances"], rate, c["spk_not measured"], _gallery_size(result, spk)])
    parts.append(_table(["speaker", "utterances", "speaker-check pass rate (passed / measured)",
                         "speaker check not measured", "face-gallery size"], spk_rows))

    drows = dropped_rows(result)
    parts.append(f"<h2>Dropped utterances ({len(drows)}; also in dropped.csv)</h2><details><summary>show</summary>")
    parts.append(_table(list(DROPPED_FIELDS), [list(r.values()) for r in drows]))
    parts.append("</details>")

    parts.append("<h2>Flagged examples</h2>")
    for c in checks:
        flagged = result.failed(c)
        bad = flagged[:n_examples]
        if not bad:
            continue
        n_f = sum(f.status == "failed" for f in flagged)
        parts.append(f"<h3>{html.escape(c)} ({n_f} failed, {len(flagged) - n_f} not measured)</h3>")
        parts.append(_table(["utterance", "split", "speaker", "text", "reason", "media"],
                            [[f.utterance_id, items[f.utterance_id].split, items[f.utterance_id].utterance.speaker,
                              items[f.utterance_id].utterance.text[:120], f.reason, items[f.utterance_id].media or ""]
                             for f in bad]))

    parts.append(f"<h2>Every flag ({len(result.flags)})</h2><details><summary>show</summary>")
    parts.append(_table(list(FLAG_FIELDS), [list(f.to_row().values()) for f in result.flags], cls="flags"))
    parts.append("</details>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}"
             "th{background:#eee}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>merc QC report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
