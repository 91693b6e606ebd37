"""Intervals (audit/stats.py) and the interval verdicts they drive: synthetic figures with a known truth."""

import numpy as np
import pytest

from promptforget.audit import stats
from promptforget.audit.pfm_audit import METRICS
from promptforget.audit.report import (FORGETS_MORE, INCONCLUSIVE, INDISTINGUISHABLE, LEAKS_MORE, UNINFORMATIVE,
                                       UTILITY_KEPT, UTILITY_LOST, Metric, judge, verdict)

AUC = METRICS["mia_auc_confidence"]  # higher = leak, tolerance 0.05
EFFICACY = METRICS["mia_efficacy"]  # lower = leak, saturates at 1
UTILITY = METRICS["retained_acc"]


def test_mean_interval_covers_and_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(0)
    small, large = stats.mean_figure(rng.random(100) < 0.3), stats.mean_figure(rng.random(1600) < 0.3)
    for f in (small, large):  # 0/1 outcomes: the exact binomial interval
        assert f["ci95"][0] < 0.3 < f["ci95"][1] and f["how"] == stats.EXACT
    assert small["n"] == 100 and stats.half_width(small) / stats.half_width(large) == pytest.approx(4, rel=0.25)
    # a normal-approximation check of the width: 1.96 sqrt(p(1-p)/n)
    assert stats.half_width(large) == pytest.approx(1.96 * np.sqrt(0.3 * 0.7 / 1600), rel=0.15)
    assert stats.proportion_figure(0.25, 400)["ci95"] == stats.mean_figure(np.r_[np.ones(100), np.zeros(300)])["ci95"]
    # other values: the percentile bootstrap, whose 95% half-width is 1.96 sd / sqrt(n) (5/95 would give 1.64)
    x = rng.normal(0, 1, 1600)
    f = stats.mean_figure(x, n_resamples=4000)
    assert f["how"] == stats.OVER_EXAMPLES and stats.half_width(f) == pytest.approx(1.96 * x.std() / 40, rel=0.06)


def test_zero_of_n_carries_its_exact_bound():
    """0/60 is not [0, 0]: Clopper-Pearson gives [0, 1 - 0.025^(1/60)] = [0, 0.0596]; n/n mirrors it."""
    for f in (stats.mean_figure(np.zeros(60)), stats.proportion_figure(0.0, 60)):
        assert f["value"] == 0 and f["ci95"][0] == 0 and f["ci95"][1] == pytest.approx(1 - 0.025 ** (1 / 60))
    assert stats.proportion_figure(1.0, 60)["ci95"][0] == pytest.approx(0.025 ** (1 / 60))
    from scipy.stats import binomtest

    for k, n in ((0, 5), (3, 17), (17, 17), (40, 300)):
        ci = binomtest(k, n).proportion_ci(method="exact")
        assert stats.clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    lo, hi = stats.youden_figure(np.zeros(60), np.zeros(300))["ci95"]  # J = 0 - 0, still an interval
    assert lo < -0.005 and hi > 0.05
    assert stats.tpr_figure(np.zeros(60), np.ones(1000), 0.01)["ci95"][1] == pytest.approx(1 - 0.025 ** (1 / 60))
    # the verdict: 0/60 against references at 0/60 is not shown equivalent within 0.02 (the bound is 0.06)
    refs = stats.combine_references([stats.mean_figure(np.zeros(60)) for _ in range(5)])
    assert verdict(METRICS["forgotten_acc"], stats.mean_figure(np.zeros(60)), refs) == INCONCLUSIVE
    big = stats.combine_references([stats.mean_figure(np.zeros(1000)) for _ in range(5)])
    assert verdict(METRICS["forgotten_acc"], stats.mean_figure(np.zeros(1000)), big) == INDISTINGUISHABLE


def test_vectorised_bootstrap_gives_the_loops_figures():
    """The batched AUC / TPR over resampled rows equal the one-sample functions row by row (the same
    resamples), so the vectorised bootstrap is the old loop's interval."""
    from promptforget.audit.mia import roc_auc, tpr_at_fpr

    rng = np.random.default_rng(3)
    a, b = np.round(rng.normal(1, 1, 70), 1), np.round(rng.normal(0, 1, 90), 1)  # rounded: ties too
    ra, rb = stats.resample(a, 50, rng), stats.resample(b, 50, rng)
    np.testing.assert_allclose(stats.batched_auc(ra, rb), [roc_auc(x, y) for x, y in zip(ra, rb)])
    np.testing.assert_allclose(stats.batched_tpr(ra, rb, 0.05), [tpr_at_fpr(x, y, 0.05) for x, y in zip(ra, rb)])
    g = np.random.default_rng(7)
    loop = [roc_auc(x, y) for x, y in zip(stats.resample(a, 300, g), stats.resample(b, 300, g))]
    assert stats.bootstrap_ci(stats.batched_auc, a, b, n_resamples=300, seed=7) == pytest.approx(
        tuple(np.quantile(loop, [0.025, 0.975])))


def test_tpr_at_fpr_known_answer():
    """Non-members 0..99: at 1% FPR the threshold is 99 (one non-member at or above it); members strictly
    above count."""
    from promptforget.audit.mia import tpr_at_fpr

    nonmembers, members = np.arange(100.0), np.array([99.5, 100.5, 101.0, 50.0])
    assert tpr_at_fpr(members, nonmembers, 0.01) == 0.75
    assert tpr_at_fpr(members, nonmembers, 0.1) == 0.75 and tpr_at_fpr(np.array([95.0]), nonmembers, 0.1) == 1.0
    assert tpr_at_fpr(np.array([95.0]), nonmembers, 0.01) == 0.0
    f = stats.tpr_figure(members, nonmembers, 0.01)
    assert f["value"] == 0.75 and f["resolved"] and not stats.tpr_figure(members, nonmembers, 0.001)["resolved"]


def test_bootstrap_coverage_is_95_not_90():
    """Over 600 datasets the 95% percentile interval of a mean covers the truth about 95% of the time
    (a 90% interval would cover about 90%)."""
    rng = np.random.default_rng(11)
    hits = [lo <= 0 <= hi for lo, hi in (stats.bootstrap_ci(lambda r: r.mean(1), rng.normal(0, 1, 100),
                                                            n_resamples=400, seed=i) for i in range(600))]
    assert 0.925 <= np.mean(hits) <= 0.975, np.mean(hits)


def test_auc_tpr_and_youden_figures():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(1, 1, 400), rng.normal(0, 1, 50)
    f = stats.auc_figure(members, nonmembers)
    assert f["ci95"][0] < f["value"] < f["ci95"][1] and f["n_member"] == 400 and f["n_nonmember"] == 50
    assert 0.06 < stats.half_width(f) < 0.12  # the issue's +-0.085 at 400 vs 50
    t = stats.tpr_figure(members, nonmembers, 0.01)
    assert 0 <= t["value"] <= 1 and t["resolved"] is False  # 1% of 50 non-members is below one sample
    # Youden's J = recall - FPR: a perfect recovery is +1, flooding every input 0, the sign matters
    assert stats.youden_figure(np.ones(30), np.zeros(60))["value"] == 1.0
    assert stats.youden_figure(np.ones(30), np.ones(60))["value"] == 0.0
    assert stats.youden_figure(np.zeros(30), np.ones(60))["value"] == -1.0
    j = stats.youden_figure(rng.random(200) < 0.7, rng.random(300) < 0.2)
    assert j["ci95"][0] < 0.5 < j["ci95"][1]


def test_seeds_and_reference_combination():
    f = stats.seeds_figure([0.2, 0.4, 0.3])
    assert f["value"] == pytest.approx(0.3) and f["n"] == 3 and f["how"] == stats.OVER_SEEDS
    assert stats.half_width(f) == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)  # t(0.975, 2) s / sqrt(k)
    assert stats.seeds_figure([0.5])["ci95"] is None
    refs = [stats.figure(v, (v - 0.02, v + 0.02), 100, stats.OVER_EXAMPLES) for v in (0.1, 0.3, 0.2)]
    r = stats.combine_references(refs)
    assert r["value"] == pytest.approx(0.2) and r["seed_sd"] == pytest.approx(0.1) and r["reference_seeds"] == 3
    assert r["se_mean"] == pytest.approx(0.02 / stats.Z95)
    assert stats.half_width(r) == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)  # t(0.975, 2) sd / sqrt(K)
    assert stats.combine_references([None, 0.4])["value"] == 0.4 and stats.combine_references([None]) is None


def test_none_is_never_not_dropped():
    """[never, never, 200] steps is "never" (the median), not 200 from one reference."""
    steps = METRICS["key_recovery_steps_n{n}"]
    r = stats.combine_references([None, None, 200], none_is_infinite=True)
    assert r["value"] is None and r["seeds"] == [None, None, 200] and r["reference_seeds"] == 3
    assert verdict(steps, 20, r) == LEAKS_MORE and verdict(steps, None, r) == INDISTINGUISHABLE
    assert stats.combine_references([None, 100, 200], none_is_infinite=True)["value"] == 200
    from promptforget.audit.report import combine_reference_runs

    runs = [{"steps": v} for v in (None, None, 200)]
    ref = combine_reference_runs(runs, lambda r: {"key_recovery_steps_n5": r["steps"]}, METRICS)
    assert ref["figures"]["key_recovery_steps_n5"]["value"] is None


def auc(shift: float, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return stats.auc_figure(rng.normal(shift, 1, n), rng.normal(0, 1, n), seed=seed)


def test_synthetic_figures_drive_each_verdict():
    reference = stats.combine_references([auc(0.0, 4000, s) for s in (10, 11, 12)])
    leaky, clean, small = auc(1.0, 4000, 1), auc(0.0, 4000, 2), auc(0.0, 20, 3)
    assert verdict(AUC, leaky, reference) == LEAKS_MORE
    assert verdict(AUC, clean, reference) == INDISTINGUISHABLE
    j = judge(AUC, small, reference)
    assert j["verdict"] == INCONCLUSIVE and "wider than the margin" in j["why"] and j["needed_n"] > 20
    # the n it names settles it: at that sample size the same truth is indistinguishable
    assert verdict(AUC, auc(0.0, j["needed_n"], 4), reference) == INDISTINGUISHABLE
    # two-sided: an audited model whose forget set looks LESS member-like than retraining's
    assert verdict(AUC, auc(-1.0, 4000, 5), reference) == FORGETS_MORE
    # the same figures read through a lower-is-leak metric swap the two directions
    lower = Metric("x", "lower = leak", "reference value", 0.05, direction=-1)
    assert verdict(lower, leaky, reference) == FORGETS_MORE and verdict(lower, auc(-1.0, 4000, 5), reference) == LEAKS_MORE
    assert verdict(lower, clean, reference) == INDISTINGUISHABLE


def test_the_reference_seed_spread_joins_the_interval():
    audited = stats.figure(0.60, (0.59, 0.61), 5000)
    tight = stats.combine_references([stats.figure(v, (v - 0.01, v + 0.01), 5000) for v in (0.50, 0.51, 0.49)])
    spread = stats.combine_references([stats.figure(v, (v - 0.01, v + 0.01), 5000) for v in (0.30, 0.70, 0.50)])
    assert verdict(AUC, audited, tight) == LEAKS_MORE
    j = judge(AUC, audited, spread)  # the same mean, but retraining itself varies by +-0.2 between seeds
    assert j["verdict"] == INCONCLUSIVE and "more reference seeds" in j["why"] and j["needed_n"] is None


def test_plain_numbers_are_exact_and_utility_is_judged_on_intervals():
    assert verdict(AUC, 0.56, 0.5) == LEAKS_MORE and verdict(AUC, 0.54, 0.5) == INDISTINGUISHABLE
    kept = stats.figure(0.90, (0.89, 0.91), 3000)
    lost = stats.figure(0.70, (0.67, 0.73), 1000)
    wide = stats.figure(0.85, (0.70, 1.00), 20)
    ref = stats.figure(0.90, (0.89, 0.91), 3000)
    assert verdict(UTILITY, kept, ref) == UTILITY_KEPT and verdict(UTILITY, lost, ref) == UTILITY_LOST
    assert verdict(UTILITY, wide, ref) == INCONCLUSIVE
    # overfitting on the kept classes is neither a leak nor utility, nor is the probe's FPR or the key binding
    for mid in ("mia_retain_auc_loss", "linear_probe_fpr_n{n}", "retained_acc_probe_all_wrong"):
        assert METRICS[mid].kind == "context" and verdict(METRICS[mid], 0.9, 0.1) == "descriptive"


def test_mia_efficacy_saturated_everywhere_is_uninformative():
    one = stats.figure(1.0, (1.0, 1.0), 50)
    assert verdict(EFFICACY, one, one, [one]) == UNINFORMATIVE
    assert verdict(EFFICACY, stats.figure(0.6, (0.5, 0.7), 50), one) == LEAKS_MORE  # lower efficacy = member-like
    assert verdict(EFFICACY, one, stats.figure(0.6, (0.5, 0.7), 50)) == FORGETS_MORE


def test_markdown_shows_value_and_interval():
    from promptforget.audit.report import format_number

    assert format_number(stats.figure(0.5, (0.4, 0.6), 10)) == "0.500 [0.400, 0.600]"
    assert format_number(stats.figure(0.5)) == "0.500" and format_number(None) == "-"
