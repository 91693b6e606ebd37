"""Which process of a multi-process launch this is, without starting a process group."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """False on the non-zero ranks of a ``torchrun`` / ``accelerate launch`` job (they set RANK).

    The CLIs train on every rank but write run directories on rank 0 only, so N processes never race
    on the same files.
    """
    return int(os.environ.get("RANK", "0")) == 0
