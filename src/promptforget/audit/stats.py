"""Confidence intervals for every audit figure.

A figure is a JSON-ready dict ``{"value", "ci95": [low, high] | None, "n", "how"}`` (see :func:`figure`):
  bootstrap over examples   percentile bootstrap (default 1000 resamples, seeded) of the statistic; two-sample
                            statistics (AUC, TPR at a fixed FPR, Youden's J) resample each group separately
  over seeds                mean of independent runs (seeds, restarts) with a Student-t interval
  retrained references      the mean over reference seeds (:func:`combine_references`), whose interval joins the
                            references' own sampling error and their seed-to-seed spread (kept as ``seed_sd``)
``ci95`` None: no interval is known; the verdict treats such a figure as exact.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from promptforget.audit.mia import roc_auc, tpr_at_fpr

Z95 = 1.959963984540054
N_RESAMPLES = 1000
OVER_EXAMPLES = "bootstrap over examples"
OVER_SEEDS = "over seeds"
OVER_REFERENCES = "over reference seeds"


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


def bootstrap_ci(statistic: Callable[..., float], *samples, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)``; each sample is resampled on its own."""
    arrays = [np.asarray(s) for s in samples]
    if any(len(a) == 0 for a in arrays):
        raise ValueError("bootstrap_ci: every sample needs at least one example")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        stats[b] = statistic(*(a[rng.integers(0, len(a), len(a))] for a in arrays))
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def mean_figure(x, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Mean of per-example values (e.g. 0/1 correctness = accuracy), bootstrap over examples."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return figure(float("nan"), None, 0, OVER_EXAMPLES)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_resamples, len(x)))].mean(1)
    return figure(x.mean(), np.quantile(means, [0.025, 0.975]), len(x), OVER_EXAMPLES)


def proportion_figure(share: float, n: int, seed: int = 0, n_resamples: int = N_RESAMPLES) -> dict:
    """A share of n examples (an accuracy) given as a number: the same bootstrap as over its 0/1 outcomes."""
    if not n or share is None or not np.isfinite(share):
        return figure(share, None, n, OVER_EXAMPLES)
    k = int(round(share * n))
    return mean_figure(np.r_[np.ones(k), np.zeros(n - k)], n_resamples, seed)


def auc_figure(member_scores, nonmember_scores, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """ROC-AUC (higher score = member), bootstrap over members and non-members separately."""
    a, b = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    ci = bootstrap_ci(roc_auc, a, b, n_resamples=n_resamples, seed=seed)
    return figure(roc_auc(a, b), ci, min(len(a), len(b)), OVER_EXAMPLES, n_member=len(a), n_nonmember=len(b))


def tpr_figure(member_scores, nonmember_scores, fpr: float, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """True-positive rate at a fixed false-positive rate, bootstrap over members and non-members.
    Below 1/n_nonmember the threshold is the largest non-member score (the figure is then an upper bound)."""
    a, b = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    ci = bootstrap_ci(lambda x, y: tpr_at_fpr(x, y, fpr), a, b, n_resamples=n_resamples, seed=seed)
    return figure(tpr_at_fpr(a, b, fpr), ci, min(len(a), len(b)), OVER_EXAMPLES, fpr=fpr,
                  resolved=bool(fpr * len(b) >= 1))


def youden_figure(forgotten_hits, retained_flagged, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Youden's J = recall - FPR from per-example 0/1 arrays (forgotten-class samples answered with their
    class; retained-class samples answered with a forgotten class), bootstrap over both sets."""
    f, r = np.asarray(forgotten_hits, np.float64), np.asarray(retained_flagged, np.float64)
    if len(r) == 0:
        return figure(f.mean() if len(f) else float("nan"), None, len(f), OVER_EXAMPLES)
    ci = bootstrap_ci(lambda x, y: x.mean() - y.mean(), f, r, n_resamples=n_resamples, seed=seed)
    return figure(f.mean() - r.mean(), ci, len(f), OVER_EXAMPLES)


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


def combine_references(figures: Sequence[dict | float | None]) -> dict | None:
    """One reference figure from the same figure of K references retrained with different seeds.

    value = mean over the references; seed_sd = their standard deviation (0 for K = 1); the interval is that
    of the mean: +-1.96 sqrt(mean_k se_k^2 / K + seed_sd^2 / K), se_k = each reference's half-width / 1.96.
    The verdict adds seed_sd^2 once more: the audited model is one training run, and is compared with the
    spread of single retrained runs (a prediction interval), not only with their mean.
    """
    figs = [as_figure(f) for f in figures]
    figs = [f for f in figs if f is not None and f["value"] is not None and np.isfinite(f["value"])]
    if not figs:
        return None
    v = np.array([f["value"] for f in figs])
    k = len(v)
    se2 = np.mean([(half_width(f) / Z95) ** 2 for f in figs])
    sd = float(v.std(ddof=1)) if k > 1 else 0.0
    h = Z95 * math.sqrt(se2 / k + sd**2 / k)
    exact = all(f.get("ci95") is None for f in figs) and k == 1
    return figure(v.mean(), None if exact else (v.mean() - h, v.mean() + h), figs[0].get("n"), OVER_REFERENCES,
                  seed_sd=sd, seeds=v.tolist(), reference_seeds=k)


def roc_points(member_scores, nonmember_scores, max_points: int = 200) -> dict:
    """The ROC curve (fpr, tpr) for a log-log plot, thinned to at most ``max_points`` points."""
    a, b = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    thr = np.unique(np.concatenate([a, b]))[::-1]
    fpr = np.array([(b >= t).mean() for t in thr])
    tpr = np.array([(a >= t).mean() for t in thr])
    keep = np.unique(np.linspace(0, len(thr) - 1, min(max_points, len(thr))).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
