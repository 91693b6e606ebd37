"""Re-judge the audits of docs/results.md with the verdict rule of issue 30, from the figures the page
prints (the audits' audit.json files are not in the repository, and neither are the references' per-seed
values). Prints one line per row that can be re-judged.

What is reconstructed, and how:
  * a count-based rate (accuracy, recall, MIA-efficacy) gets its exact interval from its count
    (value x n) -- as `mean_figure` / `proportion_figure` give it now;
  * the references' seed spread s is backed out of the old combined interval, whose half-width was
    1.96 sqrt(se_r^2/K + s^2/K): s^2 = K (half/1.96)^2 - se_r^2, with se_r the binomial error of one
    reference for a rate, or the audited figure's own error for an AUC (same sample sizes). A reference
    printed as 0.000 [0.000, 0.000] has s = 0 (every seed at 0/n);
  * where se_r is unknown (a Youden's J), s takes its largest value (se_r = 0): the verdict then holds for
    every spread the old interval allows, or the row says that it cannot be recomputed;
  * Holm runs over the primary figures the page gives; the primaries it does not give (relearning J
    without intervals) are bounded both ways: their p-values taken as 0 and as 1.

    PYTHONPATH=src python benchmarks/audit_rejudge.py
"""

from __future__ import annotations

import math

from promptforget.audit import pfm_audit, spul_audit, stats
from promptforget.audit.report import FORGETS_MORE, LEAKS_MORE, holm, judge, lookup

K = 3


def rate(value: float, n: int) -> dict:
    k = round(value * n)
    return stats.figure(k / n, stats.clopper_pearson(k, n), n, stats.EXACT, k=k)


def reference(value: float, half: float, se_r: float | None) -> dict:
    """The K-seed reference from the page's mean and old half-width (see the module doc)."""
    se = se_r if se_r is not None else 0.0
    s2 = max(K * (half / stats.Z95) ** 2 - se**2, 0.0)
    return stats.figure(value, (value - half, value + half), None, stats.OVER_REFERENCES, seed_sd=math.sqrt(s2),
                        se_mean=se, reference_seeds=K)


def binom_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.25 / n) / n)


# (audit, metric id, old verdict, audited figure, reference figure)
ROWS = [
    ("MNIST-5k", "retained_acc", "inconclusive", rate(0.923, 900), reference(0.917, 0.017, binom_se(0.917, 900))),
    ("MNIST-5k", "forgotten_class_acc_worst", "leaks more than retraining", rate(0.070, 100),
     reference(0.0, 0.0, stats.standard_error(rate(0.0, 100)))),
    ("BBC", "retained_acc", "inconclusive", rate(0.956, 343), reference(0.967, 0.011, binom_se(0.967, 343))),
    ("BBC", "forgotten_class_acc_worst", "leaks more than retraining", rate(0.069, 102),
     reference(0.0, 0.0, stats.standard_error(rate(0.0, 102)))),
    ("BBC", "forgotten_class_argmin_acc_worst", "inconclusive", rate(0.059, 102),
     reference(0.225, 0.226, binom_se(0.225, 102))),
    ("BBC", "mia_auc_loss", "inconclusive", stats.figure(0.496, (0.435, 0.560), 102),
     reference(0.513, 0.0555, (0.560 - 0.435) / 2 / stats.Z95)),
    ("BBC", "key_recovery_j_n5", "leaks more than retraining", stats.figure(0.353, (0.265, 0.451), 102),
     reference(0.0, 0.0, stats.standard_error(stats.youden_figure([0] * 102, [0] * 300)))),
    ("BBC", "key_recovery_j_n25", "leaks more than retraining", stats.figure(0.784, (0.706, 0.853), 102),
     reference(0.028, 0.0435, None)),
    ("SPUL RT", "acc_train_retain", "utility lost", rate(0.682, 311), reference(0.771, 0.0265, binom_se(0.771, 311))),
    ("SPUL RT", "acc_test_retain", "utility lost", rate(0.691, 162), reference(0.844, 0.0365, binom_se(0.844, 162))),
    ("SPUL RT", "acc_train_forget", "forgets more than retraining", rate(0.663, 89),
     reference(0.801, 0.0485, binom_se(0.801, 89))),
    ("SPUL RT", "acc_test_forget", "forgets more than retraining", rate(0.684, 38),
     reference(0.851, 0.068, binom_se(0.851, 38))),
    ("SPUL RT", "mia_efficacy", "leaks more than retraining", rate(0.472, 89),
     reference(0.618, 0.066, binom_se(0.618, 89))),
    ("SPUL RT", "mia_auc_confidence", "inconclusive", stats.figure(0.448, (0.338, 0.555), 38),
     reference(0.524, 0.0605, (0.555 - 0.338) / 2 / stats.Z95)),
]
# primary figures a page leaves without intervals (their p-values are bounded both ways)
UNKNOWN_PRIMARIES = {"MNIST-5k": 6, "BBC": 2, "SPUL RT": 1}


def main() -> None:
    registries = {"MNIST-5k": pfm_audit.METRICS, "BBC": pfm_audit.METRICS, "SPUL RT": spul_audit.SPUL_METRICS}
    judged = []
    for audit, mid, old, a, r in ROWS:
        m = lookup(registries[audit], mid)
        j = judge(m, a, r)
        judged.append((audit, mid, old, m, j))
    for audit in UNKNOWN_PRIMARIES:
        family = [(i, j["p_value"]) for i, (au, _, _, m, j) in enumerate(judged)
                  if au == audit and m.primary and j["p_value"] is not None]
        extra = UNKNOWN_PRIMARIES[audit]
        for bound, fill in (("p=0", 0.0), ("p=1", 1.0)):
            rejected, _ = holm([p for _, p in family] + [fill] * extra)
            for (i, _), rej in zip(family, rejected):
                judged[i][4].setdefault("holm", {})[bound] = rej
    print(f"{'audit':9s} {'metric':34s} {'old verdict':30s} {'new (unadjusted)':30s} {'d +- h':>18s}  p        Holm")
    for audit, mid, old, m, j in judged:
        d = j["difference"]
        dh = f"{d['value']:+.3f} +-{(d['ci95'][1] - d['ci95'][0]) / 2:.3f}" if d else "-"
        p = f"{j['p_value']:.2g}" if j["p_value"] is not None else "-"
        holm_word = "-"
        if "holm" in j and j["verdict"] in (LEAKS_MORE, FORGETS_MORE):
            both = set(j["holm"].values())
            holm_word = "survives" if both == {True} else "fails" if both == {False} else "depends on the others"
        elif m.primary:
            holm_word = "(not significant)" if j["verdict"] not in (LEAKS_MORE, FORGETS_MORE) else "-"
        role = "*" if m.primary else " "
        print(f"{audit:9s} {mid + role:34s} {old:30s} {j['verdict']:30s} {dh:>18s}  {p:8s} {holm_word}")
    print("\n* primary. Not re-judged (no interval or no per-seed values on the page, or the attack changed): "
          "argmin and probes on MNIST-5k, every relearning / linear-probe / key-recovery row of MNIST-5k, "
          "the BBC relearning and probe rows, SPUL's sequence MIAs and black-box rows, and U-LiRA (its negatives "
          "are now held-out samples: a different attack, to be rerun).")


if __name__ == "__main__":
    main()
