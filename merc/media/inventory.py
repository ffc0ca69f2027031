"""What media a corpus really has, per split: for ``merc data stats --media-dir``.

Each utterance is counted once by the state of the file its encoders read (``audio`` else ``video``, as the
audio encoders do; the video for the face streams): no file named, missing, undecodable (the container cannot
be opened: :func:`merc.media.decode.probe`), or present, and of the present ones those without an audio
stream or (where a video is named) without a video stream. Files shared by several utterances (an IEMOCAP
dialogue video) are probed once. Probing reads headers only: a file truncated after a valid header counts as
present here (``merc qc``'s integrity check decodes every clip).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from merc.data.schema import Corpus
from merc.media.decode import MediaError, MediaInfo, probe

KEYS = ("utterances", "no_media", "present", "missing", "undecodable", "no_audio_stream", "no_video_stream")
N_EXAMPLES = 3  # utterance ids kept per problem


def _state(path: str, cache: dict[str, MediaInfo | str]) -> MediaInfo | str:
    if path not in cache:
        try:
            cache[path] = probe(path)
        except MediaError as e:
            cache[path] = "missing" if str(e).startswith("missing file") else "undecodable"
    return cache[path]


def media_counts(corpus: Corpus, splits: Sequence[str] | None = None, *, progress: bool = False
                 ) -> dict[str, dict[str, Any]]:
    """``{split: {utterances, no_media, present, missing, undecodable, no_audio_stream, no_video_stream,
    examples: {problem: [utterance ids]}}}``."""
    from tqdm.auto import tqdm
    cache: dict[str, MediaInfo | str] = {}
    out: dict[str, dict[str, Any]] = {}
    for split in splits or list(corpus.splits):
        utts = corpus.utterances(split)
        n: Counter = Counter(utterances=len(utts))
        examples: dict[str, list[str]] = {}

        def note(problem: str, uid: str, n: Counter = n, examples: dict = examples) -> None:
            n[problem] += 1
            if len(examples.setdefault(problem, [])) < N_EXAMPLES:
                examples[problem].append(uid)

        for u in tqdm(utts, desc=f"{corpus.name}/{split} media", unit="utt", disable=not progress):
            path = u.audio or u.video
            if not path:
                note("no_media", u.utterance_id)
                continue
            state = _state(path, cache)
            if isinstance(state, str):
                note(state, u.utterance_id)
                continue
            n["present"] += 1
            if not state.has_audio:
                note("no_audio_stream", u.utterance_id)
            video = _state(u.video, cache) if u.video and u.video != path else state if u.video else None
            if isinstance(video, MediaInfo) and not video.has_video:
                note("no_video_stream", u.utterance_id)
            elif isinstance(video, str):
                note(f"video_{video}", u.utterance_id)
        out[split] = {**{k: int(n[k]) for k in KEYS}, **{k: int(v) for k, v in n.items() if k not in KEYS},
                      "examples": examples}
    return out


def format_media(counts: dict[str, dict[str, Any]]) -> list[str]:
    """Lines of the ``merc data stats`` media table (a row per split) and the first ids of each problem."""
    cols = ["utterances", "present", "missing", "undecodable", "no_audio_stream", "no_video_stream", "no_media"]
    rows = [["split", *(c.replace("_", " ") for c in cols)]]
    rows += [[s, *(str(c.get(k, 0)) for k in cols)] for s, c in counts.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["media (probed: file present and opens, its streams)"]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    if counts and all(c["missing"] and c["missing"] == c["utterances"] for c in counts.values()):
        lines.append("  not one named file exists: is --media-dir the folder that holds the clip folders?")
    for s, c in counts.items():
        for problem, ids in c["examples"].items():
            more = c.get(problem, len(ids)) - len(ids)
            lines.append(f"  {s} {problem.replace('_', ' ')}: {', '.join(ids)}" + (f" (+{more} more)" if more else ""))
    return lines
