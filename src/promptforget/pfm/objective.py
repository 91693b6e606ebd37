"""The PFM training objective, vectorised.

View A: each sample sees its own prompt plus k random wrong ones, k ~ U{0..C-1}  -> cross-entropy.
View B: each sample sees k random wrong prompts only,       k ~ U{0..C-1}        -> KL(uniform || p).
(k = 0 in view B means no prompt at all: without its key the model must not know the class.)
With view_b_sizes="harmonic", view B draws k with P(k) ~ 1/(k+1) instead: half of the view-B
samples then see no prompt or a single wrong one, the sets that leak most once most classes are
forgotten (after forgetting C-1 classes, a sample of a forgotten class meets one wrong prompt).

Prompt sets are rows of a random permutation of the classes, cut at per-sample lengths: one
argsort for the whole batch instead of a Python loop per sample. Both views go through the
encoder as one batch of 2B.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_prompt_sets(
    labels: torch.Tensor,
    num_classes: int,
    own: bool,
    generator: torch.Generator | None = None,
    shard: tuple[int, int] | None = None,
    sizes: str = "uniform",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt class indices [B, S] and slot mask [B, S] for one view.

    own=True: slot 0 is the sample's own class, followed by k wrong classes.
    own=False: k wrong classes; the own class is never included.
    S is the largest set size in the batch; smaller sets are padded (mask False).
    shard=(offset, global_batch): draw the random numbers for the whole global batch and keep rows
    offset..offset+B, so data-parallel processes sample exactly what one process would.
    sizes: how k (the number of wrong prompts, 0..C-1) is drawn: "uniform" (the paper) or
    "harmonic" (P(k) ~ 1/(k+1), weight on the small sets).
    """
    b = labels.shape[0]
    lo, total = shard if shard is not None else (0, b)
    scores = torch.rand(total, num_classes, generator=generator)[lo : lo + b]
    if sizes == "uniform":
        k = torch.randint(0, num_classes, (total,), generator=generator)
    elif sizes == "harmonic":
        weights = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float)
        k = torch.multinomial(weights, total, replacement=True, generator=generator)
    else:
        raise ValueError(f"sizes must be 'uniform' or 'harmonic', got {sizes!r}")
    k = k[lo : lo + b]
    # Own class sorts first (own=True) or last (own=False); wrong classes in random order between.
    scores[torch.arange(b), labels.cpu()] = -1.0 if own else 2.0
    order = scores.argsort(dim=1)
    n = k + 1 if own else k
    s = int(n.max()) if b else 0
    mask = torch.arange(s).unsqueeze(0) < n.unsqueeze(1)
    return order[:, :s], mask


def kl_uniform_to_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(U || softmax(logits)) = -log C - mean_c log p_c. Zero iff p is uniform."""
    c = logits.shape[-1]
    return (-math.log(c) - F.log_softmax(logits, dim=-1).mean(dim=-1)).mean()


class ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient comes back negated (gradient reversal, Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def pfm_loss(
    model, inputs: dict[str, torch.Tensor], labels: torch.Tensor, generator=None, kl_weight: float = 1.0, shard=None,
    decoy: tuple[float, int, float] | None = None, view_b_sizes: str = "uniform", probe_weight: float = 0.0,
    probe_mode: str = "confusion",
):
    """CE on view A + kl_weight * KL(U || p) on view B, computed with one forward of 2B samples.

    probe_weight > 0: ``model.adversary`` (a linear probe) learns the class from view B's CLS features
    (its CE, on detached features, is logged as ``probe``), and the shared weights are pushed to hide it,
    so the features a sample gets without its own prompt stop telling its class. probe_mode "confusion":
    + probe_weight * KL(U || probe output), the probe frozen in that term (logged as ``confusion``);
    "reverse": + probe_weight * the probe's CE with the gradient into the features negated.

    decoy = (share, steps, eps): that share of view-B samples also holds a fresh N(0,1) prompt of no
    class, moved ``steps`` signed-gradient steps of ``eps`` towards the sample's class (the audit's
    key-recovery adversary, in miniature); view B's KL then teaches the shared weights to ignore it.
    """
    core = model.module if hasattr(model, "module") else model
    c = core.num_classes
    ids_a, mask_a = sample_prompt_sets(labels, c, own=True, generator=generator, shard=shard)
    ids_b, mask_b = sample_prompt_sets(labels, c, own=False, generator=generator, shard=shard, sizes=view_b_sizes)
    s = max(ids_a.shape[1], ids_b.shape[1])
    ids = torch.cat([F.pad(ids_a, (0, s - ids_a.shape[1])), F.pad(ids_b, (0, s - ids_b.shape[1]))])
    mask = torch.cat([F.pad(mask_a, (0, s - mask_a.shape[1])), F.pad(mask_b, (0, s - mask_b.shape[1]))])
    doubled = {k: torch.cat([v, v]) for k, v in inputs.items()}
    b = labels.shape[0]
    extra = {}
    if decoy is not None and decoy[0] > 0:
        share, steps, eps = decoy
        keys, on = decoy_keys(core, inputs, labels, ids_b, mask_b, share, steps, eps, generator, shard)
        # View A rows carry an empty decoy slot, view B rows the decoy where `on`.
        extra = {"decoy_prompts": torch.cat([keys, keys]), "decoy_mask": torch.cat([torch.zeros_like(on), on])}
    features = []
    hook = core.head.register_forward_hook(lambda mod, inp, out: features.append(inp[0])) if probe_weight > 0 else None
    try:
        logits = model(doubled, prompt_ids=ids, prompt_mask=mask, **extra)
    finally:
        if hook is not None:
            hook.remove()
    ce = F.cross_entropy(logits[:b], labels)
    kl = kl_uniform_to_softmax(logits[b:])
    loss, parts = ce + kl_weight * kl, {"ce": ce.detach(), "kl": kl.detach()}
    if probe_weight > 0:
        feats = features[0][b:]
        if probe_mode == "reverse":
            probe = F.cross_entropy(core.adversary(ReverseGradient.apply(feats)), labels)
            loss = loss + probe_weight * probe
        else:
            probe = F.cross_entropy(core.adversary(feats.detach()), labels)  # trains the probe only
            frozen = F.linear(feats, core.adversary.weight.detach(), core.adversary.bias.detach())
            confusion = kl_uniform_to_softmax(frozen)  # trains the shared weights only
            loss = loss + probe + probe_weight * confusion
            parts["confusion"] = confusion.detach()
        parts["probe"] = probe.detach()
    return loss, parts


def decoy_keys(model, inputs, labels, ids, mask, share: float, steps: int, eps: float, generator=None, shard=None):
    """Fresh N(0,1) prompts [B, T, D] for a random ``share`` of the samples (mask [B]), each pushed
    ``steps`` signed-gradient steps of ``eps`` to raise its sample's true class next to the wrong
    prompts ``ids``/``mask``. The model's weights get no gradient from this search."""
    b = labels.shape[0]
    lo, total = shard if shard is not None else (0, b)
    t, d = model.config.prompt_tokens, model.encoder.hidden_size
    keys = torch.randn(total, t, d, generator=generator)[lo : lo + b]
    on = (torch.rand(total, generator=generator) < share)[lo : lo + b]
    device = labels.device
    keys, on = keys.to(device), on.to(device)
    for _ in range(steps):
        k = keys.clone().requires_grad_(True)
        logits = model(inputs, prompt_ids=ids, prompt_mask=mask, decoy_prompts=k, decoy_mask=on)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), k)
        keys = (keys - eps * grad.sign()).detach()  # descend CE = raise p(true class), as the adversary does
    return keys, on


def plain_loss(model, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
    """Cross-entropy without any prompt: an ordinary fine-tune (the utility reference)."""
    b = labels.shape[0]
    empty = torch.zeros(b, 0, dtype=torch.long), torch.zeros(b, 0, dtype=torch.bool)
    ce = F.cross_entropy(model(inputs, *empty), labels)
    return ce, {"ce": ce.detach(), "kl": torch.zeros(())}
