"""Prompt-gated per-class adapters (``adapt="gated"``; not in the paper).

Each class owns a LoRA on the query/value projections of the blocks its prompt enters, and a sample's
forward switches on exactly the adapters of the classes whose prompts are in its set. There is no shared
adapter: every adapted weight belongs to one class, so forgetting a class deletes its prompt *and* its
adapter, and what remains (the frozen backbone, the other classes' adapters and the head) is all that an
attacker can start from.

For a batch the adapters of the K active classes run as one LoRA of rank K*r whose rank groups are masked
per sample: ``x -> (x A^T * gate) B^T``, with ``A`` [K*r, in], ``B`` [out, K*r] and ``gate`` [batch, K*r].

The gates reach the projections through a thread-local context rather than state on the modules, so a
deep copy of the model (the audit's attacks copy it) and concurrent predictions in threads (the service)
each see their own.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_local = threading.local()
INDEX_ATTR = "_promptforget_gated_index"  # position of a projection in a ClassAdapter's lists


class ClassAdapter(nn.Module):
    """One class's LoRA: ``lora_A[j]`` [r, in] and ``lora_B[j]`` [out, r] for the j-th target projection.
    B starts at zero (as in LoRA), so a new adapter changes nothing until trained."""

    def __init__(self, shapes: list[tuple[int, int]], r: int, generator: torch.Generator | None = None):
        super().__init__()
        a = []
        for fan_in, _ in shapes:
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)), PEFT's default for lora_A
            a.append(nn.Parameter((torch.rand(r, fan_in, generator=generator) * 2 - 1) * bound))
        self.lora_A = nn.ParameterList(a)
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(fan_out, r)) for _, fan_out in shapes])


def install(model: nn.Module, target_names: list[str]) -> list[tuple[int, int]]:
    """Hook the target projections of ``model`` so that they add the gated adapters of the current context.
    Returns each target's (in_features, out_features), the shapes a ClassAdapter needs."""
    modules = dict(model.named_modules())
    shapes = []
    for j, name in enumerate(target_names):
        linear = modules[name]
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"gated adapters need nn.Linear targets; {name} is {type(linear).__name__}")
        setattr(linear, INDEX_ATTR, j)
        linear.register_forward_hook(_add_gated_delta)
        shapes.append((linear.in_features, linear.out_features))
    return shapes


def _add_gated_delta(module: nn.Linear, inputs, out):
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        return out
    a, b, gate, scaling, dropout = ctx
    j = getattr(module, INDEX_ATTR)
    x = F.dropout(inputs[0], dropout, module.training)
    h = F.linear(x, a[j].to(x.dtype)) * gate.to(x.dtype).unsqueeze(1)  # [B, L, K*r], zero outside a sample's set
    return out + scaling * F.linear(h, b[j].to(x.dtype))


@contextmanager
def gated(adapters: list[ClassAdapter], member: torch.Tensor, scaling: float, dropout: float):
    """Run forwards with ``adapters`` (K of them) switched on per sample by ``member`` [B, K] (bool)."""
    if not adapters:
        yield
        return
    n_targets = len(adapters[0].lora_A)
    a = [torch.cat([ad.lora_A[j] for ad in adapters]) for j in range(n_targets)]
    b = [torch.cat([ad.lora_B[j] for ad in adapters], dim=1) for j in range(n_targets)]
    r = adapters[0].lora_A[0].shape[0]
    gate = member.float().repeat_interleave(r, dim=1)
    previous = getattr(_local, "ctx", None)
    _local.ctx = (a, b, gate, scaling, dropout)
    try:
        yield
    finally:
        _local.ctx = previous


@contextmanager
def rows_selected(idx: torch.Tensor):
    """Within a ``gated`` context: the next forwards run the batch rows ``idx`` only."""
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        yield
        return
    a, b, gate, scaling, dropout = ctx
    _local.ctx = (a, b, gate[idx], scaling, dropout)
    try:
        yield
    finally:
        _local.ctx = ctx
