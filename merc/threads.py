"""``--threads N`` for every command that computes: how many CPU threads torch (and the BLAS / OpenMP pools
of numpy and the worker processes a command starts) may use. 0 leaves each library's own choice."""
from __future__ import annotations

import argparse
import os

from merc.errors import ConfigError

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # read by child processes


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch and the processes this command starts (0: the libraries' "
                             "own choice, usually every core)")


def apply_threads(n: int | None) -> None:
    """Use ``n`` threads from now on (this process: torch; processes started later: the environment)."""
    if not n:
        return
    if n < 0:
        raise ConfigError(f"--threads must be >= 0 (0: the libraries' own choice), got {n}")
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    import torch
    torch.set_num_threads(n)
