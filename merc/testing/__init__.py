"""Tooling for tests and benchmarks (installed with merc because the benchmark scripts use it):
:mod:`merc.testing.synth` builds synthetic conversational corpora with known faults."""
