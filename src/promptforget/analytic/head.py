"""Linear heads solved in closed form from :class:`~promptforget.analytic.stats.ExactStats`.

Every hyper-parameter a head picks from data is computed from the statistics it is solved from, so a
forgotten example or class can no more steer it than it steers the weights:

- ``lda``: shrinkage LDA. The pooled within-class covariance, standardised to a correlation matrix, shrunk
  towards the identity by the Oracle Approximating Shrinkage coefficient (Chen et al., IEEE TSP 2010; it
  needs only the covariance and N), one Cholesky solve for every class mean. Log class priors from counts.
- ``ridge``: one-vs-rest ridge regression on standardised, centred features with one-hot targets; lambda
  by modified generalised cross-validation (Golub et al., 1979; ``GCV_DF_WEIGHT``) over a log grid, from one tridiagonal reduction
  (each lambda is then a tridiagonal solve).

Scores are ``x @ weight.T + bias`` on the dequantised features; only classes with examples get a row.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, eigvalsh_tridiagonal, lapack

from promptforget.analytic.stats import ExactStats

HEADS = ("lda", "ridge")
RIDGE_GRID = np.logspace(-4, 2, 25)  # times the mean eigenvalue of the standardised scatter
# Modified GCV (Cummins, Filloon & Nychka, JASA 2001; rho = 1.4 after Kim & Gu, JRSS-B 2004): the degrees of
# freedom weigh rho times, so a lambda that nearly interpolates the training set (df close to N) is not
# chosen. Plain GCV (rho = 1) does choose it when features outnumber examples, and on BBC News with 500 or
# 1,000 training articles at 1,152 features that cost 6-18 points (benchmarks/analytic_small_n.py).
GCV_DF_WEIGHT = 1.4


def solve(stats: ExactStats, head: str, scale_bits: int, shrinkage: float | None = None,
          ridge_lambda: float | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(weight [K, D], bias [K], info)`` for the K classes with examples, in the statistics' order.

    BLAS runs on one thread here: its results then do not depend on how many threads a process has
    (a train and a later forget must write the same bytes), and at D ~ 1,000 a second thread made the
    solve slower on 2 cores, not faster (docs/performance.md)."""
    with _one_blas_thread():
        return _solve(stats, head, scale_bits, shrinkage, ridge_lambda)


_BLAS = None


def _one_blas_thread():
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()  # numpy's and scipy's OpenBLAS, both loaded by now
    return _BLAS.limit(limits=1, user_api="blas")


def _solve(stats, head, scale_bits, shrinkage, ridge_lambda):
    active = np.flatnonzero(stats.counts > 0)
    if len(active) < 2:
        raise ValueError("a classifier needs examples of at least two classes")
    s = 2.0**-scale_bits
    n_c = stats.counts[active].astype(np.float64)
    n = float(n_c.sum())
    means = stats.sums[active].astype(np.float64) * s / n_c[:, None]  # [K, D]
    second = stats.gram * (s * s)  # float64: sum of x x^T over every example
    if head == "lda":
        return _lda(second, means, n_c, n, shrinkage)
    if head == "ridge":
        return _ridge(second, means, n_c, n, ridge_lambda)
    raise ValueError(f"unknown head {head!r}; choose from {HEADS}")


def _standardise(scatter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature scale (constant features get 1) and the correlation-scale scatter, in place: at
    D = 1,000 every D x D temporary costs milliseconds a forget need not spend."""
    d = np.sqrt(np.clip(np.diag(scatter), 0.0, None))
    d[d <= 1e-12 * max(float(d.max(initial=0.0)), 1e-300)] = 1.0
    scatter /= d[:, None]
    scatter /= d[None, :]
    return d, scatter


def oas_shrinkage(cov: np.ndarray, n: float) -> float:
    """Oracle Approximating Shrinkage towards ``mean(diag) * I`` (as sklearn.covariance.oas)."""
    p = cov.shape[0]
    mu = np.trace(cov) / p
    alpha = float(np.vdot(cov, cov)) / cov.size  # mean(cov**2) without a D x D temporary
    den = (n + 1.0) * (alpha - mu * mu / p)
    return 1.0 if den <= 0 else float(min((alpha + mu * mu) / den, 1.0))


def _lda(second, means, n_c, n, shrinkage):
    k = len(n_c)
    if n <= k:
        raise ValueError(f"LDA needs more examples ({int(n)}) than classes ({k})")
    within = second  # solve's own array: updated in place
    within -= (means * n_c[:, None]).T @ means
    within /= n - k
    d, corr = _standardise(within)
    rho = oas_shrinkage(corr, n) if shrinkage is None else float(shrinkage)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {rho}")
    target = np.trace(corr) / len(corr)
    shrunk = corr
    shrunk *= 1.0 - rho
    shrunk[np.diag_indices_from(shrunk)] += rho * target
    z = means / d  # class means in the standardised space
    # shrunk is symmetric: its transpose is the Fortran-order array LAPACK factors without a copy
    factor = cho_factor(shrunk.T, lower=True, overwrite_a=True, check_finite=False)
    wz = cho_solve(factor, z.T, check_finite=False).T  # [K, D]
    bias = -0.5 * np.einsum("kd,kd->k", z, wz) + np.log(n_c / n)
    return wz / d, bias, {"head": "lda", "shrinkage": rho}


def _reflect(reflectors: np.ndarray, tau: np.ndarray, x: np.ndarray, trans: str) -> np.ndarray:
    """Q^T x (``trans="T"``) or Q x (``"N"``) for the Q of ``dsytrd(lower=1)``: diag(1, the Q of a QR
    factorisation whose reflectors are ``a[1:, :-1]``), which is how LAPACK's own ``dormtr`` applies it."""
    out = x.copy()
    if len(x) > 1:
        r, _, info = lapack.dormqr("L", trans, reflectors, tau, x[1:], max(1, x.shape[1]) * 64)
        if info != 0:
            raise RuntimeError(f"LAPACK dormqr failed (info {info})")
        out[1:] = r
    return out


def _ridge(second, means, n_c, n, ridge_lambda):
    mean = (means * n_c[:, None]).sum(0) / n
    scatter = second  # solve's own array: centred in place
    scatter -= np.outer(n * mean, mean)
    d, z = _standardise(scatter)
    xy = ((means - mean) * n_c[:, None]).T / d[:, None]  # centred X^T Y for one-hot Y, [D, K]
    yy = float(np.sum(n_c - n_c**2 / n))  # centred Y^T Y, summed over classes
    # z = Q T Q^T with T tridiagonal: a third of an eigendecomposition's work, and every lambda of the
    # grid is then a tridiagonal solve. B = (z + lam)^-1 X^T Y = Q (T + lam)^-1 Q^T X^T Y.
    lwork, info = lapack.dsytrd_lwork(len(z), lower=1)
    # z is symmetric, so its transpose is the same matrix in the Fortran order LAPACK wants (no copy).
    a, diag, off, tau, info = lapack.dsytrd(z.T, lower=1, lwork=max(int(lwork), 1), overwrite_a=1)
    if info != 0:
        raise RuntimeError(f"LAPACK dsytrd failed (info {info})")
    reflectors = np.asfortranarray(a[1:, :-1])  # one copy for both products with Q
    c = _reflect(reflectors, tau, xy, "T")

    cf = np.asfortranarray(c)

    def solve_t(lam: float) -> np.ndarray | None:
        if len(diag) == 1:
            return c / (diag[0] + lam) if diag[0] + lam > 0 else None
        *_, b, info = lapack.dptsv(diag + lam, off, cf)  # T + lam is positive definite: LDL^T, no pivoting
        if info != 0:
            *_, b, info = lapack.dgtsv(off, diag + lam, off, cf)
        return b if info == 0 else None  # None: (T + lam) numerically singular

    scale = float(np.mean(diag)) or 1.0  # the mean eigenvalue: trace / D
    if ridge_lambda is None:
        evals = np.clip(eigvalsh_tridiagonal(diag, off, check_finite=False) if len(diag) > 1 else diag, 0.0, None)
        best = None
        for lam in RIDGE_GRID * scale:
            b = solve_t(float(lam))
            if b is None:
                continue
            rss = yy - float(np.sum(c * b)) - lam * float(np.sum(b * b))  # ||Y - X B||^2 from the statistics
            df = float(np.sum(evals / (evals + lam))) + 1.0
            gcv = (rss / n) / (1.0 - GCV_DF_WEIGHT * df / n) ** 2 if GCV_DF_WEIGHT * df < n else np.inf
            if best is None or gcv < best[0]:
                best = (gcv, float(lam))
        if best is None:
            raise ValueError("ridge: the scatter matrix is singular at every lambda of the grid")
        lam = best[1]
    else:
        lam = float(ridge_lambda)
        if lam <= 0:
            raise ValueError(f"ridge_lambda must be > 0, got {lam}")
    b = solve_t(lam)
    if b is None:
        raise ValueError(f"ridge: the scatter matrix plus lambda {lam} is singular")
    coef = _reflect(reflectors, tau, b, "N")  # [D, K], standardised space
    weight = (coef / d[:, None]).T
    bias = n_c / n - weight @ mean
    return weight, bias, {"head": "ridge", "ridge_lambda": lam}
