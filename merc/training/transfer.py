"""The seed system's table (Wang & Beigi, identity-based transfer): text, text + speaker, text + face,
text + speaker + face, each with stage-1 features only and with stage-2 adapters, mean ± std over seeds.

    run_transfer(train_one, adapters, seeds, out) -> result; writes out/transfer.md and out/transfer.json

``train_one(row, seed) -> {"dev": {metric: value}, "test": {...}}`` trains one dialogue model on ``row.modalities``
with ``row.adapters``
(``merc.training.experiment.run_experiment``: early stopping on dev, the dev-selected checkpoint scored on test
once). "speaker" is the audio modality with the run's audio encoders (identity + emotion: resemblyzer +
eGeMAPS by default); "face" the face modality with its encoders (dlib identity + FER expression by default).

A "with adapters" row exists for a modality set only when at least one of its modalities has an adapter; it
uses the adapters of exactly those modalities (the table's "adapters" column says which) and stage-1
features for the others. Rows left out for lack of any adapter are listed under the table.

Resumable per cell as ``merc experiment ablation`` (``merc.training.ablation``): each finished (row, seed)
is kept in ``out/cells/<row>_seed<seed>.json`` with the settings it was trained with; a rerun trains only the
missing cells, and refuses a cell trained with other settings (IncompatibleRunError: use another --out).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from merc.errors import IncompatibleRunError
from merc.io import atomic_write_text, provenance, provenance_markdown, write_json
from merc.metrics import mean_std

logger = logging.getLogger(__name__)

# (key, title, modalities) of the seed's table; speaker = audio
SYSTEMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("text", "text", ("text",)),
    ("text+speaker", "text + speaker", ("text", "audio")),
    ("text+face", "text + face", ("text", "face")),
    ("text+speaker+face", "text + speaker + face", ("text", "audio", "face")),
)
METRICS = ("weighted_f1", "accuracy", "macro_f1")

TrainOne = Callable[["Row", int], dict[str, dict[str, float]]]


@dataclass
class Row:
    key: str  # e.g. "text+face" or "text+face+adapters" (also the cell / run folder name)
    title: str
    modalities: tuple[str, ...]
    adapters: dict[str, str] = field(default_factory=dict)  # modality -> adapter folder (empty: stage 1 only)


def plan_rows(adapters: Mapping[str, str], systems: Sequence[str] | None = None) -> tuple[list[Row], list[str]]:
    """The rows to train, and a note per "with adapters" row left out (no adapter for any of its modalities)."""
    rows, omitted = [], []
    for key, title, mods in SYSTEMS:
        if systems is not None and key not in systems:
            continue
        rows.append(Row(key, title, mods))
        used = {m: str(adapters[m]) for m in mods if m in adapters}
        if used:
            rows.append(Row(f"{key}+adapters", f"{title}, with adapters", mods, used))
        else:
            omitted.append(f"{title}, with adapters: no adapter was given for {', '.join(mods)}")
    return rows, omitted


def _summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    splits = [s for s in ("dev", "test") if s in runs[0]]
    return {s: {k: mean_std([r[s][k] for r in runs]) for k in METRICS if k in runs[0][s]} for s in splits}


def _pct(ms: Mapping[str, float] | None) -> str:
    return "—" if not ms else f"{100 * ms['mean']:.2f} ± {100 * ms['std']:.2f}"


def markdown_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    n = max((r["table"].get("test", r["table"].get("dev", {})).get("weighted_f1", {}).get("n", 0) for r in rows),
            default=0)
    lines = [f"# {result['title']}", "",
             f"Percent, mean ± sample standard deviation over {n} seed(s) (seeds {result['seeds']}); each model is "
             "the dev-selected checkpoint (best dev weighted F1), scored on test once. Speaker = the audio "
             f"modality ({', '.join(result['encoders'].get('audio', []))}); face = "
             f"{', '.join(result['encoders'].get('face', []))}; text = {', '.join(result['encoders'].get('text', []))}."
             f" Adapters are {'fine-tuned with the dialogue model' if result['tune_adapters'] else 'frozen'}.", "",
             "| system | stage-2 adapters | test weighted F1 | test accuracy | test macro F1 | dev weighted F1 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        t = r["table"]
        lines.append(f"| {r['title']} | {', '.join(r['adapters']) or 'none (stage-1 features)'} | "
                     f"{_pct(t.get('test', {}).get('weighted_f1'))} | {_pct(t.get('test', {}).get('accuracy'))} | "
                     f"{_pct(t.get('test', {}).get('macro_f1'))} | {_pct(t.get('dev', {}).get('weighted_f1'))} |")
    lines.append("")
    if result["adapters"]:
        lines.append("Adapters: " + "; ".join(f"{m}: `{a['path']}` (stage-1 encoder {a.get('encoder', {}).get('name')})"
                                             for m, a in result["adapters"].items()) + ".")
    else:
        lines.append("No stage-2 adapters were given: only the stage-1 rows were trained.")
    for note in result["omitted"]:
        lines.append(f"- left out: {note}")
    lines.append("")
    if result.get("provenance"):
        lines.append(provenance_markdown(result["provenance"]))
    return "\n".join(lines) + "\n"


def adapter_info(adapters: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Path, sha256 and encoder of each adapter folder (for the table and the cell settings)."""
    from merc.io import file_digest
    from merc.models.adapter import CONFIG_FILE, WEIGHTS_FILE
    out = {}
    for m, folder in adapters.items():
        p = Path(folder).resolve()
        cfg = json.loads((p / CONFIG_FILE).read_text()) if (p / CONFIG_FILE).is_file() else {}
        weights = p / WEIGHTS_FILE
        out[m] = {"path": str(p), "sha256": file_digest(weights, chars=None) if weights.is_file() else "",
                  "encoder": cfg.get("encoder", {})}
    return out


def run_transfer(train_one: TrainOne, adapters: Mapping[str, str], seeds: Sequence[int], out: str | Path, *,
                 settings: Mapping[str, Any] | None = None, encoders: Mapping[str, Sequence[str]] | None = None,
                 tune_adapters: bool = False, systems: Sequence[str] | None = None,
                 title: str = "Identity-based transfer") -> dict[str, Any]:
    """Train every (row, seed) not yet in ``out/cells``; write ``transfer.md`` / ``transfer.json``.
    ``settings`` (model, training, encoders, dataset …) are stored in each cell and must match on resume."""
    out = Path(out)
    rows, omitted = plan_rows(adapters, systems)
    info = adapter_info(adapters)
    base = json.loads(json.dumps(dict(settings or {}), default=str))
    results = []
    for row in rows:
        want = {**base, "modalities": list(row.modalities), "tune_adapters": bool(tune_adapters and row.adapters),
                "adapters": {m: info[m] for m in row.adapters}}
        runs = []
        for seed in seeds:
            path = out / "cells" / f"{row.key}_seed{seed}.json"
            if path.exists():
                cell = json.loads(path.read_text())
                if cell.get("settings") != want:
                    diff = sorted(k for k in set(want) | set(cell.get("settings", {}))
                                  if want.get(k) != cell.get("settings", {}).get(k))
                    raise IncompatibleRunError(f"{path} was trained with other settings ({', '.join(diff)}); use "
                                               f"another --out, or delete {out / 'cells'} to start afresh")
                logger.info("%s seed %d: done before (%s)", row.key, seed, path)
            else:
                metrics = train_one(row, seed)
                cell = {"row": row.key, "seed": seed, "settings": want,
                        **{s: {k: float(v) for k, v in metrics[s].items() if k in METRICS}
                           for s in ("dev", "test") if s in metrics}}
                write_json(path, cell)
                logger.info("%s seed %d: test weighted F1 %s", row.key, seed, cell.get("test", {}).get("weighted_f1"))
            runs.append({s: cell[s] for s in ("dev", "test") if s in cell})
        results.append({"key": row.key, "title": row.title, "modalities": list(row.modalities),
                        "adapters": dict(row.adapters), "table": _summarise(runs)})
    result = {"title": title, "seeds": list(seeds), "encoders": {m: list(v) for m, v in (encoders or {}).items()},
              "tune_adapters": bool(tune_adapters), "adapters": info, "rows": results, "omitted": omitted,
              "provenance": provenance()}
    write_json(out / "transfer.json", result)
    atomic_write_text(out / "transfer.md", markdown_table(result))
    return result
