"""Confidence intervals for every audit figure.

A figure is a JSON-ready dict ``{"value", "ci95": [low, high] | None, "n", "how"}`` (see :func:`figure`):
  exact binomial            a count k of n (accuracy, recall, MIA-efficacy): Clopper-Pearson, so that 0/n
                            carries its bound (0/60: [0, 0.060]) instead of the bootstrap's [0, 0]
  bootstrap over examples   percentile bootstrap (default 1000 resamples, seeded, vectorised) of any other
                            statistic; two-sample statistics (AUC, TPR at a fixed FPR) resample each group
                            on its own; a TPR's interval also covers the exact interval of its count
  difference of two rates   Youden's J = recall - FPR: Newcombe's hybrid score interval (Wilson per rate)
  over seeds                mean of independent runs (seeds, restarts) with a Student-t interval
  retrained references      :func:`combine_references`: the mean over K reference seeds, their spread
                            ``seed_sd`` (K-1 degrees of freedom) and their sampling error ``se_mean``, from
                            which the verdict builds a t prediction interval (``audit/report.py``)
``ci95`` None: no interval is known; the verdict treats such a figure as exact.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054
N_RESAMPLES = 1000
OVER_EXAMPLES = "bootstrap over examples"
EXACT = "exact binomial (Clopper-Pearson)"
NEWCOMBE = "difference of two rates (Newcombe, Wilson score)"
OVER_SEEDS = "over seeds"
OVER_REFERENCES = "over reference seeds"
MAX_OUTCOMES = 5000  # 0/1 outcomes kept in a figure (for the paired verdict) up to this many examples


def figure(value, ci95=None, n: int | None = None, how: str | None = None, **extra) -> dict:
    """One figure with its interval (floats, so that it is JSON-ready)."""
    value = None if value is None else float(value)
    ci = None if ci95 is None else [float(ci95[0]), float(ci95[1])]
    return {"value": value, "ci95": ci, "n": None if n is None else int(n), "how": how, **extra}


def as_figure(x) -> dict | None:
    """A figure from a figure dict, a plain number (exact: no interval) or None."""
    if x is None or isinstance(x, dict):
        return x
    return figure(x)


def half_width(fig: dict | None) -> float:
    """Half the interval's width; 0 for a figure without an interval."""
    if not fig or fig.get("ci95") is None:
        return 0.0
    lo, hi = fig["ci95"]
    return (hi - lo) / 2


def standard_error(fig: dict | None) -> float:
    """The figure's sampling standard error: ``se`` where the figure says it, else half-width / 1.96."""
    if not fig:
        return 0.0
    if fig.get("se") is not None:
        return float(fig["se"])
    return half_width(fig) / Z95


# --- exact and score intervals for counts ------------------------------------------------------------

def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of k successes in n trials (the beta quantiles; as scipy's binomtest)."""
    from scipy.special import betaincinv

    alpha = (1 - level) / 2
    low = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha))
    high = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha))
    return low, high


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials."""
    p = k / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n)), min(1.0, (centre + spread) / (1 + z * z / n))


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Interval of p1 - p2 from two Wilson intervals (Newcombe 1998, method 10): sound at 0/n and n/n."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _is_binary(x: np.ndarray) -> bool:
    return bool(len(x)) and bool(np.all((x == 0) | (x == 1)))


# --- the vectorised bootstrap ------------------------------------------------------------------------

def resample(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``n_resamples`` bootstrap resamples of ``x`` as rows of an [n_resamples, len(x)] array."""
    return x[rng.integers(0, len(x), (n_resamples, len(x)))]


def bootstrap_ci(statistic: Callable[..., np.ndarray], *samples, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic; each sample is resampled on its own.

    ``statistic`` is vectorised: it takes one [B, n_i] array per sample (B resamples in rows) and returns B
    values (see :func:`batched_auc`, :func:`batched_tpr`)."""
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    if any(len(a) == 0 for a in arrays):
        raise ValueError("bootstrap_ci: every sample needs at least one example")
    rng = np.random.default_rng(seed)
    stats = np.asarray(statistic(*(resample(a, n_resamples, rng) for a in arrays)), dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def batched_auc(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row pair (higher = member, ties count 1/2): the Mann-Whitney U from average ranks."""
    from scipy.stats import rankdata

    na, nb = members.shape[1], nonmembers.shape[1]
    ranks = rankdata(np.concatenate([members, nonmembers], axis=1), axis=1)
    return (ranks[:, :na].sum(1) - na * (na + 1) / 2) / (na * nb)


def batched_tpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> np.ndarray:
    """TPR at a fixed FPR of each row pair: the threshold is the non-members' (1 - fpr) quantile (the
    next order statistic up), members strictly above it count."""
    thr = np.quantile(nonmembers, 1 - fpr, axis=1, method="higher")
    return (members > thr[:, None]).mean(1)


def _rows(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(1, -1)


# --- figures -------------------------------------------------------------------------------------------

def mean_figure(x, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Mean of per-example values (e.g. 0/1 correctness = accuracy). 0/1 values: the exact binomial interval,
    and the outcomes kept (for the paired verdict); other values: bootstrap over examples."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return figure(float("nan"), None, 0, OVER_EXAMPLES)
    if _is_binary(x):
        k, n = int(x.sum()), len(x)
        extra = {"outcomes": x.astype(int).tolist()} if n <= MAX_OUTCOMES else {}
        return figure(k / n, clopper_pearson(k, n), n, EXACT, k=k, **extra)
    ci = bootstrap_ci(lambda r: r.mean(1), x, n_resamples=n_resamples, seed=seed)
    return figure(x.mean(), ci, len(x), OVER_EXAMPLES)


def proportion_figure(share: float, n: int, seed: int = 0, n_resamples: int = N_RESAMPLES) -> dict:
    """A share of n examples (an accuracy) given as a number: the exact binomial interval of its count."""
    if not n or share is None or not np.isfinite(share):
        return figure(share, None, n, EXACT)
    k = int(round(share * n))
    return figure(share, clopper_pearson(k, n), n, EXACT, k=k)


def auc_figure(member_scores, nonmember_scores, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """ROC-AUC (higher score = member), bootstrap over members and non-members separately."""
    from promptforget.audit.mia import roc_auc

    a, b = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    ci = bootstrap_ci(batched_auc, a, b, n_resamples=n_resamples, seed=seed)
    return figure(roc_auc(a, b), ci, min(len(a), len(b)), OVER_EXAMPLES, n_member=len(a), n_nonmember=len(b))


def tpr_figure(member_scores, nonmember_scores, fpr: float, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """True-positive rate at a fixed false-positive rate, bootstrap over members and non-members, the interval
    widened to cover the exact binomial interval of the member count above the threshold (so 0/n keeps its
    bound). ``resolved`` False: fewer than 1/fpr non-members, the FPR is not measured (the verdict then says
    "unresolved")."""
    a, b = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    value = float(batched_tpr(_rows(a), _rows(b), fpr)[0])
    lo, hi = bootstrap_ci(lambda x, y: batched_tpr(x, y, fpr), a, b, n_resamples=n_resamples, seed=seed)
    k = int(round(value * len(a)))
    cp_lo, cp_hi = clopper_pearson(k, len(a))
    return figure(value, (min(lo, cp_lo), max(hi, cp_hi)), min(len(a), len(b)), OVER_EXAMPLES, fpr=fpr,
                  resolved=bool(fpr * len(b) >= 1), n_member=len(a), n_nonmember=len(b))


def youden_figure(forgotten_hits, retained_flagged, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Youden's J = recall - FPR from per-example 0/1 arrays (forgotten-class samples answered with their
    class; retained-class samples answered with a forgotten class), Newcombe's interval."""
    f, r = np.asarray(forgotten_hits, np.float64), np.asarray(retained_flagged, np.float64)
    if len(r) == 0:
        return mean_figure(f) if len(f) else figure(float("nan"), None, 0, OVER_EXAMPLES)
    k1, k2 = int(f.sum()), int(r.sum())
    return figure(f.mean() - r.mean(), newcombe(k1, len(f), k2, len(r)), len(f), NEWCOMBE, n_retain=len(r))


def max_figure(statistic: Callable[..., np.ndarray], groups: Sequence[Sequence], n_resamples: int = N_RESAMPLES,
               seed: int = 0, exact: Sequence[tuple[float, float]] = (), **extra) -> dict:
    """The largest of one statistic over groups (the worst forgotten class), with the bootstrap interval of
    the maximum itself (every group resampled at once), not the chosen group's own: choosing the group by
    its estimate biases that one upwards (the winner's curse). ``groups``: per group, the samples the
    vectorised ``statistic`` takes. ``exact``: per-group exact intervals; the upper end covers the largest."""
    def values(*resampled_groups):
        return np.max(np.stack([statistic(*g) for g in resampled_groups]), axis=0)

    point = [float(statistic(*(_rows(s) for s in g))[0]) for g in groups]
    rng = np.random.default_rng(seed)
    boot = values(*[[resample(np.asarray(s, np.float64), n_resamples, rng) for s in g] for g in groups])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    lo, hi = min(lo, max(point)), max(hi, max(point), *(e[1] for e in exact))
    n = min(len(g[0]) for g in groups)
    return figure(max(point), (lo, hi), n, OVER_EXAMPLES, worst_index=int(np.argmax(point)), **extra)


def seeds_figure(values: Sequence[float]) -> dict:
    """Mean of independent runs with a Student-t 95% interval (no interval from a single run)."""
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return figure(float("nan"), None, 0, OVER_SEEDS)
    if len(v) == 1:
        return figure(v[0], None, 1, OVER_SEEDS, values=v.tolist())
    h = t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return figure(v.mean(), (v.mean() - h, v.mean() + h), len(v), OVER_SEEDS, values=v.tolist())


def combine_references(figures: Sequence[dict | float | None], none_is_infinite: bool = False) -> dict | None:
    """One reference figure from the same figure of K references retrained with different seeds.

    value = mean over the references; seed_sd = their standard deviation (K-1 degrees of freedom; 0 for
    K = 1); se_mean = the root mean square of their own sampling errors. The interval shown is the mean's:
    +- t(K-1) sqrt(max(seed_sd^2, se_mean^2) / K). The verdict does not use it: it builds the prediction
    interval for one more training run from seed_sd, se_mean and K (``audit/report.py``).

    ``none_is_infinite``: None means "never, within the budget" (+infinity) and is kept: the value is then
    the median over the references (None when that is infinite), with no interval.
    """
    from scipy.stats import t

    figs = [as_figure(f) for f in figures]
    if none_is_infinite:
        vals = [math.inf if f is None or f.get("value") is None else f["value"] for f in figs]
        if any(math.isinf(v) for v in vals):
            med = float(np.median(vals))
            return figure(None if math.isinf(med) else med, None, None, OVER_REFERENCES, seed_sd=None,
                          seeds=[None if math.isinf(v) else v for v in vals], reference_seeds=len(vals))
    figs = [f for f in figs if f is not None and f["value"] is not None and np.isfinite(f["value"])]
    if not figs:
        return None
    v = np.array([f["value"] for f in figs])
    k = len(v)
    se_mean = math.sqrt(np.mean([standard_error(f) ** 2 for f in figs]))
    sd = float(v.std(ddof=1)) if k > 1 else 0.0
    q = t.ppf(0.975, k - 1) if k > 1 else Z95
    h = q * math.sqrt(max(sd**2, se_mean**2) / k)
    exact = all(f.get("ci95") is None for f in figs) and k == 1
    extra = {}
    outcomes = [f.get("outcomes") for f in figs]
    if all(o is not None for o in outcomes) and len({len(o) for o in outcomes}) == 1:
        extra["outcomes_by_seed"] = outcomes
    first = figs[0]
    for key in ("resolved", "fpr", "n_member", "n_nonmember"):
        if key in first:
            extra[key] = all(f.get(key) for f in figs) if key == "resolved" else first[key]
    return figure(v.mean(), None if exact else (v.mean() - h, v.mean() + h), first.get("n"), OVER_REFERENCES,
                  seed_sd=sd, se_mean=se_mean, seeds=v.tolist(), reference_seeds=k, **extra)


def paired_se(audited_outcomes, reference_outcomes: Sequence[Sequence], n_resamples: int = N_RESAMPLES,
              seed: int = 0) -> float:
    """Sampling standard error of audited - mean(references) when every model answered the same examples:
    the examples are resampled once for all models, so what they share cancels."""
    a = np.asarray(audited_outcomes, np.float64)
    r = np.asarray(reference_outcomes, np.float64).mean(0)
    idx = np.random.default_rng(seed).integers(0, len(a), (n_resamples, len(a)))
    return float((a[idx] - r[idx]).mean(1).std(ddof=1))


def roc_points(member_scores, nonmember_scores, max_points: int = 200) -> dict:
    """The ROC curve (fpr, tpr) for a log-log plot, thinned to at most ``max_points`` points."""
    a, b = np.sort(np.asarray(member_scores, np.float64)), np.sort(np.asarray(nonmember_scores, np.float64))
    thr = np.unique(np.concatenate([a, b]))[::-1]
    fpr = (len(b) - np.searchsorted(b, thr, side="left")) / len(b)
    tpr = (len(a) - np.searchsorted(a, thr, side="left")) / len(a)
    keep = np.unique(np.linspace(0, len(thr) - 1, min(max_points, len(thr))).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
