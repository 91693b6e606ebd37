"""Which process of a multi-process launch this is, and the launch's state with a clean shutdown."""

from __future__ import annotations

import atexit
import os


def is_main_process() -> bool:
    """False on the non-zero ranks of a ``torchrun`` / ``accelerate launch`` job (they set RANK).

    The CLIs train on every rank but write run directories on rank 0 only, so N processes never race
    on the same files.
    """
    return int(os.environ.get("RANK", "0")) == 0


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_shutdown_registered = False


def launch_state():
    """Accelerate's ``PartialState`` for this launch (it starts the process group under torchrun).

    The process group is destroyed at exit, while the interpreter is still whole: a gloo group left to
    interpreter finalisation can abort the process ("terminate called without an active exception").
    """
    global _shutdown_registered
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if not _shutdown_registered:
        atexit.register(_destroy_process_group)
        _shutdown_registered = True
    return state
