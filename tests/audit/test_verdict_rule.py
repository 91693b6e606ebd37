"""The verdict rule a statistician signs: its false-verdict rate under the null, the multiplicity control, the
words it refuses to say, and which way every registered metric leaks."""

import math

import numpy as np
import pytest

from promptforget.audit import pfm_audit, report, spul_audit, stats
from promptforget.audit.report import (DESCRIPTIVE, FORGETS_MORE, INCONCLUSIVE, INDISTINGUISHABLE, LEAKS_MORE,
                                       UNINFORMATIVE, UNRESOLVED, Metric, holm, judge, verdict)

AUC = Metric("an AUC", "higher = leak", "reference value", 0.05)


def null_rates(k: int, seed_sd: float, se: float, n_sim: int, seed: int) -> tuple[float, float]:
    """Audited and K references from the same distribution (seed effect ~ N(0, seed_sd^2), measured with
    sampling error se): how often does the rule say "leaks more" and "forgets more"?"""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, seed_sd, (n_sim, k + 1)) + rng.normal(0, se, (n_sim, k + 1))
    half = stats.Z95 * se
    words = []
    for row in values:
        refs = stats.combine_references([stats.figure(v, (v - half, v + half), 200) for v in row[1:]])
        words.append(verdict(AUC, stats.figure(row[0], (row[0] - half, row[0] + half), 200), refs))
    words = np.array(words)
    return float(np.mean(words == LEAKS_MORE)), float(np.mean(words == FORGETS_MORE))


@pytest.mark.parametrize("k, seed_sd, se", [(3, 1.0, 0.5), (5, 0.2, 0.5)])
def test_null_simulation_false_verdicts_are_nominal(k, seed_sd, se):
    """Each direction is a 2.5% test: under the null the rule says "leaks more" (and "forgets more") 2.5% of
    the time, within 1 point (1.96 sd * sqrt(1 + 1/K) instead of t(K-1) gave 8.6% at K = 3)."""
    leaks, forgets = null_rates(k, seed_sd, se, 5000, seed=k)
    assert abs(leaks - 0.025) <= 0.01 and abs(forgets - 0.025) <= 0.01, (leaks, forgets)


def test_prediction_interval_known_answer():
    """K = 3 references 0.4, 0.5, 0.6 with no sampling error: h = t(0.975, 2) * 0.1 * sqrt(1 + 1/3)."""
    refs = stats.combine_references([0.4, 0.5, 0.6])
    j = judge(AUC, 0.5, refs)
    lo, hi = j["difference"]["ci95"]
    assert hi == pytest.approx(4.3027 * 0.1 * math.sqrt(4 / 3), rel=1e-3) and lo == pytest.approx(-hi)
    assert verdict(AUC, 0.5 + 0.99 * hi, refs) == INCONCLUSIVE and verdict(AUC, 0.5 + 1.01 * hi, refs) == LEAKS_MORE


def test_paired_outcomes_on_the_same_examples():
    """Every model answers the same 200 examples; the audited one answers 12 more of them than each
    reference. The paired comparison sees the shift; the unpaired sampling error alone would not."""
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.3).astype(float)
    refs = []
    for s in range(5):
        r = base.copy()
        r[rng.choice(np.flatnonzero(base == 0), 2, replace=False)] = 1  # seeds differ on a few examples
        refs.append(stats.mean_figure(r))
    audited = base.copy()
    audited[np.flatnonzero(base == 0)[:14]] = 1
    combined = stats.combine_references(refs)
    assert len(combined["outcomes_by_seed"]) == 5
    assert verdict(AUC, stats.mean_figure(audited), combined) == LEAKS_MORE
    unpaired = {k: v for k, v in stats.mean_figure(audited).items() if k != "outcomes"}
    assert verdict(AUC, unpaired, combined) == INCONCLUSIVE


def test_fewer_than_three_references_are_uninformative(tmp_path):
    one = stats.combine_references([stats.figure(0.5, (0.45, 0.55), 100)])
    two = stats.combine_references([stats.figure(v, (v - 0.05, v + 0.05), 100) for v in (0.5, 0.52)])
    for refs in (one, two):
        j = judge(AUC, stats.figure(0.9, (0.85, 0.95), 100), refs)
        assert j["verdict"] == UNINFORMATIVE and "at least 3" in j["why"]
    rows = report.table({"audited": {"mia_auc_loss": 0.9}, "reference": {"mia_auc_loss": one}}, pfm_audit.METRICS)
    text = report.markdown("t", "intro", rows, have_reference=True)
    assert "**Uninformative**" in text.split("## Verdict")[1] and "--reference-seeds 3" in text


def test_unresolved_low_fpr_tpr():
    refs = stats.combine_references([stats.tpr_figure(np.r_[np.ones(3), np.zeros(97)], np.zeros(200), 0.001, seed=s)
                                     for s in range(3)])
    audited = stats.tpr_figure(np.r_[np.ones(30), np.zeros(70)], np.zeros(200), 0.001)
    j = judge(pfm_audit.METRICS["ulira_tpr_0.1pct_fpr"], audited, refs)
    assert j["verdict"] == UNRESOLVED and "1000 non-members" in j["why"]


def test_low_rates_have_a_relative_margin():
    """TPR 0.015 against references at 0.001: within the absolute 0.02, but 15 times the rate; on the log-odds
    scale (margin: a factor of 2) it is not indistinguishable."""
    m = pfm_audit.METRICS["ulira_tpr_1pct_fpr"]
    refs = stats.combine_references([stats.figure(v, (v - 1e-4, v + 1e-4), 10**6) for v in (0.001, 0.0011, 0.0009)])
    j = judge(m, stats.figure(0.015, (0.0149, 0.0151), 10**6), refs)
    assert j["verdict"] == LEAKS_MORE
    assert verdict(Metric("plain", "x", "y", 0.02), stats.figure(0.015, (0.0149, 0.0151), 10**6),
                   {**refs, "seed_sd": 0.02}) != INDISTINGUISHABLE  # with a wide spread, no claim either
    low, high = report.margin(m, 0.001, 10**6)
    assert high == pytest.approx(0.001, rel=0.01) and low == pytest.approx(0.0005, rel=0.01)
    assert report.margin(m, 0.5, 100) == (0.02, 0.02)  # the absolute tolerance caps it mid-range


def test_holm_known_answer():
    rejected, adjusted = holm([0.01, 0.04, 0.03])
    assert rejected == [True, False, False] and adjusted == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.001, 0.002, 0.003])[0] == [True, True, True]
    assert holm([0.02, 0.9])[0] == [True, False] and holm([0.03, 0.04])[0] == [False, False]


def test_headline_rests_on_the_primary_figures_after_holm():
    """Two primary and one secondary figure, each just significant alone (p ~ 0.03): Holm over the two
    primaries keeps neither; the secondary row keeps its unadjusted word, marked secondary."""
    refs = stats.combine_references([stats.figure(v, None, 100) for v in (0.40, 0.50, 0.60, 0.45, 0.55)])
    h = 2.776 * refs["seed_sd"] * math.sqrt(1.2)  # t(0.975, 4)
    just = 0.5 + 1.15 * h
    flat = {"audited": {"relearn_j_n5": just, "mia_efficacy": 1 - just, "mia_auc_loss": just},
            "reference": {"relearn_j_n5": refs, "mia_efficacy": {**refs, "value": 0.5}, "mia_auc_loss": refs}}
    rows = {r["metric"]: r for r in report.table(flat, pfm_audit.METRICS)}
    assert 0.01 < rows["relearn_j_n5"]["p_value"] < 0.05
    assert rows["relearn_j_n5"]["verdict"] == rows["mia_efficacy"]["verdict"] == INCONCLUSIVE
    assert "Holm" in rows["relearn_j_n5"]["why"] and rows["relearn_j_n5"]["holm_p"] > 0.05
    assert rows["mia_auc_loss"]["role"] == "secondary" and rows["mia_auc_loss"]["verdict"] == LEAKS_MORE
    summary = " ".join(report.verdict_summary(list(rows.values()), True))
    assert "No primary figure leaks more" in summary and "Secondary figures" in summary
    assert "| `mia_auc_loss` |" in report.markdown("t", "i", list(rows.values()), True)
    # far beyond: survives Holm, and the headline says so
    flat["audited"]["relearn_j_n5"] = 0.5 + 5 * h
    rows = report.table(flat, pfm_audit.METRICS)
    assert "**leaks more than retraining** on `relearn_j_n5`" in " ".join(report.verdict_summary(rows, True))


# Which way each registered metric leaks, written down independently of the registries: a flipped
# direction (or a metric added without saying) fails here.
PFM_DIRECTIONS = {
    "retained_acc": (1, "utility"), "forgotten_acc": (1, "leak"), "forgotten_class_acc": (1, "leak"),
    "forgotten_class_acc_worst": (1, "leak"), "forgotten_class_argmin_acc_worst": (1, "leak"),
    "forgotten_acc_probe_none": (1, "leak"), "forgotten_acc_probe_best_single": (1, "leak"),
    "retained_acc_probe_all_wrong": (1, "context"), "mia_efficacy": (-1, "leak"), "mia_auc_confidence": (1, "leak"),
    "mia_auc_loss": (1, "leak"), "mia_auc_entropy": (1, "leak"), "mia_auc_m_entropy": (1, "leak"),
    "mia_tpr_1pct_confidence": (1, "leak"), "mia_retain_auc_loss": (-1, "context"),
    "key_recovery_j_n{n}": (1, "leak"), "key_recovery_j_s{s}_n{n}": (1, "leak"), "key_recovery_acc_n{n}": (1, "leak"),
    "key_recovery_steps_n{n}": (-1, "leak"), "relearn_j_n{n}": (1, "leak"), "linear_probe_acc_n{n}": (1, "leak"),
    "linear_probe_fpr_n{n}": (1, "context"), "ulira_auc": (1, "leak"), "ulira_tpr_1pct_fpr": (1, "leak"),
    "ulira_tpr_0.1pct_fpr": (1, "leak"),
}
SPUL_DIRECTIONS = {
    **{f"acc_{s}": (1, "utility" if "retain" in s else "leak") for s in spul_audit.SPLITS},
    **{f"mia_auc_{f}": (1, "leak") for f in ("confidence", "loss", "entropy", "m_entropy")},
    "mia_efficacy": (-1, "leak"), **{f"llm_auc_{s}": (1, "leak") for s in ("loss", "zlib", "min_k", "min_k_pp")},
    **{f"blackbox_{k}": (1, "leak") for k in ("plain", "paraphrase", "injection", "best")},
}
PRIMARY = {"pfm": {"forgotten_class_acc_worst", "forgotten_class_argmin_acc_worst", "key_recovery_j_n{n}",
                   "relearn_j_n{n}", "ulira_tpr_1pct_fpr", "mia_efficacy"},
           "spul": {"acc_train_forget", "mia_efficacy", "blackbox_best"}}


@pytest.mark.parametrize("name, registry, expected", [("pfm", pfm_audit.METRICS, PFM_DIRECTIONS),
                                                      ("spul", spul_audit.SPUL_METRICS, SPUL_DIRECTIONS)])
def test_every_registered_metric_leaks_the_declared_way(name, registry, expected):
    assert set(registry) == set(expected)
    assert {k for k, m in registry.items() if m.primary} == PRIMARY[name]
    for mid, (direction, kind) in expected.items():
        m = registry[mid]
        assert (m.direction, m.kind) == (direction, kind), mid
        scale = 1000 if m.tol >= 1 else 1  # steps count in tens, rates in hundredths
        refs = stats.combine_references([0.5 * scale - 0.01 * scale, 0.5 * scale, 0.5 * scale + 0.01 * scale])
        more, less = (0.5 + 0.4 * direction) * scale, (0.5 - 0.4 * direction) * scale  # more residual knowledge
        if kind == "leak":
            assert verdict(m, more, refs) == LEAKS_MORE and verdict(m, less, refs) == FORGETS_MORE, mid
        elif kind == "utility":
            assert verdict(m, more, refs) == "utility kept" and verdict(m, less, refs) == "utility lost", mid
        else:
            assert verdict(m, more, refs) == DESCRIPTIVE


def test_the_worst_class_is_the_maximum_with_the_interval_of_the_maximum():
    """Five classes with the same true rate 0.2: the largest observed rate is biased upwards; the interval of the
    maximum says so by reaching below the chosen class's own exact lower bound... and the worst is the max."""
    rng = np.random.default_rng(2)
    outcomes = {f"c{i}": (rng.random(60) < 0.2).astype(float) for i in range(5)}
    outcomes["c5"] = np.zeros(60)
    fig = pfm_audit.worst_figure(outcomes, seed=0)
    rates = {c: o.mean() for c, o in outcomes.items()}
    best = max(rates, key=rates.get)
    assert fig["value"] == rates[best] and fig["worst_class"] == best
    assert fig["ci95"][0] <= fig["value"] <= fig["ci95"][1]
    assert fig["ci95"][1] >= stats.clopper_pearson(int(outcomes[best].sum()), 60)[1] - 1e-12
    j = pfm_audit.worst_figure({"a": (np.ones(20), np.zeros(40)), "b": (np.zeros(20), np.zeros(40))})
    assert j["value"] == 1.0 and j["worst_class"] == "a"


def test_paired_null_simulation_is_nominal():
    """0/1 outcomes of K + 1 exchangeable models on the same 200 examples (per-example difficulty, a seed
    effect and per-model noise): the paired rule says "leaks more" / "forgets more" 2.5% of the time each,
    within 1 point."""
    rng = np.random.default_rng(3)
    words = []
    for _ in range(2500):
        logit = rng.normal(-1, 1.5, 200)[None] + rng.normal(0, 0.3, (4, 1)) + rng.normal(0, 0.5, (4, 200))
        y = (rng.random((4, 200)) < 1 / (1 + np.exp(-logit))).astype(float)
        refs = stats.combine_references([stats.mean_figure(r) for r in y[1:]])
        assert "outcomes_by_seed" in refs
        words.append(verdict(AUC, stats.mean_figure(y[0]), refs))
    words = np.array(words)
    leaks, forgets = np.mean(words == LEAKS_MORE), np.mean(words == FORGETS_MORE)
    assert abs(leaks - 0.025) <= 0.01 and abs(forgets - 0.025) <= 0.01, (leaks, forgets)
