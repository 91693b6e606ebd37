"""Data parallelism without DDP (Hugging Face Accelerate only starts the processes).

Every process draws the same global batch (the batch order is seeded) and keeps a contiguous slice
of its rows. Losses are local sums divided by the *global* counts and gradients are summed across
processes, so N processes take exactly the step that one process takes on the global batch, uneven
last batches included. Only the trainable tensors' gradients travel, in one all-reduce per step.
"""

from __future__ import annotations

import torch


def make_accelerator(accelerator=None):
    """The caller's Accelerator, or one for this launch (``accelerate launch``/torchrun set the world)."""
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    from promptforget.utils.dist import launch_state

    launch_state()
    return Accelerator(cpu=not torch.cuda.is_available())


def batch_rows(batch: dict) -> int:
    """Rows of a batch: every value is a tensor with the batch on its first axis."""
    return next(iter(batch.values())).shape[0]


def local_rows(batch: dict | None, acc) -> dict | None:
    """This process's contiguous share of a global batch, on its device; None if the share is empty."""
    if batch is None:
        return None
    n = batch_rows(batch)
    lo, hi = n * acc.process_index // acc.num_processes, n * (acc.process_index + 1) // acc.num_processes
    if hi == lo:
        return None
    return {k: v[lo:hi].to(acc.device) for k, v in batch.items()}


def sum_gradients(params: list[torch.Tensor], acc) -> None:
    """All-reduce (sum) the gradients of ``params`` across processes, in one flat buffer."""
    if acc.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = acc.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def global_sum(values: torch.Tensor, acc) -> torch.Tensor:
    """Sum of a small tensor of (detached) loss parts over processes: the global batch's values."""
    values = values.detach()
    return values if acc.num_processes == 1 else acc.reduce(values.clone(), reduction="sum")
