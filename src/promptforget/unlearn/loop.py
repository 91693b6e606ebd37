"""One training loop for stage-1 fine-tuning, SPUL and the fine-tuning baselines.

A method is an *objective*: ``loss_terms(forget, retain, counts)`` returns its named loss terms on
this process's rows and ``weights`` says how they add up (``loss = sum(weights[name] * term)``). The
loop owns the rest: AdamW with the cosine schedule, seeded global batches (the epochs run over the
forget data; retain batches are drawn alongside, cycling), the split of every batch across processes
(:mod:`promptforget.unlearn.parallel`), the gradient all-reduce, and the log: one history entry per
step (``step``, ``epoch``, ``loss``, each weighted term by name, ``lr``), a progress bar and a callback.
Stage-1 fine-tuning passes its training set as the forget data and has no retain data.

Empty shards: ``loss_terms`` is called only when this process holds rows of the step's batch, and a
term whose rows all sit on other processes is simply left out of the dict (it counts as zero). A
process without any rows still joins the gradient all-reduce, with zero gradients.

PFM (:mod:`promptforget.pfm.train`) keeps its own loop on a second data-parallel contract, DDP through
``accelerator.prepare``. Here the LLM (135 M parameters) is frozen and never wrapped in DDP: only a few
small trainable tensors (a soft-prompt encoder, LoRA factors) need syncing, and one flat all-reduce of
their gradients does it without registering the backbone's parameters with DDP's reducer. PFM trains
LoRA inside the backbone together with its prompts and head, where DDP's bucketed all-reduce,
overlapped with the backward pass, is the right tool.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from promptforget.unlearn.parallel import batch_rows, global_sum, local_rows, sum_gradients


class Objective(Protocol):
    weights: Mapping[str, float]  # every term's weight, in logging order; a weight may be 0

    def loss_terms(self, forget: dict | None, retain: dict | None, counts: dict) -> dict[str, torch.Tensor]:
        """Terms on this process's rows (None: no rows here), normalised by the global ``counts``."""
        ...


def row_counts(forget: dict, retain: dict | None) -> dict:
    """Normalisers of a global batch for per-row losses (1 where there is no retain batch)."""
    return {"forget_rows": batch_rows(forget), "retain_rows": batch_rows(retain) if retain is not None else 1}


def iterate_batches(
    data: Sequence, batch_size: int, collate: Callable[[list], dict], shuffle: bool, seed: int
) -> Iterator[dict]:
    """Batches of ``data`` in a seeded order; each carries ``index``, its rows' positions in ``data``."""
    idx = list(range(len(data)))
    if shuffle:
        random.Random(seed).shuffle(idx)
    for s in range(0, len(idx), batch_size):
        chunk = idx[s : s + batch_size]
        b = collate([data[i] for i in chunk])
        b["index"] = torch.tensor(chunk)
        yield b


def cycle_batches(data: Sequence, batch_size: int, collate: Callable[[list], dict], seed: int) -> Iterator[dict]:
    """Endless reshuffled passes over ``data`` (retain batches that accompany forget batches)."""
    epoch = 0
    while True:
        yield from iterate_batches(data, batch_size, collate, shuffle=True, seed=seed + 1000 * epoch)
        epoch += 1


def cosine_schedule(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up over ``round(warmup_ratio * total_steps)`` steps, then cosine decay to zero:
    ``transformers.get_cosine_schedule_with_warmup`` one step ahead, so that the first step trains at
    ``1 / (warmup + 1)`` of the rate rather than at 0 (step s: ``(s + 1) / (warmup + 1)`` while warming up)."""
    import warnings

    from transformers import get_cosine_schedule_with_warmup

    warmup = int(round(warmup_ratio * total_steps))
    schedule = get_cosine_schedule_with_warmup(optimizer, warmup + 1, total_steps + 1)
    with warnings.catch_warnings():  # stepping before the first optimizer step is the point here
        warnings.simplefilter("ignore", UserWarning)
        schedule.step()
    return schedule


def train_loop(
    objective: Objective,
    params: list[torch.Tensor],
    forget_data: Sequence,
    retain_data: Sequence,
    collate: Callable[[list], dict],
    *,
    batch_size: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    warmup_ratio: float,
    seed: int,
    accelerator,
    counts: Callable[[dict, dict | None], dict] = row_counts,
    callback: Callable[[int, dict], None] | None = None,
    desc: str = "train",
) -> list[dict]:
    """Train ``params`` (AdamW, cosine schedule) on ``objective``; returns the history, one dict per step.

    Epoch ``e`` visits ``forget_data`` in the order seeded by ``seed + e``; each step also draws the
    next retain batch (if ``retain_data``). ``counts(forget_batch, retain_batch)`` gives the global
    batch's normalisers, handed to ``loss_terms``. ``callback(step, info)`` runs after every step.
    """
    acc = accelerator
    names = list(objective.weights)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total = epochs * -(-len(forget_data) // batch_size)
    sched = cosine_schedule(opt, total, warmup_ratio)
    retain_batches = cycle_batches(retain_data, batch_size, collate, seed) if len(retain_data) else None

    history, step = [], 0
    bar = tqdm(total=total, desc=desc, leave=False, disable=not acc.is_local_main_process)
    for epoch in range(epochs):
        for forget_all in iterate_batches(forget_data, batch_size, collate, shuffle=True, seed=seed + epoch):
            retain_all = next(retain_batches) if retain_batches is not None else None
            batch_counts = counts(forget_all, retain_all)  # from the global batch
            forget, retain = local_rows(forget_all, acc), local_rows(retain_all, acc)
            opt.zero_grad(set_to_none=True)
            terms = {}
            if forget is not None or retain is not None:
                terms = objective.loss_terms(forget, retain, batch_counts)
                if terms.keys() - objective.weights.keys():
                    raise ValueError(f"loss terms {sorted(terms.keys() - objective.weights.keys())} have no weight")
            if terms:
                sum(objective.weights[n] * terms[n] for n in names if n in terms).backward()
            sum_gradients(params, acc)
            opt.step()
            sched.step()

            local = [terms[n].detach().float() if n in terms else torch.zeros(()) for n in names]
            values = dict(zip(names, global_sum(torch.stack([v.to(acc.device) for v in local]), acc).tolist()))
            info = {"step": step, "epoch": epoch, "loss": sum(objective.weights[n] * v for n, v in values.items())}
            info.update(values)  # a single term named "loss" is the total itself
            info["lr"] = sched.get_last_lr()[0]
            history.append(info)
            bar.update(1)
            bar.set_postfix({n: f"{v:.3f}" for n, v in values.items()})
            if callback is not None:
                callback(step, info)
            step += 1
    bar.close()
    return history
