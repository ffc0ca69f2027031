"""What a QC run returns: :class:`QCResult` (flags, kept / dropped ids, summary, per-check artifacts) and
:func:`summarize`, the counts, thresholds and timings stored in ``summary.json``."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from merc.data.schema import Corpus
from merc.qc.base import Flag, QCItem, config_dict, jsonable
from merc.qc.config import QCConfig

NOT_MEASURED = "not measured"


@dataclass
class QCResult:
    """What a QC run found: one Flag per utterance per check, the kept/dropped ids and a summary.

    ``artifacts``: check name -> what that check exposed after judging besides flags (its ``artifacts()``;
    faces: ``speaker_tracks`` and ``galleries``); look one up by name with :meth:`artifact`.
    """
    flags: list[Flag]
    items: list[QCItem]
    kept: list[str]  # utterance ids, corpus order
    dropped: dict[str, list[str]]  # utterance id -> the dropping checks that failed it
    summary: dict[str, Any]
    measurements: dict[str, dict[str, dict[str, Any]]] = field(repr=False, default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)
    corpus: Corpus | None = field(default=None, repr=False)

    def artifact(self, key: str, default: Any = None) -> Any:
        """The artifact ``key`` of the first check that exposed it (e.g. ``"speaker_tracks"``), else default."""
        for arts in self.artifacts.values():
            if key in arts and arts[key] is not None:
                return arts[key]
        return default

    def by_check(self, check: str) -> list[Flag]:
        if check not in self.summary["checks"]:
            raise KeyError(f"no check {check!r} in this result; it has {list(self.summary['checks'])}")
        return [f for f in self.flags if f.check == check]

    def failed(self, check: str | None = None) -> list[Flag]:
        return [f for f in (self.flags if check is None else self.by_check(check)) if not f.passed]

    def flags_for(self, utterance_id: str) -> list[Flag]:
        return [f for f in self.flags if f.utterance_id == utterance_id]

    def table(self) -> str:
        """A plain-text table: per check checked / passed / kept / failed / not measured; kept vs dropped."""
        rows = [("check", "checked", "passed", "kept", "failed", "not measured")]
        for name, c in self.summary["checks"].items():
            t = c["total"]
            rows.append((name, str(t["checked"]), str(t["passed"]), str(t.get("kept", 0)), str(t["failed"]),
                         str(t["not_measured"])))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for split, s in self.summary["splits"].items():
            lines.append(f"{split}: kept {s['kept']} of {s['utterances']} utterances, dropped {s['dropped']}")
        for name, c in self.summary.get("corroboration", {}).items():
            if c["weak"]:
                lines.append(f"{name}: {c['weak']} failure(s) on weak evidence, {c['overruled']} kept because the "
                             f"{' or '.join(c['by']) or '(none run)'} check verified them")
        for name, cal in self.summary.get("calibration", {}).items():
            rule = " and ".join(f"{m} {'<=' if m == 'wer' else '>='} {t:.3g}"
                                for m, t in cal.get("rule_thresholds", {}).items())
            lines.append(f"{name} calibrated on {cal['utterances']} utterances: pass when {rule or '?'}"
                         + (f" (balanced accuracy {cal['rule_balanced_accuracy']:.2f} on true vs deranged "
                            "transcripts)" if "rule_balanced_accuracy" in cal else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def audio_seconds(item: QCItem, integrity: dict[str, Any] | None) -> float:
    """The utterance's audio length: integrity's measured duration when present, else end - start."""
    for key in ("duration", "audio_seconds", "seconds"):
        v = (integrity or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return float(item.utterance.duration or 0.0)


def _counts(c: Counter) -> dict[str, int]:
    return {k: int(c.get(k, 0)) for k in ("checked", "passed", "kept", "failed", "not_measured")}


def summarize(result: QCResult, config: QCConfig, check_configs: dict[str, Any],
              timings: dict[str, Any]) -> dict[str, Any]:
    """Counts per check and per split (checked = passed + kept + failed + not measured), kept vs dropped
    per split, thresholds used (``check_configs``: name -> the config each check ran with), timings with
    throughput and real-time factor."""
    split_of = {it.utterance_id: it.split for it in result.items}
    splits = list(dict.fromkeys(it.split for it in result.items))
    checks: dict[str, Any] = {}
    for name in config.checks:
        per = {s: Counter() for s in ["total", *splits]}
        for f in result.flags:
            if f.check != name:
                continue
            kind = f.status.replace(" ", "_")  # passed | kept | failed | not_measured (Flag.status, as in flags.csv)
            for s in ("total", split_of[f.utterance_id]):
                per[s]["checked"] += 1
                per[s][kind] += 1
        checks[name] = {"total": _counts(per["total"]), "splits": {s: _counts(per[s]) for s in splits}}
    dropped = set(result.dropped)
    split_summary = {}
    for s in splits:
        ids = [it.utterance_id for it in result.items if it.split == s]
        n_drop = sum(u in dropped for u in ids)
        split_summary[s] = {"utterances": len(ids), "kept": len(ids) - n_drop, "dropped": n_drop}
    integ = result.measurements.get("integrity", {})
    total_audio = sum(audio_seconds(it, integ.get(it.utterance_id)) for it in result.items)
    for name in config.checks:
        t = timings[name]
        if t["measured"]:
            t["utterances_per_second"] = round(t["measured"] / max(t["wall_seconds"], 1e-9), 3)
        t["rtf"] = round(t["measure_seconds"] / total_audio, 5) if total_audio else None
    thresholds = {name: jsonable(config_dict(check_configs.get(name))) for name in config.checks}
    # dropped_by_check: dropped utterances that each check failed (an utterance failed by two dropping checks
    # counts under both, so these may sum to more than "dropped"); dropped_by_combination: each dropped
    # utterance once, under the exact set of checks that dropped it (sums to "dropped")
    drop_reasons = Counter(c for cs in result.dropped.values() for c in cs)
    combos = Counter("+".join(cs) for cs in result.dropped.values())
    return {"corpus": result.corpus.name if result.corpus else None, "utterances": len(result.items),
            "kept": len(result.kept), "dropped": len(result.dropped), "dropped_by_check": dict(drop_reasons),
            "dropped_by_combination": dict(combos.most_common()),
            "checks": checks, "splits": split_summary, "thresholds": thresholds, "drop_on": config.dropping,
            "audio_seconds": round(total_audio, 3), "timings": timings,
            "workers": config.workers, "fps": config.fps}
