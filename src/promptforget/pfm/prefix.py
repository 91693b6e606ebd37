"""Prefix-style class prompts: prompts act only as extra keys/values in every attention layer.

Token style (the paper) prepends the prompts to the sequence, so each one is projected to q/k/v and
goes through every MLP, for every sample: C prompts cost like C more input tokens. In prefix style a
prompt vector is projected by each layer's (LoRA-adapted) key and value projections once per forward,
shared by the whole batch, and the input tokens attend to those extra keys. No query, no MLP, no
residual stream for prompts: the cost of C prompts is C more keys in attention.

Mechanism: a custom attention function registered with transformers' ``AttentionInterface``. Before
the blocks run, :func:`prefix_context` publishes per-layer prompt keys/values and the full key mask
in a context variable (thread- and task-safe: concurrent forwards in a server do not mix); the
attention function concatenates them in front of the tokens' keys/values.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F

ATTN_NAME = "promptforget_prefix"
_STATE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("promptforget_prefix_state", default=None)
_BANK_CACHE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("promptforget_prefix_bank_cache", default=None)


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    state = _STATE.get()
    if state is not None:
        kp, vp = state["kv"][id(module)]
        if kp.dim() == 3 and torch.is_grad_enabled() and not (module.training and dropout):
            return _attention_shared_bank(query, key, value, kp, vp, state["mask"], scaling)
        if kp.dim() == 3:  # [H, U*T, hd] shared by the batch
            kp, vp = (x.unsqueeze(0).expand(query.shape[0], -1, -1, -1) for x in (kp, vp))
        key = torch.cat([kp.to(key.dtype), key], dim=2)  # [B, H, P + L, hd]
        value = torch.cat([vp.to(value.dtype), value], dim=2)
        attention_mask = state["mask"]  # [B, 1, 1, P + L] bool, True = attend (None = all)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0, scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def _attention_shared_bank(query, key, value, bank_k, bank_v, mask, scaling):
    """Softmax attention over [bank prompts | own tokens] without copying the bank per sample: the
    scores against the bank are one matrix product per head over every query of the batch."""
    b, h, l, hd = query.shape
    scale = hd**-0.5 if scaling is None else scaling
    q = query.transpose(0, 1).reshape(h, b * l, hd)  # [H, B*L, hd]
    bank_scores = torch.bmm(q, bank_k.to(q.dtype).transpose(1, 2)).reshape(h, b, l, -1).transpose(0, 1)  # [B, H, L, U]
    scores = torch.cat([bank_scores, query @ key.transpose(-1, -2)], dim=-1) * scale  # [B, H, L, U + L]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1)
    u = bank_k.shape[1]
    p_bank = probs[..., :u].transpose(0, 1).reshape(h, b * l, u)
    out = torch.bmm(p_bank, bank_v.to(q.dtype)).reshape(h, b, l, hd).transpose(0, 1) + probs[..., u:] @ value
    return out.transpose(1, 2).contiguous(), None


def install(model) -> None:
    """Route a backbone's attention through the prefix-aware function (plain SDPA when no prefix)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, _attention)
    model.config._attn_implementation = ATTN_NAME


def attention_modules(encoder, start: int = 0) -> list[tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]]:
    """(attention module that calls the interface, key projection, value projection) per block >= start."""
    mods = []
    for block in encoder.blocks[start:]:
        att = block.attention
        if hasattr(att, "k_proj"):  # ViT / DINOv2 (transformers 5.x)
            mods.append((att, att.k_proj, att.v_proj))
        else:  # BERT family: attention.self.{key,value}
            mods.append((att.self, att.self.key, att.self.value))
    return mods


@contextlib.contextmanager
def prefix_context(encoder, bank, rows, prompt_mask, key_mask, start: int = 0, bank_kv=None):
    """Publish per-layer prompt keys/values for one forward.

    bank [A, T, D] prompt vectors; rows [B, S] bank rows per sample (any value where masked);
    prompt_mask [B, S]; key_mask [B, L] of the input tokens. bank_kv: the bank's keys/values from
    :func:`project_bank`, when the caller already has them (inference reusing one bank).

    Two layouts of the same keys. *Shared* (the sets hold distinct prompts and the bank rows the batch
    uses are about as many as its largest set, as in training and full-bank inference): every sample
    gets the keys of all used rows, one [1, H, U*T, hd] tensor broadcast over the batch, and a key mask
    says which rows are its own: no per-sample copy, and the backward is a sum over the batch instead
    of a scatter. *Gathered* (small sets out of a large bank, or a set naming a prompt twice): each
    sample's own rows are gathered into [B, H, S*T, hd]. A masked key is an absent key and softmax
    ignores the order of keys, so both give each sample the attention over exactly its own prompts.
    """
    b, s = rows.shape
    a, t = bank.shape[0], bank.shape[1]
    real = torch.where(prompt_mask, rows, a)  # masked slots point at a spare column
    seen = torch.zeros(b, a + 1, dtype=torch.bool, device=rows.device).scatter_(1, real, True)[:, :a]
    used = seen.any(0).nonzero().squeeze(1)
    distinct = int(seen.sum()) == int(prompt_mask.sum())
    shared = distinct and len(used) <= s + s // 4
    if bank_kv is None:
        bank_kv = project_bank(encoder, bank[used] if shared and len(used) < a else bank, start)
    elif shared and len(used) < a:
        bank_kv = [(k[used], v[used]) for k, v in bank_kv]
    if shared:
        prompt_keys = seen[:, used].repeat_interleave(t, dim=1)
    else:
        prompt_keys = prompt_mask.repeat_interleave(t, dim=1)
        rows = rows.clamp(min=0)
    kv = {}
    for (att, _, _), (k, v) in zip(attention_modules(encoder, start), bank_kv):
        if shared:  # [U, T, H, hd] -> [H, U*T, hd], one tensor for the whole batch
            kp, vp = (x.flatten(0, 1).transpose(0, 1) for x in (k, v))
        else:  # [B, S, T, H, hd] -> [B, H, S*T, hd]
            kp, vp = (x[rows].flatten(1, 2).transpose(1, 2) for x in (k, v))
        kv[id(att)] = (kp, vp)
    keys = torch.cat([prompt_keys, key_mask], dim=1)
    # No mask at all when every key is attended (full-bank inference): SDPA's fastest path.
    mask = None if bool(keys.all()) else keys[:, None, None, :]
    token = _STATE.set({"kv": kv, "mask": mask})
    try:
        yield
    finally:
        _STATE.reset(token)


def project_bank(encoder, bank, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values [A, T, H, hd] of every bank prompt in each block >= start: a prompt's key/value
    does not depend on the sample, so it is projected once per bank, not once per sample."""
    a, t, d = bank.shape
    heads = encoder.model.config.num_attention_heads
    flat = bank.reshape(-1, d)
    return [(k_proj(flat).reshape(a, t, heads, d // heads), v_proj(flat).reshape(a, t, heads, d // heads))
            for _, k_proj, v_proj in attention_modules(encoder, start)]


@contextlib.contextmanager
def reuse_bank_projections():
    """Within: forwards without gradients reuse the bank's keys/values (:func:`bank_projections`)
    instead of projecting every prompt again for each batch. For inference over many batches, e.g. an
    evaluation: the weights must not change inside."""
    if _BANK_CACHE.get() is not None:  # nested: keep the outer cache
        yield
        return
    token = _BANK_CACHE.set({})
    try:
        yield
    finally:
        _BANK_CACHE.reset(token)


def bank_projections(encoder, bank, start: int, prompts: tuple[torch.Tensor, ...]):
    """The bank's keys/values, projected once and reused while ``prompts`` (the tensors the bank was
    stacked from, compared by identity: a forget swaps them) stay the same; None outside
    :func:`reuse_bank_projections` or with gradients on."""
    cache = _BANK_CACHE.get()
    if cache is None or torch.is_grad_enabled():
        return None
    hit = cache.get((id(encoder), start))
    if hit is None or len(hit[0]) != len(prompts) or any(a is not b for a, b in zip(hit[0], prompts)):
        hit = cache[(id(encoder), start)] = (prompts, project_bank(encoder, bank, start))  # holds `prompts`: ids stay unique
    return hit[1]
