"""Quality control of MERC corpora: integrity, transcript alignment, speaker identity, faces.

``QCPipeline(QCConfig(...)).run(corpus, out_dir)`` -> ``QCResult``; ``merc qc`` on the command line.
"""
from merc.qc.base import Check, Flag, QCItem
from merc.qc.config import QCConfig
from merc.qc.pipeline import QCPipeline
from merc.qc.registry import DEFAULT_CHECKS
from merc.qc.result import QCResult

__all__ = ["Check", "DEFAULT_CHECKS", "Flag", "QCConfig", "QCItem", "QCPipeline", "QCResult"]
