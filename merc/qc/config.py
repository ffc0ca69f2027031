"""``QCConfig``: what the QC pipeline runs and how (checks, their configs, workers, dropping, calibration)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from merc.errors import ConfigError
from merc.qc.registry import BUILTIN_CHECKS, DEFAULT_CHECKS


@dataclass
class QCConfig:
    """What to run and how.

    checks: check names, run in this order (integrity first: it gates the media checks).
    check_configs: name -> that check's config object (thresholds); missing -> the check's default.
    factories: name -> "module:Class" or a picklable callable(config) -> Check; overrides built-ins.
    workers: processes for phase 1 (1 = in this process; >1 = a spawn pool, checks built once per worker).
    batch_size: utterances measured together by every check that needs them (each clip decoded once for all
        checks; batched models, e.g. Whisper's encoder, run once per batch); the unit of work of a worker.
    fps: frames per second for video checks (set on every check config that has an ``fps`` field).
    drop_on: checks whose failures drop an utterance from the manifest; None = every check run.
    gate_on_integrity: skip later checks on utterances whose media integrity found unusable.
    gallery_exclude_from: checks whose failures are kept out of reference galleries of later checks
        (passed as ``exclude_from_gallery`` to a ``judge`` that accepts it, e.g. faces after speaker).
    calibrate: checks whose thresholds are fitted on this corpus between measuring and judging (each
        through its own ``calibrate`` method; alignment: true vs deranged transcript pairs, no labels needed).
    calibrate_max: calibrate on at most this many measured utterances (a seeded random sample).
    seed: for that sample and the calibration's derangement.
    corroborate: check -> checks that can vouch for its *weak* failures (``Flag.weak``): such a failure becomes
        a pass when one of them verified the same utterance (see :mod:`merc.qc.corroborate`); {} = off, every
        failure counts on its own.
    drop_not_measured: also drop utterances a dropping check could not measure (``Flag.measured`` False);
        by default "not measured" is its own state and does not drop (a missing or undecodable file is
        still dropped: the integrity check fails it).
    """
    checks: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKS))
    check_configs: dict[str, Any] = field(default_factory=dict)
    factories: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    batch_size: int = 8
    fps: float | None = None
    drop_on: list[str] | None = None
    gate_on_integrity: bool = True
    gallery_exclude_from: list[str] = field(default_factory=lambda: ["speaker"])
    calibrate: list[str] = field(default_factory=list)
    calibrate_max: int = 300
    seed: int = 0
    corroborate: dict[str, list[str]] = field(default_factory=lambda: {"speaker": ["faces"]})
    drop_not_measured: bool = False

    def __post_init__(self) -> None:
        if len(set(self.checks)) != len(self.checks) or not self.checks:
            raise ConfigError(f"QCConfig.checks must be a non-empty list of distinct names, got {self.checks}")
        unknown = [c for c in self.checks if c not in BUILTIN_CHECKS and c not in self.factories]
        if unknown:
            raise ConfigError(f"unknown QC check(s) {unknown}; choose from {sorted(BUILTIN_CHECKS)} "
                              "or register a factory in QCConfig.factories")
        if self.batch_size < 1:
            raise ConfigError(f"QCConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ConfigError(f"QCConfig.workers must be >= 1, got {self.workers}")
        bad_cal = [c for c in self.calibrate if c not in self.checks]
        if bad_cal:
            raise ConfigError(f"QCConfig.calibrate names check(s) {bad_cal} that are not run ({self.checks})")
        bad_drop = [c for c in (self.drop_on or []) if c not in self.checks]
        if bad_drop:
            raise ConfigError(f"QCConfig.drop_on names check(s) {bad_drop} that are not run ({self.checks})")

        known = set(BUILTIN_CHECKS) | set(self.factories)
        bad = sorted({c for k, vs in self.corroborate.items() for c in [k, *vs]} - known)
        if bad or any(k in vs for k, vs in self.corroborate.items()):
            raise ConfigError(f"QCConfig.corroborate must map check names to other check names, got "
                              f"{self.corroborate}" + (f" (unknown: {bad})" if bad else ""))

    @property
    def dropping(self) -> list[str]:
        return list(self.checks) if self.drop_on is None else list(self.drop_on)
