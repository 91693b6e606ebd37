"""Membership inference on causal language models from per-token log-probabilities.

All scores are oriented so that **higher = more likely seen in training** (AUC 0.5 = no signal).

  LOSS      mean_t log p(x_t | x_<t)                          (Yeom et al. 2018; = -loss)
  ZLib      mean_t log p(x_t | x_<t) / zlib_bytes(text)       (Carlini et al. 2021: the LM's
            likelihood calibrated by a generic compressor's; we keep the sign so members score higher)
  Min-K%    mean of the lowest k% of log p(x_t | x_<t)        (Shi et al. ICLR 2024, k = 0.4 here)
  Min-K%++  mean of the lowest k% of (log p(x_t) - mu_t) / sigma_t, where mu_t and sigma_t are the
            mean and standard deviation of log p(z) under z ~ p(. | x_<t)   (Zhang et al. ICLR 2025)

For an unlearning audit compute the scores on the forget set (unlearned members) and on a holdout
set the model never saw, and report AUC(forget vs holdout): after perfect unlearning it equals the
retrained reference's AUC (about 0.5).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from promptforget.audit.mia import roc_auc

SCORES = ("loss", "zlib", "min_k", "min_k_pp")


@dataclass
class TokenStats:
    """Per-token statistics of one text (targets are tokens 1..T-1)."""

    logprobs: np.ndarray  # log p(x_t | x_<t)
    mu: np.ndarray  # E_{z~p}[log p(z)]
    sigma: np.ndarray  # std_{z~p}[log p(z)]


def next_token_moments(logp):
    """mu_t = E_{z~p}[log p(z)] and sigma_t = std_{z~p}[log p(z)] from log-probabilities [..., V] (Min-K%++)."""
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
    return mu, sigma


def token_stats(model, tokenizer, texts: Sequence[str], max_length: int = 256, batch_size: int = 8,
                prefix_embeds=None) -> list[TokenStats]:
    """Per-token log-probs (and Min-K%++ moments) of ``texts`` under any HF causal LM.

    ``prefix_embeds`` (optional, [P, D]): soft-prompt embeddings prepended to every text -- how a
    prompted model (SPUL) is scored; None for the bare model.
    """
    import torch

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a list of strings")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[TokenStats] = []
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                chunk = list(texts[i : i + batch_size])
                enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
                ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
                if prefix_embeds is None:
                    logits = model(input_ids=ids, attention_mask=mask).logits
                else:
                    emb = model.get_input_embeddings()(ids)
                    pre = prefix_embeds.to(emb.dtype).to(device).unsqueeze(0).expand(len(ids), -1, -1)
                    full_mask = torch.cat([torch.ones(len(ids), pre.shape[1], dtype=mask.dtype, device=device), mask], 1)
                    logits = model(inputs_embeds=torch.cat([pre, emb], 1), attention_mask=full_mask).logits[:, pre.shape[1]:]
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                tgt = ids[:, 1:]
                tok = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
                mu, sigma = next_token_moments(logp)
                valid = mask[:, 1:].bool() & mask[:, :-1].bool()
                for r in range(len(chunk)):
                    v = valid[r]
                    out.append(TokenStats(tok[r][v].cpu().numpy(), mu[r][v].cpu().numpy(), sigma[r][v].cpu().numpy()))
    finally:
        model.train(was_training)
    return out


def _lowest_mean(x: np.ndarray, k: float) -> float:
    if len(x) == 0:
        return float("nan")
    n = max(1, int(math.ceil(k * len(x))))  # at least one token, as in the reference implementation
    return float(np.sort(x)[:n].mean())


def min_k(logprobs: np.ndarray, k: float = 0.4) -> float:
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    return _lowest_mean(np.asarray(logprobs, dtype=np.float64), k)


def min_k_pp(logprobs: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float = 0.4) -> float:
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    lp, m, s = (np.asarray(a, dtype=np.float64) for a in (logprobs, mu, sigma))
    return _lowest_mean((lp - m) / np.maximum(s, 1e-8), k)


def zlib_bytes(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


def scores_from_stats(texts: Sequence[str], stats: Sequence[TokenStats], k: float = 0.4) -> dict[str, np.ndarray]:
    """The four membership scores of each text (higher = more member-like)."""
    if len(texts) != len(stats):
        raise ValueError(f"{len(texts)} texts but {len(stats)} token statistics")
    rows = {s: [] for s in SCORES}
    for text, st in zip(texts, stats):
        ll = float(np.mean(st.logprobs)) if len(st.logprobs) else float("nan")
        rows["loss"].append(ll)
        rows["zlib"].append(ll / zlib_bytes(text))
        rows["min_k"].append(min_k(st.logprobs, k))
        rows["min_k_pp"].append(min_k_pp(st.logprobs, st.mu, st.sigma, k))
    return {s: np.asarray(v) for s, v in rows.items()}


def llm_mia_scores(model, tokenizer, texts: Sequence[str], k: float = 0.4, **kw) -> dict[str, np.ndarray]:
    return scores_from_stats(texts, token_stats(model, tokenizer, texts, **kw), k)


def llm_mia_aucs(model, tokenizer, member_texts, nonmember_texts, k: float = 0.4, **kw) -> dict:
    """AUC of each score, member (e.g. forget set) vs non-member (holdout). Texts with <2 tokens are dropped."""
    a = llm_mia_scores(model, tokenizer, member_texts, k, **kw)
    b = llm_mia_scores(model, tokenizer, nonmember_texts, k, **kw)
    return aucs_from_scores(a, b)


def aucs_from_scores(member: dict[str, np.ndarray], nonmember: dict[str, np.ndarray]) -> dict:
    out = {}
    for s in SCORES:
        x, y = member[s], nonmember[s]
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        out[s] = roc_auc(x, y) if len(x) and len(y) else float("nan")
    out["n_member"], out["n_nonmember"] = int(len(member["loss"])), int(len(nonmember["loss"]))
    return out
