"""Population MIA features, AUCs and the SVC shadow protocol on constructed cases with known answers."""

import numpy as np
import pytest

from promptforget.audit import mia


def onehot_probs(labels, c, conf):
    """Rows putting ``conf`` on the label and the rest spread evenly."""
    p = np.full((len(labels), c), (1 - conf) / (c - 1))
    p[np.arange(len(labels)), labels] = conf
    return p


def test_features_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    y = np.array([0, 2])
    np.testing.assert_allclose(mia.confidence(p, y), [0.7, 1 / 3])
    np.testing.assert_allclose(mia.loss(p, y), [-np.log(0.7), np.log(3)])
    np.testing.assert_allclose(mia.entropy(p), [-(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)), np.log(3)])
    # Song & Mittal: -(1-p_y) log p_y - sum_{j!=y} p_j log(1-p_j)
    m0 = -(0.3 * np.log(0.7)) - (0.2 * np.log(0.8) + 0.1 * np.log(0.9))
    m1 = -(2 / 3) * np.log(1 / 3) - 2 * (1 / 3) * np.log(2 / 3)
    np.testing.assert_allclose(mia.modified_entropy(p, y), [m0, m1])
    # a confident WRONG prediction has high modified entropy (plain entropy cannot tell)
    wrong = np.array([[0.01, 0.98, 0.01]])
    right = np.array([[0.98, 0.01, 0.01]])
    assert mia.modified_entropy(wrong, [0]) > 5 * mia.modified_entropy(right, [0])
    np.testing.assert_allclose(mia.entropy(wrong), mia.entropy(right))


def test_roc_auc_known_values():
    assert mia.roc_auc([2, 3, 4], [0, 1]) == 1.0
    assert mia.roc_auc([0, 1], [2, 3, 4]) == 0.0
    assert mia.roc_auc([1, 1], [1, 1]) == 0.5  # ties count one half
    assert mia.roc_auc([0, 2], [1]) == 0.5
    rng = np.random.default_rng(0)
    assert abs(mia.roc_auc(rng.random(4000), rng.random(4000)) - 0.5) < 0.02
    from sklearn.metrics import roc_auc_score

    a, b = rng.normal(0.3, 1, 300), rng.normal(0, 1, 200)
    assert mia.roc_auc(a, b) == pytest.approx(roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[a, b]))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="2-D"):
        mia.entropy(np.ones(3))
    with pytest.raises(ValueError, match="summing to 1"):
        mia.entropy(np.ones((2, 3)))
    with pytest.raises(ValueError, match="labels must lie"):
        mia.confidence(np.eye(3), [0, 1, 3])
    with pytest.raises(ValueError, match="at least one member"):
        mia.roc_auc([], [1.0])


def memorising_model(train_x, train_y, c):
    """A 1-NN lookup 'model': training points get their stored label with confidence 0.99,
    anything else gets a random-ish prediction -- perfect memorisation, no generalisation."""
    table = {tuple(x): y for x, y in zip(train_x.round(6), train_y)}

    def predict(x):
        rng = np.random.default_rng(int(abs(x.sum()) * 1e6) % 2**32)
        key = tuple(x.round(6))
        if key in table:
            return onehot_probs([table[key]], c, 0.99)[0]
        return rng.dirichlet(np.ones(c))

    return lambda X: np.stack([predict(x) for x in X])


def test_threshold_attacks_reach_auc_1_on_memorisation_and_half_on_random():
    rng = np.random.default_rng(0)
    c = 5
    x_in, x_out = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    y_in, y_out = rng.integers(0, c, 200), rng.integers(0, c, 200)  # random labels: nothing to generalise
    model = memorising_model(x_in, y_in, c)
    aucs = mia.threshold_aucs(model(x_in), y_in, model(x_out), y_out)
    for feat in ("confidence", "loss", "m_entropy", "entropy"):
        assert aucs[feat] > 0.99, (feat, aucs)
    # a model that ignores its input entirely gives the attacker nothing
    same = np.tile(rng.dirichlet(np.ones(c)), (200, 1))
    flat = mia.threshold_aucs(same, y_in, same, y_out)
    assert abs(flat["confidence"] - 0.5) < 0.1 and flat["entropy"] == 0.5


def test_svc_mia_efficacy_definition():
    """Shadow members are confident, non-members are not: a forget set that looks like members gets
    efficacy ~0, one that looks unseen gets ~1 (efficacy = share predicted NON-member)."""
    rng = np.random.default_rng(1)
    c, n = 4, 150
    y = rng.integers(0, c, n)
    members = onehot_probs(y, c, 0.97)
    nonmembers = onehot_probs(y, c, 0.3)
    remembered = mia.svc_mia(members, y, nonmembers, y, onehot_probs(y, c, 0.96), y)
    forgotten = mia.svc_mia(members, y, nonmembers, y, onehot_probs(y, c, 0.28), y)
    assert remembered["confidence"] < 0.05 and forgotten["confidence"] > 0.95
    assert mia.mia_efficacy(members, y, nonmembers, y, onehot_probs(y, c, 0.28), y) == forgotten["confidence"]
    # shadow members are subsampled to the non-member count (SalUn balances retain vs test)
    big = onehot_probs(np.tile(y, 3), c, 0.97)
    r = mia.svc_mia(big, np.tile(y, 3), nonmembers, y, onehot_probs(y, c, 0.28), y)
    assert r["confidence"] > 0.95


def test_population_audit_structure():
    rng = np.random.default_rng(2)
    c = 3

    def s(n, conf):
        y = rng.integers(0, c, n)
        return onehot_probs(y, c, conf), y

    sets = {"retain_train": s(60, 0.9), "test": s(40, 0.5), "forget_train": s(30, 0.9), "forget_test": s(20, 0.5)}
    r = mia.population_audit({k: v[0] for k, v in sets.items()}, {k: v[1] for k, v in sets.items()})
    assert r["mia_efficacy"] == r["svc_efficacy"]["confidence"] < 0.1  # forget-train still looks like members
    # per example: 1 = called non-member; MIA-efficacy (what the interval is bootstrapped from) is their mean
    assert np.mean(r["svc_nonmember"]["confidence"]) == pytest.approx(r["mia_efficacy"])
    assert r["forget_train_vs_test_auc"]["confidence"] == 1.0
    assert r["forget_train_vs_test_tpr_at_1pct_fpr"]["confidence"] == 1.0
    with pytest.raises(ValueError, match="forget_train"):
        mia.population_audit({"retain_train": sets["test"][0], "test": sets["test"][0]},
                             {"retain_train": sets["test"][1], "test": sets["test"][1]})
