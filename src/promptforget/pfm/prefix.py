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


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    state = _STATE.get()
    if state is not None:
        kp, vp = state["kv"][id(module)]  # [B, H, P, hd]
        key = torch.cat([kp.to(key.dtype), key], dim=2)
        value = torch.cat([vp.to(value.dtype), value], dim=2)
        attention_mask = state["mask"]  # [B, 1, 1, P + L] bool, True = attend
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0, scale=scaling
    )
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
def prefix_context(encoder, bank, rows, prompt_mask, key_mask, start: int = 0):
    """Publish per-layer prompt keys/values for one forward.

    bank [A, T, D] prompt vectors; rows [B, S] bank rows per sample (any value where masked);
    prompt_mask [B, S]; key_mask [B, L] of the input tokens.
    """
    b, s = rows.shape
    t, d = bank.shape[1], bank.shape[2]
    flat = bank.reshape(-1, d)  # [A*T, D]
    kv = {}
    heads = encoder.model.config.num_attention_heads
    hd = d // heads
    for att, k_proj, v_proj in attention_modules(encoder, start):
        # Project the bank once (batch-independent), then gather each sample's prompts.
        k = k_proj(flat).reshape(-1, t, heads, hd)  # [A, T, H, hd]
        v = v_proj(flat).reshape(-1, t, heads, hd)
        kp = k[rows.clamp(min=0)].reshape(b, s * t, heads, hd).transpose(1, 2)  # [B, H, S*T, hd]
        vp = v[rows.clamp(min=0)].reshape(b, s * t, heads, hd).transpose(1, 2)
        kv[id(att)] = (kp, vp)
    pm = prompt_mask.repeat_interleave(t, dim=1)
    mask = torch.cat([pm, key_mask], dim=1)[:, None, None, :]
    token = _STATE.set({"kv": kv, "mask": mask})
    try:
        yield
    finally:
        _STATE.reset(token)
