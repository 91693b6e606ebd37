"""Per-example likelihood-ratio membership attack (LiRA, Carlini et al. IEEE S&P 2022).

Shadow models are trained on random halves of a population; each population example is therefore
IN about half of them and OUT of the others. For a target model and example x:

  phi(x)   = log p_y - log(1 - p_y)  (logit-scaled confidence, roughly Gaussian across models)
  online   Lambda(x) = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)
  offline  Lambda(x) = (phi - mu_out) / s_out   (one-sided: only OUT shadows are needed)

Higher Lambda = more likely a member. With few shadows the per-example variances are noisy, so
``fix_variance`` (default) uses one variance pooled over all examples, as the paper recommends. Fewer than
:data:`MIN_SHADOWS` shadows (2 per side) are refused: with one shadow a side the variance is undefined.

U-LiRA (Hayes et al. 2024) is the same test applied to unlearned models (:func:`ulira_plan`,
:func:`run_ulira`, :func:`ulira_attack`): "in" shadows are trained with x and then unlearn it, "out" shadows
are retrained without it; per example, one Gaussian of phi from each side. The target is the unlearned
model; its positives are the examples it was trained on and unlearned, its negatives held-out examples of
the same population, scored on the same unlearned model. An unlearning as good as retraining scores 0.5.
For class forgetting (:func:`promptforget.audit.pfm_audit.pfm_ulira`) the population is the forgotten
class's examples, training and held-out: each "in" shadow trains on the retained data plus a balanced
random half of them and then forgets the class; each "out" shadow is retrained without the class.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from promptforget.audit.mia import roc_auc, tpr_at_fpr

SCALE_EPS = 1e-12
MIN_SHADOWS = 4
MIN_ULIRA_SHADOWS = 8  # 4 "in" (each example trained in 2 of them) and 4 "out"


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


def lira_scores(target_phi, shadow_phi, in_mask, online: bool = True, fix_variance: bool = True,
                out_mask=None, min_per_side: int = 2) -> np.ndarray:
    """Lambda for each example from its target score and the shadow scores ([N_shadow, M]). ``out_mask``:
    the OUT shadows of each example (default: every shadow not IN); a shadow in neither is not used."""
    from scipy.stats import norm

    t = np.asarray(target_phi, dtype=np.float64)
    s = np.asarray(shadow_phi, dtype=np.float64)
    m = np.asarray(in_mask, dtype=bool)
    o = ~m if out_mask is None else np.broadcast_to(np.asarray(out_mask, dtype=bool), m.shape)
    if s.shape != m.shape or s.shape[1] != len(t):
        raise ValueError(f"shapes disagree: target {t.shape}, shadow {s.shape}, in_mask {m.shape}")
    if o.sum(0).min() < min_per_side or (online and m.sum(0).min() < min_per_side):
        raise ValueError("LiRA: every example needs at least 2 OUT shadows (and 2 IN shadows for the online "
                         f"attack), so that a variance exists; use >= {MIN_SHADOWS} shadows")

    def moments(sel):
        cnt = sel.sum(0)
        mu = np.where(sel, s, 0).sum(0) / np.maximum(cnt, 1)
        var = np.where(cnt >= 2, np.where(sel, (s - mu) ** 2, 0).sum(0) / np.maximum(cnt - 1, 1), np.nan)
        if fix_variance or np.isnan(var).any():
            var = np.full_like(var, np.nanmean(var) if np.isfinite(var).any() else 1.0)
        return mu, np.sqrt(np.maximum(var, 1e-6))

    mu_out, sd_out = moments(o)
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


def ulira_plan(n_shadow: int, n_examples: int, seed: int = 0) -> dict:
    """Which shadows are "in" and which population examples each trains on: the even shadows are "in",
    each trained on a balanced random half of the population (every example in exactly half of the "in"
    shadows) and then unlearned; the odd ones "out", trained on none of it."""
    if n_shadow < MIN_ULIRA_SHADOWS or n_shadow % 2:
        raise ValueError(f"U-LiRA needs an even number of shadows >= {MIN_ULIRA_SHADOWS} (half in, half out), "
                         f"got {n_shadow}")
    is_in = np.arange(n_shadow) % 2 == 0
    trained = np.zeros((n_shadow, n_examples), bool)
    trained[is_in] = balanced_in_masks(int(is_in.sum()), n_examples, seed)
    return {"is_in": is_in, "trained": trained}


def run_ulira(fit_unlearn: Callable[[np.ndarray, bool], object], score: Callable[[object], np.ndarray],
              n_examples: int, n_shadow: int = 16, seed: int = 0, progress: bool = True) -> dict:
    """Train the U-LiRA shadows and collect their phi on the population.

    ``fit_unlearn(indices, is_in)`` -> a shadow trained on the data outside the population plus those
    population examples (none for an "out" shadow), after the unlearning under test (for an "in" shadow;
    for class forgetting every shadow also drops the class's key). ``score(model)`` -> phi, [n_examples].
    Returns the plan, ``shadow_phi`` and the per-example ``in_mask`` / ``out_mask`` for :func:`ulira_attack`.
    """
    plan = ulira_plan(n_shadow, n_examples, seed)
    phis = []
    for i in tqdm(range(n_shadow), desc="U-LiRA shadows", disable=not progress, leave=False):
        phi = np.asarray(score(fit_unlearn(np.flatnonzero(plan["trained"][i]), bool(plan["is_in"][i]))), np.float64)
        if phi.shape != (n_examples,):
            raise ValueError(f"score() must return {n_examples} values, got shape {phi.shape}")
        phis.append(phi)
    in_mask = plan["trained"] & plan["is_in"][:, None]
    out_mask = np.repeat(~plan["is_in"][:, None], n_examples, axis=1)
    return {**plan, "shadow_phi": np.stack(phis), "in_mask": in_mask, "out_mask": out_mask}


def ulira_attack(target_phi, shadows: dict, members, nonmembers, n_resamples: int = 200, seed: int = 0) -> dict:
    """U-LiRA's AUC and TPR at 1% / 0.1% FPR, members (examples the target unlearned) against non-members
    (held-out examples), both scored on the target. The intervals bootstrap the models as well as the
    examples: each resample redraws the "in" and the "out" shadows (with replacement, within their side),
    refits the Gaussians, and redraws members and non-members."""
    from promptforget.audit import stats

    t = np.asarray(target_phi, np.float64)
    s, m, o = shadows["shadow_phi"], shadows["in_mask"], shadows["out_mask"]
    members, nonmembers = np.asarray(members), np.asarray(nonmembers)
    lam = lira_scores(t, s, m, out_mask=o)
    sides = [np.flatnonzero(shadows["is_in"]), np.flatnonzero(~shadows["is_in"])]
    rng = np.random.default_rng(seed)
    boot = np.empty((n_resamples, len(t)))
    for b in range(n_resamples):  # one Gaussian refit per resample, vectorised over examples
        for _ in range(100):  # redraw until every example keeps at least one shadow a side
            idx = np.concatenate([rng.choice(side, len(side)) for side in sides])
            if m[idx].sum(0).min() >= 1 and o[idx].sum(0).min() >= 1:
                break
        boot[b] = lira_scores(t, s[idx], m[idx], out_mask=o[idx], min_per_side=1)
    mem = boot[:, members][np.arange(n_resamples)[:, None], rng.integers(0, len(members), (n_resamples, len(members)))]
    non = boot[:, nonmembers][np.arange(n_resamples)[:, None],
                              rng.integers(0, len(nonmembers), (n_resamples, len(nonmembers)))]
    lm, ln = lam[members], lam[nonmembers]
    n = min(len(lm), len(ln))
    how = "bootstrap over shadow models and examples"
    out = {"auc": stats.figure(roc_auc(lm, ln), np.quantile(stats.batched_auc(mem, non), [0.025, 0.975]), n, how,
                               n_member=len(lm), n_nonmember=len(ln))}
    for fpr in (0.01, 0.001):
        value = tpr_at_fpr(lm, ln, fpr)
        lo, hi = np.quantile(stats.batched_tpr(mem, non, fpr), [0.025, 0.975])
        cp = stats.clopper_pearson(int(round(value * len(lm))), len(lm))
        out[f"tpr_at_{fpr:g}_fpr"] = stats.figure(value, (min(lo, cp[0]), max(hi, cp[1])), n, how, fpr=fpr,
                                                  resolved=bool(fpr * len(ln) >= 1), n_member=len(lm),
                                                  n_nonmember=len(ln))
    out["roc"] = stats.roc_points(lm, ln)
    out["scores_member"], out["scores_nonmember"] = lm.tolist(), ln.tolist()
    return out
