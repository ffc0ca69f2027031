"""Inference: a run and its encoders loaded once (:class:`~merc.inference.predictor.Predictor`), the prediction
path ``merc predict`` and ``merc serve`` share (:mod:`merc.inference.records`), and live labelling one utterance
at a time (:class:`~merc.inference.stream.StreamSession`; step mode for causal Mamba runs in
:mod:`merc.inference.step`). Import the submodules (``merc.training.predict`` imports ``predictor`` alone)."""
