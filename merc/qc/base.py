"""What every QC check shares: the Flag record and the two-phase Check interface.

A check runs in two phases so that a long run is resumable and corpus-level checks are possible:
  1. ``measure(item)`` per utterance: expensive (decoding, ASR, embeddings); its JSON-able result is
     cached on disk per utterance, so a rerun skips finished utterances. It must not raise for bad
     media: it returns ``{"error": "..."}`` and the pipeline records the failure.
  2. ``judge(items, measurements)`` over the whole corpus: cheap; turns measurements into Flags
     (speaker identity and faces need every utterance's embedding to build centroids/galleries).

What is specific to one check lives on the check, as optional members the pipeline looks for:

- ``measure_fields``: the config fields that change what ``measure`` returns (a cached measurement is
  reused while they are unchanged; without it the whole config counts);
- ``calibrate(items, measurements, *, seed, progress)``: fit thresholds on this corpus before judging;
- ``artifacts()``: what the check exposes after ``judge`` besides flags (faces: speaker tracks and galleries);
- ``gate(measurement)``: (integrity) why later checks cannot measure an utterance, or None;
- ``prepare(items)``: run the check's model once over a batch of utterances before ``measure`` on each
  (alignment: one batched Whisper encoder call); it must not change what ``measure`` returns;
- ``decode_jobs(item)``: ``(path, fn(clip))`` pairs a thread runs ahead of ``measure`` to decode its media
  (:class:`merc.media.clip.Prefetcher`). Checks read media through :func:`merc.media.clip.open_clip`, so the
  checks of one utterance share one decode.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Protocol

from merc.data.schema import Utterance


@dataclass
class Flag:
    utterance_id: str
    check: str
    passed: bool
    score: float | None
    threshold: float | None
    reason: str  # human-readable, always set (also when passed: what was measured)
    # False: the check could not measure this utterance (reason starts "not measured"): neither pass nor
    # failure; the pipeline drops such utterances only with QCConfig.drop_not_measured
    measured: bool = True
    # a failure on weak evidence (e.g. a voice only slightly closer to another speaker): it stands only when
    # no corroborating check vouches for the utterance (QCConfig.corroborate; the pipeline turns it into a
    # pass with ``overruled_by`` set to the check that vouched)
    weak: bool = False
    overruled_by: str | None = None
    # False: this pass does not vouch for another check's weak failure (faces: several faces on screen, so a
    # match of the labelled speaker's face does not say who is speaking)
    can_vouch: bool = True

    def __post_init__(self) -> None:
        if self.reason.startswith("not measured"):  # one rule for every check: such a flag is no failure
            self.measured = False

    @property
    def status(self) -> str:
        """"passed", "failed", "not measured", or "kept": a weak failure that corroboration overruled (another
        check verified the utterance), so the score is on the failing side of the threshold but the utterance
        stays (``passed`` is True for it: it does not drop the utterance)."""
        if self.passed:
            return "kept" if self.overruled_by else "passed"
        return "failed" if self.measured else "not measured"

    def to_row(self) -> dict[str, Any]:
        return {"utterance_id": self.utterance_id, "check": self.check, "status": self.status,
                "passed": self.passed, "score": "" if self.score is None else f"{self.score:.6g}",
                "threshold": "" if self.threshold is None else f"{self.threshold:.6g}", "reason": self.reason}


@dataclass
class QCItem:
    """One utterance to check, with its conversation and split, and the resolved media path."""
    utterance: Utterance
    conversation_id: str
    split: str
    media: str | None  # the clip to decode (video for MELD, wav for IEMOCAP), None when the corpus has none
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def utterance_id(self) -> str:
        return self.utterance.utterance_id


class Check(Protocol):
    name: str

    def measure(self, item: QCItem) -> dict[str, Any]: ...

    def judge(self, items: list[QCItem], measurements: dict[str, dict[str, Any]]) -> list[Flag]: ...


# helpers shared by the pipeline, the cache and the report

def jsonable(x: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types (for measurements)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return x.tolist()
    return x


def config_dict(cfg: Any) -> Any:
    """A check's config as a dict (dataclass, dict or plain object); ``{}`` for None."""
    if cfg is None:
        return {}
    if is_dataclass(cfg):
        return asdict(cfg)
    if isinstance(cfg, dict):
        return cfg
    return {k: v for k, v in vars(cfg).items() if not k.startswith("_")} if hasattr(cfg, "__dict__") else repr(cfg)
