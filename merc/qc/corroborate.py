"""Corroboration between QC checks: a failure on weak evidence needs a second opinion.

A check may mark a failure ``weak`` (:class:`merc.qc.base.Flag`): the measurement is close to its line, where
clean data is lost too (two similar voices: a clean utterance's voice is slightly closer to another speaker's).
``QCConfig.corroborate`` names, per check, the checks that can vouch for the same utterance; after every check
has judged, a weak failure becomes a pass when one of them *verified* the utterance: it passed it on a measured
score (a pass without a score, such as "not verified: no face gallery" or "not judged", vouches for nothing; nor
does a faces pass with several faces on screen: the labelled speaker is there, but who speaks is not known).
A weak failure stands when the vouching checks failed the utterance, could not measure it, or were not run.

The default pairs the speaker check with the faces check: a voice only slightly closer to another speaker
is kept when the labelled speaker's face was matched on screen; a mislabelled utterance shows the other
person's face and fails both (every swapped speaker of the unseen benchmark corpora did).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterable

from merc.qc.base import Flag


def vouches(flag: Flag | None) -> bool:
    """A pass on a measured score that the check lets vouch (``Flag.can_vouch``): it verified the utterance."""
    return flag is not None and flag.passed and flag.measured and flag.score is not None and flag.can_vouch


def corroborate(flags: Iterable[Flag], rules: dict[str, list[str]]) -> tuple[list[Flag], dict[str, dict]]:
    """(flags with the vouched-for weak failures turned into passes, per check {"weak": n, "overruled": k,
    "by": [...]}). Flags keep their order; ``rules``: check -> the checks that may vouch for its weak failures."""
    flags = list(flags)
    by_key = {(f.utterance_id, f.check): f for f in flags}
    counts: dict[str, Counter] = {name: Counter() for name in rules}
    out = []
    for f in flags:
        if f.weak and not f.passed and f.check in rules:
            counts[f.check]["weak"] += 1
            voucher = next((v for v in rules[f.check] if vouches(by_key.get((f.utterance_id, v)))), None)
            if voucher is not None:
                counts[f.check]["overruled"] += 1
                other = by_key[(f.utterance_id, voucher)]
                f = replace(f, passed=True, overruled_by=voucher,
                            reason=f"kept: {f.reason}; but the {voucher} check verified it ({other.reason})")
        out.append(f)
    stats = {name: {"weak": c["weak"], "overruled": c["overruled"], "by": list(rules[name])}
             for name, c in counts.items()}
    return out, stats
