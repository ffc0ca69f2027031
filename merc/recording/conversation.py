"""A recording without a transcript -> the conversation ``merc predict`` labels: the derived transcript goes
through the same code as a ``--transcript`` file (:func:`merc.data.transcript.segments_conversation`), so
saving it (``--save-transcript``) and rerunning with ``--transcript`` gives the same utterances."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from merc.data.schema import Conversation
from merc.errors import InputError
from merc.recording.pipeline import RecordingConfig, RecordingPipeline, RecordingTranscript

log = logging.getLogger(__name__)

_PIPELINES: dict[str, RecordingPipeline] = {}  # one per configuration: models load once per process


def check_save_path(save_transcript: str | Path | None) -> None:
    if save_transcript is not None and Path(save_transcript).suffix.lower() not in (".srt", ".json"):
        raise InputError(f"{save_transcript}: --save-transcript writes .srt or .json (the formats --transcript "
                         "reads)")


def derive_transcript(path: str | Path, config: RecordingConfig | None = None, *,
                      progress: bool = False) -> RecordingTranscript:
    """Run the recording pipeline on ``path`` with a progress bar (seconds of audio) when ``progress``."""
    from tqdm.auto import tqdm

    from merc.recording.pipeline import config_json
    config = config or RecordingConfig()
    key = config_json(config)
    if key not in _PIPELINES:
        _PIPELINES[key] = RecordingPipeline(config)
    bar = tqdm(total=0, unit="s", desc=f"transcribe {Path(path).name}", disable=not progress, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")

    def hook(step: str, done: float, total: float) -> None:
        if step == "transcribe":
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        return _PIPELINES[key](path, hook=hook)
    finally:
        bar.close()


def derive_conversation(path: str | Path, config: RecordingConfig | None = None, *,
                        save_transcript: str | Path | None = None,
                        progress: bool = False) -> tuple[Conversation, dict]:
    """The conversation of a recording from its derived transcript, and its JSON form (echoed by predict)."""
    from merc.data.transcript import MEDIA_SUFFIXES, segments_conversation
    path = Path(path)
    check_save_path(save_transcript)
    if path.suffix.lower() not in MEDIA_SUFFIXES:
        raise InputError(f"{path}: not a known audio/video file type ({path.suffix!r})")
    result = derive_transcript(path, config, progress=progress)
    if save_transcript is not None:
        result.save(save_transcript)
        log.info("%s: derived transcript written (%d utterances, %d speakers)", save_transcript,
                 len(result.segments), result.num_speakers)
    conv, raw = segments_conversation(path, result.to_segments(), None)
    raw["derived"] = result.summary()
    return conv, raw
