"""Linear heads solved in closed form from :class:`~promptforget.analytic.stats.ExactStats`.

Every hyper-parameter a head picks from data is computed from the statistics it is solved from, so a
forgotten example or class can no more steer it than it steers the weights:

- ``lda``: shrinkage LDA. The pooled within-class covariance, standardised to a correlation matrix, shrunk
  towards the identity by the Oracle Approximating Shrinkage coefficient (Chen et al., IEEE TSP 2010; it
  needs only the covariance and N), one Cholesky solve for every class mean. Log class priors from counts.
- ``ridge``: one-vs-rest ridge regression on standardised, centred features with one-hot targets; lambda
  by generalised cross-validation (Golub et al., 1979) over a log grid, from one eigendecomposition.

Scores are ``x @ weight.T + bias`` on the dequantised features; only classes with examples get a row.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from promptforget.analytic.stats import ExactStats

HEADS = ("lda", "ridge")
RIDGE_GRID = np.logspace(-4, 2, 25)  # times the mean eigenvalue of the standardised scatter


def solve(stats: ExactStats, head: str, scale_bits: int, shrinkage: float | None = None,
          ridge_lambda: float | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(weight [K, D], bias [K], info)`` for the K classes with examples, in the statistics' order."""
    active = np.flatnonzero(stats.counts > 0)
    if len(active) < 2:
        raise ValueError("a classifier needs examples of at least two classes")
    s = 2.0**-scale_bits
    n_c = stats.counts[active].astype(np.float64)
    n = float(n_c.sum())
    means = stats.sums[active].astype(np.float64) * s / n_c[:, None]  # [K, D]
    second = stats.gram.astype(np.float64) * (s * s)  # sum of x x^T over every example
    if head == "lda":
        return _lda(second, means, n_c, n, shrinkage)
    if head == "ridge":
        return _ridge(second, means, n_c, n, ridge_lambda)
    raise ValueError(f"unknown head {head!r}; choose from {HEADS}")


def _standardise(scatter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature scale (constant features get 1) and the correlation-scale scatter."""
    d = np.sqrt(np.clip(np.diag(scatter), 0.0, None))
    d[d <= 1e-12 * max(float(d.max(initial=0.0)), 1e-300)] = 1.0
    return d, scatter / np.outer(d, d)


def oas_shrinkage(cov: np.ndarray, n: float) -> float:
    """Oracle Approximating Shrinkage towards ``mean(diag) * I`` (as sklearn.covariance.oas)."""
    p = cov.shape[0]
    mu = np.trace(cov) / p
    alpha = float(np.mean(cov**2))
    den = (n + 1.0) * (alpha - mu * mu / p)
    return 1.0 if den <= 0 else float(min((alpha + mu * mu) / den, 1.0))


def _lda(second, means, n_c, n, shrinkage):
    k = len(n_c)
    if n <= k:
        raise ValueError(f"LDA needs more examples ({int(n)}) than classes ({k})")
    within = (second - (means * n_c[:, None]).T @ means) / (n - k)
    d, corr = _standardise(within)
    rho = oas_shrinkage(corr, n) if shrinkage is None else float(shrinkage)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {rho}")
    target = np.trace(corr) / len(corr)
    shrunk = (1.0 - rho) * corr
    shrunk[np.diag_indices_from(shrunk)] += rho * target
    z = means / d  # class means in the standardised space
    wz = cho_solve(cho_factor(shrunk, lower=True), z.T).T  # [K, D]
    bias = -0.5 * np.einsum("kd,kd->k", z, wz) + np.log(n_c / n)
    return wz / d, bias, {"head": "lda", "shrinkage": rho}


def _ridge(second, means, n_c, n, ridge_lambda):
    mean = (means * n_c[:, None]).sum(0) / n
    scatter = second - n * np.outer(mean, mean)  # centred
    d, z = _standardise(scatter)
    xy = ((means - mean) * n_c[:, None]).T / d[:, None]  # centred X^T Y for one-hot Y, [D, K]
    yy = n_c - n_c**2 / n  # centred Y^T Y per class
    evals, vecs = np.linalg.eigh(z)
    evals = np.clip(evals, 0.0, None)
    proj = vecs.T @ xy  # [D, K]
    scale = float(evals.mean()) or 1.0
    if ridge_lambda is None:
        best = None
        for lam in RIDGE_GRID * scale:
            f = evals / (evals + lam)
            # ||Y - X B||^2 with B = V diag(1/(e+lam)) V^T X^T Y, from the eigenbasis alone
            rss = float(np.sum(yy) - np.sum(proj**2 * ((evals + 2 * lam) / (evals + lam) ** 2)[:, None]))
            df = float(f.sum()) + 1.0
            gcv = (rss / n) / (1.0 - df / n) ** 2 if df < n else np.inf
            if best is None or gcv < best[0]:
                best = (gcv, float(lam))
        lam = best[1]
    else:
        lam = float(ridge_lambda)
        if lam <= 0:
            raise ValueError(f"ridge_lambda must be > 0, got {lam}")
    coef = vecs @ (proj / (evals + lam)[:, None])  # [D, K], standardised space
    weight = (coef / d[:, None]).T
    bias = n_c / n - weight @ mean
    return weight, bias, {"head": "ridge", "ridge_lambda": lam}
