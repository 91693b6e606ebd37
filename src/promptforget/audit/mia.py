"""Population membership-inference attacks on a classifier's output probabilities.

Every score here is oriented so that **higher = "more likely a training member"**; an AUC of 0.5 means
the attacker cannot tell members from non-members, 1.0 means it always can (0.0: it always can, with
the sign flipped -- report |AUC - 0.5| when the direction is not known in advance).

Per-example features (p = softmax output over classes, y = true label):
  confidence         p_y                                         (members: higher)
  loss               -log p_y  -> score = -loss                  (members: lower loss)
  entropy            H(p) = -sum_j p_j log p_j  -> score = -H     (members: more peaked)
  modified entropy   Mentr(p, y) = -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j)
                     (Song & Mittal, USENIX Sec. 2021) -> score = -Mentr
  correctness        1[argmax p == y]

Two attacks:
  * threshold AUC: ROC-AUC of one feature between a member set and a non-member set
    (forget-train vs forget-test in an unlearning audit; ideal after unlearning = the retrained
    reference's value, which is ~0.5 when the reference never saw either set).
  * SVC shadow protocol (Jia et al. 2023 "Model sparsity can simplify machine unlearning"; used as
    "MIA-efficacy" by SalUn, Fan et al. ICLR 2024): an RBF SVC (C=3, gamma="auto") is fitted per
    feature on shadow members (retain-train, subsampled to the test size) vs shadow non-members (test);
    MIA-efficacy = share of the forget set the SVC predicts as NON-member. Higher = the forget set looks
    unseen. Ideal = the reference's value (for class forgetting that is usually close to 1).

Note: SalUn's released ``m_entropy`` indexes ``p[:, labels]`` (every row at every label) -- a bug; we
implement the published definition per example.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-30
FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "loss")


def _check_probs(probs, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be a 2-D array [N, C], got shape {p.shape}")
    if p.size and (np.any(p < -1e-6) or np.any(np.abs(p.sum(1) - 1) > 1e-3)):
        raise ValueError("probs must be probability rows (non-negative, summing to 1); pass softmax outputs")
    if labels is None:
        return p, None
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}]")
    return p, y


def confidence(probs, labels) -> np.ndarray:
    p, y = _check_probs(probs, labels)
    return p[np.arange(len(y)), y]


def loss(probs, labels) -> np.ndarray:
    return -np.log(np.maximum(confidence(probs, labels), EPS))


def entropy(probs) -> np.ndarray:
    p, _ = _check_probs(probs)
    return -(p * np.log(np.maximum(p, EPS))).sum(1)


def modified_entropy(probs, labels) -> np.ndarray:
    p, y = _check_probs(probs, labels)
    idx = np.arange(len(y))
    py = p[idx, y]
    log_rev = np.log(np.maximum(1 - p, EPS))
    other = p * log_rev
    other[idx, y] = 0.0
    return -(1 - py) * np.log(np.maximum(py, EPS)) - other.sum(1)


def correctness(probs, labels) -> np.ndarray:
    p, y = _check_probs(probs, labels)
    return (p.argmax(1) == y).astype(np.float64)


def membership_features(probs, labels) -> dict[str, np.ndarray]:
    """The per-example features, each oriented so that higher = more member-like."""
    return {
        "correctness": correctness(probs, labels),
        "confidence": confidence(probs, labels),
        "entropy": -entropy(probs),
        "m_entropy": -modified_entropy(probs, labels),
        "loss": -loss(probs, labels),
    }


def roc_auc(member_scores, nonmember_scores) -> float:
    """P(score(member) > score(non-member)) + 0.5 P(tie): ROC-AUC with higher score = member."""
    from sklearn.metrics import roc_auc_score

    a = np.asarray(member_scores, dtype=np.float64).ravel()
    b = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("roc_auc needs at least one member and one non-member score")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("roc_auc: scores must be finite")
    return float(roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.concatenate([a, b])))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = 0.01) -> float:
    """True-positive rate at a fixed false-positive rate (Carlini et al. 2022: the low-FPR regime): members
    strictly above the non-members' (1 - fpr) quantile (see :func:`promptforget.audit.stats.batched_tpr`)."""
    from promptforget.audit.stats import batched_tpr

    a = np.asarray(member_scores, dtype=np.float64).reshape(1, -1)
    b = np.asarray(nonmember_scores, dtype=np.float64).reshape(1, -1)
    if a.size == 0:
        return float("nan")
    return float(batched_tpr(a, b, fpr)[0]) if b.size else 0.0


def threshold_aucs(member_probs, member_labels, nonmember_probs, nonmember_labels) -> dict[str, float]:
    """ROC-AUC of every feature between a member set and a non-member set."""
    fm = membership_features(member_probs, member_labels)
    fn = membership_features(nonmember_probs, nonmember_labels)
    return {k: roc_auc(fm[k], fn[k]) for k in FEATURES}


def _svc_fit(x_in: np.ndarray, x_out: np.ndarray, seed: int):
    from sklearn.svm import SVC

    x = np.concatenate([x_in, x_out]).reshape(len(x_in) + len(x_out), -1)
    y = np.concatenate([np.ones(len(x_in)), np.zeros(len(x_out))])
    return SVC(C=3, gamma="auto", kernel="rbf", random_state=seed).fit(x, y)


def svc_mia(
    shadow_member_probs,
    shadow_member_labels,
    shadow_nonmember_probs,
    shadow_nonmember_labels,
    target_probs,
    target_labels,
    balance: bool = True,
    seed: int = 0,
    per_example: bool = False,
):
    """SVC shadow attack. Returns, per feature, the share of ``target`` predicted NON-member (with
    ``per_example``: also ``{feature: 0/1 array, 1 = predicted non-member}``, for a bootstrap interval).

    ``balance``: subsample the shadow members to the number of shadow non-members (as SalUn does,
    retain-train is much larger than test).
    """
    pm, ym = _check_probs(shadow_member_probs, shadow_member_labels)
    pn, yn = _check_probs(shadow_nonmember_probs, shadow_nonmember_labels)
    pt, yt = _check_probs(target_probs, target_labels)
    if len(pm) == 0 or len(pn) == 0 or len(pt) == 0:
        raise ValueError("svc_mia: shadow members, shadow non-members and target must all be non-empty")
    if balance and len(pm) > len(pn):
        keep = np.random.default_rng(seed).choice(len(pm), len(pn), replace=False)
        pm, ym = pm[keep], ym[keep]
    fm, fn, ft = membership_features(pm, ym), membership_features(pn, yn), membership_features(pt, yt)
    fm["prob"], fn["prob"], ft["prob"] = pm, pn, pt
    out, nonmember = {}, {}
    for k in ("correctness", "confidence", "entropy", "m_entropy", "prob"):
        a, b = fm[k], fn[k]
        if np.unique(np.concatenate([a, b]).reshape(len(a) + len(b), -1), axis=0).shape[0] < 2:
            out[k] = float("nan")  # one constant feature: the SVC cannot be fitted (and could not attack)
            nonmember[k] = np.full(len(pt), np.nan)
            continue
        clf = _svc_fit(a, b, seed)
        nonmember[k] = 1.0 - clf.predict(ft[k].reshape(len(pt), -1))
        out[k] = float(nonmember[k].mean())
    return (out, nonmember) if per_example else out


def mia_efficacy(shadow_member_probs, shadow_member_labels, shadow_nonmember_probs, shadow_nonmember_labels,
                 forget_probs, forget_labels, feature: str = "confidence", seed: int = 0) -> float:
    """SalUn's MIA-efficacy: share of the forget set the confidence-feature SVC calls non-member."""
    return svc_mia(shadow_member_probs, shadow_member_labels, shadow_nonmember_probs, shadow_nonmember_labels,
                   forget_probs, forget_labels, seed=seed)[feature]


def population_audit(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], seed: int = 0) -> dict:
    """All population attacks of an unlearning audit from the model's probabilities on four sets.

    probs/labels keys: ``retain_train``, ``test`` (retained classes, held out), ``forget_train``,
    ``forget_test`` (forgotten classes, held out; may be empty).
    """
    need = ("retain_train", "test", "forget_train")
    missing = [k for k in need if k not in probs or len(probs[k]) == 0]
    if missing:
        raise ValueError(f"population_audit: empty or missing sets {missing}")
    efficacy, nonmember = svc_mia(probs["retain_train"], labels["retain_train"], probs["test"], labels["test"],
                                  probs["forget_train"], labels["forget_train"], seed=seed, per_example=True)
    res: dict = {
        "svc_efficacy": efficacy,
        # per forget-train sample, 1 = the SVC calls it non-member (MIA-efficacy is the mean)
        "svc_nonmember": {k: v.tolist() for k, v in nonmember.items()},
        "retain_vs_test_auc": threshold_aucs(probs["retain_train"], labels["retain_train"], probs["test"], labels["test"]),
    }
    res["mia_efficacy"] = res["svc_efficacy"]["confidence"]
    if "forget_test" in probs and len(probs["forget_test"]):
        res["forget_train_vs_test_auc"] = threshold_aucs(
            probs["forget_train"], labels["forget_train"], probs["forget_test"], labels["forget_test"])
        ff = membership_features(probs["forget_train"], labels["forget_train"])
        fo = membership_features(probs["forget_test"], labels["forget_test"])
        res["forget_train_vs_test_tpr_at_1pct_fpr"] = {k: tpr_at_fpr(ff[k], fo[k], 0.01) for k in FEATURES}
    return res
