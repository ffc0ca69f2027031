"""Prediction on new, unlabelled conversations: read them, encode, run the model, show a table or JSON,
and draw an emotion timeline per conversation.

Input formats:
- ``.jsonl``: one conversation per line, ``{"conversation_id": ..., "utterances": [{"speaker", "text", ...}]}``
  (``utterance_id`` optional: ``<conversation_id>_u<i>`` is used when absent);
- ``.txt``: ``Speaker: text`` per line, a blank line between conversations.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

from merc.data.schema import Conversation, CorpusError, Utterance
from merc.errors import MissingFileError


def read_conversations(path: str | Path) -> list[Conversation]:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file")
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if path.suffix == ".txt":
        return _read_txt(path)
    raise CorpusError(f"{path}: unknown input format {path.suffix!r}; expected .jsonl or .txt")


def _read_jsonl(path: Path) -> list[Conversation]:
    convs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); expected one conversation "
                              "object per line") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("utterances"), list) or not obj["utterances"]:
            raise CorpusError(f"{path}:{n}: expected an object with a non-empty 'utterances' list, got {line[:80]!r}")
        cid = str(obj.get("conversation_id", f"conversation{len(convs)}"))
        utts = []
        for i, u in enumerate(obj["utterances"]):
            missing = [k for k in ("speaker", "text") if not isinstance(u, dict) or k not in u]
            if missing:
                raise CorpusError(f"{path}:{n}: utterance {i} of {cid!r} lacks {missing}; each utterance needs "
                                  "'speaker' and 'text'")
            utts.append(Utterance(utterance_id=str(u.get("utterance_id", f"{cid}_u{i}")), speaker=str(u["speaker"]),
                                  text=str(u["text"]), emotion=u.get("emotion")))
        convs.append(Conversation(cid, "predict", utts))
    if not convs:
        raise CorpusError(f"{path}: no conversations found")
    return convs


def _read_txt(path: Path) -> list[Conversation]:
    convs: list[Conversation] = []
    current: list[Utterance] = []

    def close():
        if current:
            cid = f"{path.stem}_{len(convs)}"
            for i, u in enumerate(current):
                u.utterance_id = f"{cid}_u{i}"
            convs.append(Conversation(cid, "predict", list(current)))
            current.clear()

    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            close()
            continue
        speaker, sep, text = line.partition(":")
        if not sep or not speaker.strip():
            raise CorpusError(f"{path}:{n}: expected 'Speaker: text', got {line[:80]!r}")
        current.append(Utterance("", speaker.strip(), text.strip()))
    close()
    if not convs:
        raise CorpusError(f"{path}: no conversations found")
    return convs


def format_table(conv: Conversation, probs: np.ndarray, labels: Sequence[str]) -> str:
    rows = [f"── {conv.conversation_id} " + "─" * max(0, 60 - len(conv.conversation_id))]
    for u, p in zip(conv.utterances, probs):
        k = int(p.argmax())
        top2 = np.argsort(-p)[:2]
        alt = f"{labels[top2[1]]} {p[top2[1]]:.2f}"
        text = u.text if len(u.text) <= 48 else u.text[:45] + "..."
        rows.append(f"{u.speaker[:12]:>12} │ {text:<48} │ {labels[k]:>8} {p[k]:.2f}  ({alt})")
    return "\n".join(rows)


def predict_file(run_dir, input_path, *, out_dir: str | Path | None = "predictions", as_json: bool = False,
                 plots: bool = True, stream: TextIO | None = None, run=None) -> list[dict]:
    from merc.training.plots import plot_timeline
    from merc.training.run import from_pretrained
    stream = stream or sys.stdout
    run = run or from_pretrained(run_dir)
    convs = read_conversations(input_path)
    probs = run.predict(convs)
    results = []
    for conv, p in zip(convs, probs):
        utts = [{"utterance_id": u.utterance_id, "speaker": u.speaker, "text": u.text,
                 "emotion": run.labels[int(pi.argmax())],
                 "probabilities": {lab: round(float(x), 4) for lab, x in zip(run.labels, pi)}}
                for u, pi in zip(conv.utterances, p)]
        results.append({"conversation_id": conv.conversation_id, "utterances": utts})
        if as_json:
            stream.write(json.dumps(results[-1]) + "\n")
        else:
            stream.write(format_table(conv, p, run.labels) + "\n")
        if plots and out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            png = plot_timeline(conv, p, run.labels, Path(out_dir) / f"{conv.conversation_id}_timeline.png")
            if not as_json:
                stream.write(f"   timeline: {png}\n")
    return results
