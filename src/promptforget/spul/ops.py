"""Building blocks shared by stage-1 fine-tuning, SPUL and the baselines: label-position logits,
the loss terms, generic-label draws, batching, the LR schedule and the unprompted-distribution cache."""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from promptforget.spul.tasks import collate


def hf_model(model):
    """The plain transformers model under a PEFT wrapper (LoRA layers, if any, stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def label_hidden_positions(label_pos: torch.Tensor, num_virtual: int) -> torch.Tensor:
    """Sequence positions whose outputs predict the label tokens.

    ``label_pos`` indexes the label tokens in the *text* sequence. With ``num_virtual`` soft-prompt
    vectors prepended, text position ``p`` sits at ``num_virtual + p`` and is predicted by the output
    one step earlier (causal shift), hence ``num_virtual + p - 1``.
    """
    if (label_pos < 1).any():
        raise ValueError("a label token at position 0 has no preceding position to be predicted from")
    return label_pos + num_virtual - 1


def align_label_logits(full_logits: torch.Tensor, label_pos: torch.Tensor, num_virtual: int = 0) -> torch.Tensor:
    """Pick ``(B, L, V)`` label logits out of full ``(B, num_virtual + T, V)`` model logits."""
    pos = label_hidden_positions(label_pos, num_virtual)
    return full_logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, full_logits.shape[-1]))


def label_logits(model, batch: dict, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, L, V)`` logits predicting each label token, with optional soft prompts ``(B, n, H)`` prepended.

    Same result as the full forward (PEFT's P-tuning forward included) followed by
    :func:`align_label_logits`, but the LM head runs only at the label positions, which saves a
    ``T x vocab`` matmul per sequence.
    """
    m = hf_model(model)
    device = m.get_input_embeddings().weight.device
    embeds = m.get_input_embeddings()(batch["input_ids"].to(device))
    mask = batch["attention_mask"].to(device)
    n_virtual = 0
    if prompts is not None:
        n_virtual = prompts.shape[1]
        embeds = torch.cat([prompts.to(embeds.dtype), embeds], dim=1)
        mask = torch.cat([torch.ones(mask.shape[0], n_virtual, dtype=mask.dtype, device=mask.device), mask], dim=1)
    hidden = m.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    pos = label_hidden_positions(batch["label_pos"].to(device), n_virtual)
    h = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return m.get_output_embeddings()(h)


def label_ce(logits: torch.Tensor, targets: torch.Tensor, count: torch.Tensor | int | None = None) -> torch.Tensor:
    """Cross-entropy summed over label tokens (``targets`` uses -100 for padding slots), divided by
    ``count``: by default this batch's label-token count (the mean); under data parallelism the count
    of the global batch, so that the processes' losses add up to the global mean (see local_rows)."""
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).to(logits.device), ignore_index=-100, reduction="sum")
    return total / (label_count(targets) if count is None else count)


def label_count(targets: torch.Tensor) -> torch.Tensor:
    return (targets != -100).sum().clamp(min=1)


def label_kl(ref_logprobs: torch.Tensor, logits: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """KL(p_ref || p) at the label position, summed over the batch and divided by ``count`` (default:
    this batch's size, i.e. the batch mean).

    ``ref_logprobs`` (B, V) are the unprompted model's log-probabilities, ``logits`` (B, V) the
    prompted model's raw logits.
    """
    total = F.kl_div(F.log_softmax(logits, dim=-1), ref_logprobs.to(logits.device), log_target=True, reduction="sum")
    return total / (max(len(logits), 1) if count is None else count)


def draw_generic_labels(n: int, choices, seed: int) -> list[str]:
    """One generic label per forget example, drawn uniformly with a seeded RNG (same seed, same draw)."""
    if not choices:
        raise ValueError("need at least one generic label to draw from")
    rng = random.Random(seed)
    return [rng.choice(list(choices)) for _ in range(n)]


def iterate_batches(encoded: list[dict], batch_size: int, pad_id: int, shuffle: bool, seed: int) -> Iterator[dict]:
    idx = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(idx)
    for s in range(0, len(idx), batch_size):
        chunk = idx[s : s + batch_size]
        b = collate([encoded[i] for i in chunk], pad_id)
        b["index"] = torch.tensor(chunk)
        yield b


def cycle_batches(encoded: list[dict], batch_size: int, pad_id: int, seed: int) -> Iterator[dict]:
    """Endless reshuffled passes over ``encoded`` (retain batches that accompany forget batches)."""
    epoch = 0
    while True:
        yield from iterate_batches(encoded, batch_size, pad_id, shuffle=True, seed=seed + 1000 * epoch)
        epoch += 1


def cosine_schedule(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up then cosine decay to zero (the reference schedule), as a LambdaLR."""
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def cache_label_logprobs(
    scorer: Callable[[dict], torch.Tensor], encoded: list[dict], pad_id: int, batch_size: int = 32
) -> torch.Tensor:
    """Log-probabilities (N, V) at the first label position, computed once, in ``encoded`` order.

    This replaces the reference code's second full model copy: the reference distribution is read
    from this cache during training.
    """
    out = []
    for b in iterate_batches(encoded, batch_size, pad_id, shuffle=False, seed=0):
        out.append(F.log_softmax(scorer(b)[:, 0].float(), dim=-1))
    return torch.cat(out)


# --- data parallelism (Hugging Face Accelerate) ----------------------------------------------------
# Every process draws the same global batch (the batch order is seeded) and keeps a contiguous slice
# of its rows. Losses are local sums divided by the *global* counts and gradients are summed across
# processes, so N processes take exactly the step that one process takes on the global batch, uneven
# last batches included. The LLM is frozen and is never wrapped in DDP: only the small trainable
# tensors' gradients travel, in one all-reduce per step.


def make_accelerator(accelerator=None):
    """The caller's Accelerator, or one for this launch (``accelerate launch``/torchrun set the world)."""
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def local_rows(batch: dict | None, acc) -> dict | None:
    """This process's contiguous share of a global batch, on its device; None if the share is empty."""
    if batch is None:
        return None
    n = batch["input_ids"].shape[0]
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
