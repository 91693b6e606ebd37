"""Causal-LM building blocks shared by stage-1 fine-tuning, SPUL and the baselines: label-position
logits, the loss terms and their global-batch counts, generic-label draws, batching of encoded
examples and the unprompted-distribution cache. The training loop itself is promptforget.unlearn."""

from __future__ import annotations

import contextlib
import random
import warnings
from functools import partial
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from promptforget.spul.tasks import collate
from promptforget.unlearn import loop


@contextlib.contextmanager
def quiet_peft():
    """PEFT without two warnings that tell a user nothing, each matched by its exact text:

    * wrapping a model reads ``model.is_gradient_checkpointing``, an alias transformers deprecated
      (a FutureWarning on every LoRA or prompt we build; we never checkpoint activations);
    * generating with a soft prompt (P-tuning) drops the position ids transformers passes; the
      virtual tokens are prepended and positions are counted over them, which is what we want.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning",
                                category=UserWarning)
        yield


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
    of the global batch, so that the processes' losses add up to the global mean (see unlearn.parallel)."""
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
    """Collated batches of encoded examples in a seeded order (see unlearn.loop.iterate_batches)."""
    return loop.iterate_batches(encoded, batch_size, partial(collate, pad_id=pad_id), shuffle, seed)


def label_counts(forget: dict, retain: dict | None) -> dict:
    """Normalisers of a global batch: label tokens of each set, retain rows (1 where there is no retain batch)."""
    return {
        "forget_labels": label_count(forget["label_ids"]),
        "retain_labels": label_count(retain["label_ids"]) if retain is not None else 1,
        "retain_rows": len(retain["input_ids"]) if retain is not None else 1,
    }


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
