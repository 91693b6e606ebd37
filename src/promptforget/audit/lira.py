"""Per-example likelihood-ratio membership attack (LiRA, Carlini et al. IEEE S&P 2022).

Shadow models are trained on random halves of a population; each population example is therefore
IN about half of them and OUT of the others. For a target model and example x:

  phi(x)   = log p_y - log(1 - p_y)  (logit-scaled confidence, roughly Gaussian across models)
  online   Lambda(x) = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)
  offline  Lambda(x) = (phi - mu_out) / s_out   (one-sided: only OUT shadows are needed)

Higher Lambda = more likely a member. With few shadows the per-example variances are noisy, so
``fix_variance`` (default) uses one variance pooled over all examples, as the paper recommends. Fewer than
:data:`MIN_SHADOWS` shadows (2 per side) are refused: with one shadow a side the variance is undefined.

U-LiRA (Hayes et al. 2024) is the same test applied to unlearned models: shadows are trained with
x, then unlearn x (here: train, then forget the class), versus trained without x. See
:func:`promptforget.audit.pfm_audit.pfm_ulira`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from promptforget.audit.mia import roc_auc, tpr_at_fpr

SCALE_EPS = 1e-12
MIN_SHADOWS = 4


def scaled_confidence(probs, labels) -> np.ndarray:
    """phi = log p_y - log(1 - p_y), computed stably from probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    py = np.clip(p[np.arange(len(y)), y], SCALE_EPS, 1 - SCALE_EPS)
    return np.log(py) - np.log1p(-py)


def scaled_logit(logits, labels) -> np.ndarray:
    """phi from logits: z_y - logsumexp_{j != y} z_j (exact, no clipping of tiny probabilities)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    zy = z[np.arange(len(y)), y]
    other = z.copy()
    other[np.arange(len(y)), y] = -np.inf
    m = other.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(other - m).sum(1))
    return zy - lse


def balanced_in_masks(n_shadow: int, n_examples: int, seed: int = 0) -> np.ndarray:
    """[n_shadow, n_examples] boolean: each example IN exactly half of the shadows (Carlini's scheme)."""
    if n_shadow < MIN_SHADOWS or n_shadow % 2:
        raise ValueError(f"LiRA: n_shadow must be an even number >= {MIN_SHADOWS}, got {n_shadow}")
    rng = np.random.default_rng(seed)
    ranks = np.argsort(rng.random((n_shadow, n_examples)), axis=0)
    return ranks < n_shadow // 2


def lira_scores(target_phi, shadow_phi, in_mask, online: bool = True, fix_variance: bool = True) -> np.ndarray:
    """Lambda for each example from its target score and the shadow scores ([N_shadow, M])."""
    from scipy.stats import norm

    t = np.asarray(target_phi, dtype=np.float64)
    s = np.asarray(shadow_phi, dtype=np.float64)
    m = np.asarray(in_mask, dtype=bool)
    if s.shape != m.shape or s.shape[1] != len(t):
        raise ValueError(f"shapes disagree: target {t.shape}, shadow {s.shape}, in_mask {m.shape}")
    if (~m).sum(0).min() < 2 or (online and m.sum(0).min() < 2):
        raise ValueError("LiRA: every example needs at least 2 OUT shadows (and 2 IN shadows for the online "
                         f"attack), so that a variance exists; use >= {MIN_SHADOWS} shadows")

    def moments(sel):
        cnt = sel.sum(0)
        mu = np.where(sel, s, 0).sum(0) / np.maximum(cnt, 1)
        var = np.where(sel, (s - mu) ** 2, 0).sum(0) / np.maximum(cnt - 1, 1)
        if fix_variance:
            var = np.full_like(var, np.nanmean(var))
        return mu, np.sqrt(np.maximum(var, 1e-6))

    mu_out, sd_out = moments(~m)
    if not online:
        return (t - mu_out) / sd_out
    mu_in, sd_in = moments(m)
    return norm.logpdf(t, mu_in, sd_in) - norm.logpdf(t, mu_out, sd_out)


def run_lira(
    fit: Callable[[np.ndarray], object],
    score: Callable[[object], np.ndarray],
    n_examples: int,
    n_shadow: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train ``n_shadow`` shadow models and collect their phi on the whole population.

    fit(indices) -> model trained on those population examples (caller applies any unlearning);
    score(model) -> phi for every population example, shape [n_examples].
    Returns {"in_mask": [N, M] bool, "shadow_phi": [N, M]}; feed it to :func:`lira_attack`.
    """
    masks = balanced_in_masks(n_shadow, n_examples, seed)
    phis = []
    for i in tqdm(range(n_shadow), desc="LiRA shadows", disable=not progress, leave=False):
        model = fit(np.flatnonzero(masks[i]))
        phi = np.asarray(score(model), dtype=np.float64)
        if phi.shape != (n_examples,):
            raise ValueError(f"score() must return {n_examples} values, got shape {phi.shape}")
        phis.append(phi)
    return {"in_mask": masks, "shadow_phi": np.stack(phis)}


def lira_attack(target_phi, shadows: dict, members: np.ndarray, nonmembers: np.ndarray,
                online: bool = True, fix_variance: bool = True) -> dict:
    """AUC of LiRA between two index sets of the population (e.g. forget-train vs forget-test)."""
    lam = lira_scores(target_phi, shadows["shadow_phi"], shadows["in_mask"], online, fix_variance)
    members, nonmembers = np.asarray(members), np.asarray(nonmembers)
    return {
        "auc": roc_auc(lam[members], lam[nonmembers]),
        **{f"tpr_at_{fpr:g}_fpr": tpr_at_fpr(lam[members], lam[nonmembers], fpr) for fpr in (0.01, 0.001)},
        "online": online,
        "n_shadow": int(len(shadows["shadow_phi"])),
        "n_member": int(len(members)),
        "n_nonmember": int(len(nonmembers)),
        "scores_member": lam[members].tolist(),
        "scores_nonmember": lam[nonmembers].tolist(),
    }
