"""Tooling for tests and benchmarks (installed with merc because the benchmark scripts use it):
:mod:`merc.testing.synth` builds synthetic conversational media with known faults, :mod:`merc.testing.mmcorpus`
re-voices real MELD dialogues into a multimodal corpus whose audio and faces carry (or, as a control, do not
carry) the emotion label."""
