"""The analytic heads when training examples are few: ridge with plain GCV, ridge with the modified GCV
the family uses (``analytic.head.GCV_DF_WEIGHT``) and shrinkage LDA, at the default features (mean token
state of the last 3 blocks, 1,152 numbers), from a few examples per class up to the whole training split.

Plain GCV picks a lambda that nearly interpolates the training set once the examples are about as many as
the features or fewer; this is the measurement behind the modified criterion.

    PYTHONPATH=benchmarks python benchmarks/analytic_small_n.py --datasets bbc_news csv:runs/rt3.csv \\
        --out runs/bench/analytic_small_n.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from analytic_accuracy import SEEDS, features, t_interval

PER_CLASS = (10, 25, 50, 100, 200, 400, 0)  # 0: the whole training split


def score(q, labels, dataset, per_class: int) -> dict:
    from promptforget.analytic import head as heads
    from promptforget.analytic.stats import ExactStats, dequantize
    from promptforget.data import load_splits

    c = int(labels.max()) + 1
    variants = {"ridge, plain GCV": ("ridge", 1.0), "ridge, modified GCV (default)": ("ridge", heads.GCV_DF_WEIGHT),
                "lda": ("lda", heads.GCV_DF_WEIGHT)}
    accs = {k: [] for k in variants}
    lambdas = {k: [] for k in variants if k.startswith("ridge")}
    n_train = 0
    default = heads.GCV_DF_WEIGHT
    try:
        for seed in SEEDS:
            train, test = load_splits(dataset, 0.2, seed)
            tr, te = np.array([int(i) for i in train.ids]), np.array([int(i) for i in test.ids])
            if per_class:
                rng = np.random.default_rng(seed)
                tr = np.concatenate([rng.permutation(tr[labels[tr] == k])[:per_class] for k in range(c)])
            n_train = len(tr)
            stats = ExactStats.of_rows(q[tr], labels[tr], c)
            for name, (head, weight) in variants.items():
                heads.GCV_DF_WEIGHT = weight
                w, b, info = heads.solve(stats, head, 12)
                if name in lambdas:
                    lambdas[name].append(info["ridge_lambda"])
                accs[name].append(float(((dequantize(q[te], 12) @ w.T + b).argmax(1) == labels[te]).mean()))
    finally:
        heads.GCV_DF_WEIGHT = default
    return {"n_train": n_train, "features": int(q.shape[1]),
            **{k: {"acc": v, "mean": float(np.mean(v)), "ci95": t_interval(v), **({"lambda": lambdas[k]} if k in lambdas else {})}
               for k, v in accs.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["bbc_news"])
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--out", default="runs/bench/analytic_small_n.json")
    args = ap.parse_args()
    results = {"load_average": os.getloadavg(), "seeds": SEEDS, "datasets": {}}
    for dataset in args.datasets:
        q, labels, _ = features(dataset, "last-k", {"last_k": 3}, args.max_length, None, 12)
        rows = []
        for per_class in PER_CLASS:
            r = score(q, labels, dataset, per_class)
            rows.append(r)
            print(f"[{dataset}] N={r['n_train']:5d} (D={r['features']}): "
                  + "; ".join(f"{k} {v['mean']:.3f}" for k, v in r.items() if isinstance(v, dict)), flush=True)
        results["datasets"][dataset] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"JSON -> {args.out}; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
