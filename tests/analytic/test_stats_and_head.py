"""Exact integer statistics (no overflow at 10**7 extreme examples, order-free, exact subtraction) and the
closed-form heads (ridge = sklearn's Ridge at the GCV lambda; LDA's OAS = sklearn's oas)."""

from __future__ import annotations

import numpy as np
import pytest

from promptforget.analytic.features import project, projection_matrix
from promptforget.analytic.head import oas_shrinkage, solve
from promptforget.analytic.stats import MAX_ABS_Q, MAX_EXAMPLES, ExactStats, dequantize, exact_gram, quantize


def test_gram_is_exact_for_ten_million_extreme_examples():
    n = 10**7
    q = np.empty((n, 3), dtype=np.int32)
    q[:, 0], q[:, 1], q[:, 2] = MAX_ABS_Q, -MAX_ABS_Q, MAX_ABS_Q - 1
    g = exact_gram(q)
    want = [[n * int(a) * int(b) for b in q[0]] for a in q[0]]  # Python integers: no overflow
    assert g.tolist() == want
    assert n <= MAX_EXAMPLES


def test_quantize_clips_to_the_bound():
    q = quantize(np.array([[1e9, -1e9, 0.5, -0.25]]), 12)
    assert q.tolist() == [[MAX_ABS_Q, -MAX_ABS_Q, 2048, -1024]]
    assert dequantize(q, 12)[0, 2] == 0.5


def test_statistics_are_order_free_and_subtract_exactly():
    rng = np.random.default_rng(0)
    q = rng.integers(-MAX_ABS_Q, MAX_ABS_Q + 1, size=(500, 16)).astype(np.int32)
    y = rng.integers(0, 4, 500)
    full = ExactStats.of_rows(q, y, 4)
    perm = rng.permutation(500)
    shuffled = ExactStats.of_rows(q[perm], y[perm], 4)
    drop = rng.random(500) < 0.2
    rest = full.minus(q[drop], y[drop])
    direct = ExactStats.of_rows(q[~drop], y[~drop], 4)
    for a, b in ((full, shuffled), (rest, direct)):
        assert np.array_equal(a.counts, b.counts) and np.array_equal(a.sums, b.sums) and np.array_equal(a.gram, b.gram)


def test_too_many_examples_are_refused(monkeypatch):
    import promptforget.analytic.stats as stats

    assert MAX_EXAMPLES * MAX_ABS_Q**2 < 2**63  # the bound that makes the refusal the only failure mode
    monkeypatch.setattr(stats, "MAX_EXAMPLES", 1)
    with pytest.raises(ValueError, match="at most"):
        ExactStats.of_rows(np.zeros((2, 2), np.int32), np.zeros(2, int), 2)


def data(seed=0, n=400, d=12, c=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(c, d))[y]
    q = quantize(x, 12)
    return q, y, dequantize(q, 12)


@pytest.mark.parametrize("d", [1, 2, 12])
def test_ridge_equals_sklearn_at_the_gcv_lambda(d):
    from sklearn.linear_model import Ridge

    q, y, x = data(d=d)
    w, b, info = solve(ExactStats.of_rows(q, y, 3), "ridge", 12)
    z = (x - x.mean(0)) / (x.std(0) * np.sqrt(len(x)))  # the head's standardisation: unit column norms
    ref = Ridge(alpha=info["ridge_lambda"]).fit(z, np.eye(3)[y])
    np.testing.assert_allclose(x @ w.T + b, ref.predict(z), atol=1e-9)


@pytest.mark.parametrize("n, d", [(120, 30), (40, 60)])  # and more features than examples
def test_ridge_gcv_picks_the_minimum_of_a_direct_computation(n, d):
    q, y, x = data(1, n=n, d=d)
    _, _, info = solve(ExactStats.of_rows(q, y, 3), "ridge", 12)
    z = (x - x.mean(0)) / (x.std(0) * np.sqrt(len(x)))
    yc = np.eye(3)[y] - np.eye(3)[y].mean(0)

    def gcv(lam):  # modified GCV: the degrees of freedom (with the intercept) weigh 1.4 times
        h = z @ np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T)
        df = 1.4 * (np.trace(h) + 1)
        return np.sum((yc - h @ yc) ** 2) / len(y) / (1 - df / len(y)) ** 2 if df < len(y) else np.inf

    from promptforget.analytic.head import RIDGE_GRID

    grid = RIDGE_GRID * np.linalg.eigvalsh(z.T @ z).mean()
    assert info["ridge_lambda"] == pytest.approx(grid[int(np.argmin([gcv(g) for g in grid]))])


def test_lda_shrinkage_is_sklearns_oas_and_it_classifies():
    from sklearn.covariance import oas

    q, y, x = data(2)
    w, b, info = solve(ExactStats.of_rows(q, y, 3), "lda", 12)
    centred = x - np.stack([x[y == c].mean(0) for c in range(3)])[y]
    cov = centred.T @ centred / (len(x) - 3)
    d = np.sqrt(np.diag(cov))
    corr = cov / np.outer(d, d)
    assert info["shrinkage"] == pytest.approx(oas_shrinkage(corr, len(x)))
    # sklearn's oas on data whose empirical covariance is corr, same n: same coefficient
    _, rho = oas(np.linalg.cholesky(corr * len(x)).T)
    assert oas_shrinkage(corr, len(x)) == pytest.approx(rho, rel=1e-6)
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    sk = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y).score(x, y)
    assert ((x @ w.T + b).argmax(1) == y).mean() >= sk - 0.02


def test_a_class_without_examples_gets_no_head_row():
    q, y, _ = data(3)
    stats = ExactStats.of_rows(q[y != 1], y[y != 1], 3)
    w, b, _ = solve(stats, "lda", 12)
    assert w.shape[0] == 2 and b.shape == (2,)


def test_projection_is_exact_seeded_and_bounded():
    r, shift = projection_matrix(64, 500, seed=7)
    r2, _ = projection_matrix(64, 500, seed=7)
    assert np.array_equal(r, r2) and not np.array_equal(r, projection_matrix(64, 500, seed=8)[0])
    q = np.full((2, 64), MAX_ABS_Q, np.int32)
    q[1] = -MAX_ABS_Q
    h = project(q, r, shift)
    assert h.max() <= MAX_ABS_Q and h.min() >= 0
    exact = np.maximum(q.astype(object) @ r.astype(object), 0)
    assert np.array_equal(h, np.array([[int(v) >> shift for v in row] for row in exact]))
