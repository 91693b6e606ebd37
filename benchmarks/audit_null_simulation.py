"""The verdict rule's false-verdict rates under the null (docs/audit.md): audited and K references drawn
from the same distribution (seed effect ~ N(0, sd^2), sampling error se), judged by
:func:`promptforget.audit.report.judge`. Nominal: 2.5% "leaks more" and 2.5% "forgets more".

    PYTHONPATH=src python benchmarks/audit_null_simulation.py [--draws 4000]
"""

from __future__ import annotations

import argparse

import numpy as np

from promptforget.audit import stats
from promptforget.audit.report import FORGETS_MORE, LEAKS_MORE, Metric, verdict

AUC = Metric("an AUC", "higher = leak", "reference value", 0.05)
CASES = [(3, 1.0, 0.5, 0.5), (3, 0.2, 0.5, 0.5), (3, 1.0, 0.05, 0.05), (3, 0.0, 0.5, 0.5), (3, 1.0, 1.0, 0.5),
         (3, 1.0, 0.3, 0.6), (5, 1.0, 0.5, 0.5), (5, 0.2, 0.5, 0.5), (5, 1.0, 1.0, 0.5), (5, 0.0, 0.5, 0.5)]


def rates(k: int, seed_sd: float, se_a: float, se_r: float, draws: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    seeds = rng.normal(0, seed_sd, (draws, k + 1))
    audited = seeds[:, 0] + rng.normal(0, se_a, draws)
    refs = seeds[:, 1:] + rng.normal(0, se_r, (draws, k))
    words = []
    for a, rs in zip(audited, refs):
        ref = stats.combine_references([stats.figure(v, (v - stats.Z95 * se_r, v + stats.Z95 * se_r), 200) for v in rs])
        words.append(verdict(AUC, stats.figure(a, (a - stats.Z95 * se_a, a + stats.Z95 * se_a), 200), ref))
    words = np.array(words)
    return float(np.mean(words == LEAKS_MORE)), float(np.mean(words == FORGETS_MORE))


def paired_rates(k: int, seed_sd: float, noise: float, draws: int, n: int = 200, seed: int = 0):
    """0/1 outcomes of K + 1 exchangeable models on the same n examples: per-example difficulty, a seed effect
    (logit scale, sd ``seed_sd``) and per-model, per-example noise (sd ``noise``)."""
    rng = np.random.default_rng(seed)
    words = []
    for _ in range(draws):
        logit = rng.normal(-1, 1.5, n)[None] + rng.normal(0, seed_sd, (k + 1, 1)) + rng.normal(0, noise, (k + 1, n))
        y = (rng.random((k + 1, n)) < 1 / (1 + np.exp(-logit))).astype(float)
        ref = stats.combine_references([stats.mean_figure(r) for r in y[1:]])
        words.append(verdict(AUC, stats.mean_figure(y[0]), ref))
    words = np.array(words)
    return float(np.mean(words == LEAKS_MORE)), float(np.mean(words == FORGETS_MORE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=4000)
    args = ap.parse_args()
    print("| K | seed sd | se audited, reference | leaks more | forgets more |\n|---|---|---|---|---|")
    for i, (k, sd, se_a, se_r) in enumerate(CASES):
        leaks, forgets = rates(k, sd, se_a, se_r, args.draws, seed=i)
        print(f"| {k} | {sd} | {se_a}, {se_r} | {100 * leaks:.1f}% | {100 * forgets:.1f}% |")
    print("\npaired 0/1 outcomes, 200 examples\n| K | seed sd (logit) | per-example noise | leaks more | forgets more |"
          "\n|---|---|---|---|---|")
    for i, (k, sd, noise) in enumerate([(3, 0.3, 0.5), (3, 0.0, 0.5), (3, 0.3, 0.0), (5, 0.3, 0.5), (5, 0.0, 0.5)]):
        leaks, forgets = paired_rates(k, sd, noise, args.draws // 2, seed=i)
        print(f"| {k} | {sd} | {noise} | {100 * leaks:.1f}% | {100 * forgets:.1f}% |")


if __name__ == "__main__":
    main()
