"""LiRA on a toy population where memorisation is the only signal."""

import numpy as np
import pytest

from promptforget.audit import lira


def test_scaled_scores():
    p = np.array([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]])
    y = np.array([0, 1])
    np.testing.assert_allclose(lira.scaled_confidence(p, y), [0.0, np.log(0.05 / 0.95)])
    z = np.log(p)
    np.testing.assert_allclose(lira.scaled_logit(z, y), lira.scaled_confidence(p, y), atol=1e-9)


def test_balanced_masks():
    m = lira.balanced_in_masks(6, 50, seed=0)
    assert m.shape == (6, 50) and np.all(m.sum(0) == 3)
    with pytest.raises(ValueError, match="even"):
        lira.balanced_in_masks(3, 10)


def test_lira_scores_gaussian_case():
    """IN scores ~ N(2, 1), OUT ~ N(0, 1): the online score is the exact Gaussian log-ratio."""
    rng = np.random.default_rng(0)
    masks = lira.balanced_in_masks(64, 200, seed=1)
    shadow = np.where(masks, rng.normal(2, 1, masks.shape), rng.normal(0, 1, masks.shape))
    t = np.array([2.0, 0.0])
    lam = lira.lira_scores(t, shadow[:, :2], masks[:, :2])
    assert lam[0] == pytest.approx(2.0, abs=0.6) and lam[1] == pytest.approx(-2.0, abs=0.6)  # +-mu^2/2
    off = lira.lira_scores(t, shadow[:, :2], masks[:, :2], online=False)
    assert off[0] > off[1]
    with pytest.raises(ValueError, match="shapes"):
        lira.lira_scores(t, shadow, masks)


def _toy_population(n=80, d=60, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, c, n)  # random labels: only memorisation helps


def test_run_lira_detects_memorisation_and_not_random_scores():
    from sklearn.linear_model import LogisticRegression

    x, y = _toy_population()

    def fit(idx):  # d > n: logistic regression interpolates its training labels
        return LogisticRegression(C=100, max_iter=500).fit(x[idx], y[idx])

    def score(m):
        logp = np.full((len(y), 4), -50.0)
        logp[:, m.classes_] = m.predict_log_proba(x)
        return lira.scaled_logit(logp, y)

    shadows = lira.run_lira(fit, score, len(y), n_shadow=8, seed=0, progress=False)
    target_in = np.random.default_rng(5).permutation(len(y))[:40]
    target_out = np.setdiff1d(np.arange(len(y)), target_in)
    target = score(fit(target_in))
    r = lira.lira_attack(target, shadows, target_in, target_out)
    assert r["auc"] > 0.95, r["auc"]
    assert lira.lira_attack(target, shadows, target_in, target_out, online=False)["auc"] > 0.9
    noise = np.random.default_rng(3).normal(size=len(y))
    assert abs(lira.lira_attack(noise, shadows, target_in, target_out)["auc"] - 0.5) < 0.2


def test_pooled_variance_scales_the_likelihood_ratio():
    """IN ~ N(2, 0.1^2), OUT ~ N(0, 0.1^2): at phi = 2 the log-ratio is (2 / 0.1)^2 / 2 = 200, not 2 (which a
    variance of 1 would give); the offline score is (phi - mu_out) / s_out = 20."""
    rng = np.random.default_rng(0)
    masks = lira.balanced_in_masks(32, 100, seed=0)
    shadow = np.where(masks, rng.normal(2, 0.1, masks.shape), rng.normal(0, 0.1, masks.shape))
    t = np.full(100, 2.0)
    assert np.median(lira.lira_scores(t, shadow, masks)) == pytest.approx(200, rel=0.15)
    assert np.median(lira.lira_scores(t, shadow, masks, online=False)) == pytest.approx(20, rel=0.1)


def test_too_few_shadows_are_refused():
    with pytest.raises(ValueError, match=">= 4"):
        lira.balanced_in_masks(2, 10)
    with pytest.raises(ValueError, match=">= 4"):
        lira.run_lira(lambda idx: None, lambda m: np.zeros(10), 10, n_shadow=2, progress=False)
    one_out = np.array([[True], [True], [False]])  # one OUT shadow: no variance
    with pytest.raises(ValueError, match="at least 2 OUT"):
        lira.lira_scores(np.zeros(1), np.zeros((3, 1)), one_out)


def _ulira_toy(unlearn_leaks: bool, n_shadow: int = 16):
    """Retained data + a population of 60 examples with random labels (only memorisation tells a trained
    example). The target trained on 30 of them and "unlearned" them: by doing nothing (a leaky method) or by
    retraining without them (exact unlearning)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x_ret, y_ret = rng.normal(size=(40, 120)), rng.integers(0, 4, 40)
    x_pop, y_pop = rng.normal(size=(60, 120)), rng.integers(0, 4, 60)
    y_ret[:4], y_pop[:4] = np.arange(4), np.arange(4)

    def fit(idx, is_in=True):
        model = LogisticRegression(C=100, max_iter=500).fit(np.r_[x_ret, x_pop[idx]], np.r_[y_ret, y_pop[idx]])
        return model if unlearn_leaks or not is_in else fit(np.array([], int), False)

    def score(m):
        logp = np.full((len(y_pop), 4), -50.0)
        logp[:, m.classes_] = m.predict_log_proba(x_pop)
        return lira.scaled_logit(logp, y_pop)

    members, nonmembers = np.arange(30), np.arange(30, 60)
    shadows = lira.run_ulira(fit, score, len(y_pop), n_shadow=n_shadow, seed=1, progress=False)
    return score(fit(members)), shadows, members, nonmembers


def test_ulira_power_on_a_leaky_method_and_none_on_exact_unlearning():
    target, shadows, members, nonmembers = _ulira_toy(unlearn_leaks=True)
    plan_in = shadows["is_in"]
    assert plan_in.sum() == 8 and np.all(shadows["in_mask"][~plan_in] == 0) and np.all(shadows["out_mask"][~plan_in])
    assert np.all(shadows["in_mask"][plan_in].sum(0) == 4)  # every example trained in half of the "in" shadows
    leaky = lira.ulira_attack(target, shadows, members, nonmembers, n_resamples=100)
    assert leaky["auc"]["value"] > 0.9 and leaky["auc"]["ci95"][0] > 0.75, leaky["auc"]
    assert leaky["tpr_at_0.01_fpr"]["resolved"] is False  # 30 held-out examples cannot measure 1% FPR
    swapped = {**shadows, "in_mask": shadows["out_mask"], "out_mask": shadows["in_mask"]}
    assert lira.ulira_attack(target, swapped, members, nonmembers, n_resamples=20)["auc"]["value"] < 0.1
    exact_target, exact_shadows, _, _ = _ulira_toy(unlearn_leaks=False)
    exact = lira.ulira_attack(exact_target, exact_shadows, members, nonmembers, n_resamples=100)["auc"]
    assert exact["value"] == pytest.approx(0.5, abs=0.1), exact  # retrained = never trained: nothing to tell
    with pytest.raises(ValueError, match=">= 8"):
        lira.ulira_plan(4, 10)
