"""Accuracy of the analytic family over 3 split seeds, per feature map / projection / head, beside the PFM
recipe and the plain LoRA fine-tune measured on the same splits (docs/results.md, seeds 42/1/2).

Every example's features are computed once per feature map with the library's FeatureExtractor (the
features of an example do not depend on the split); each seed's split then gets its exact statistics and
closed-form head (``analytic.stats``, ``analytic.head``), as ``promptforget train --family analytic`` does.

    python benchmarks/analytic_accuracy.py --datasets bbc_news csv:rt3.csv mnist5k --out runs/bench/analytic_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

SEEDS = (42, 1, 2)
# What the PFM recipe and the plain fine-tune reached on these splits (docs/results.md, CPU, seeds 42/1/2).
REFERENCES = {
    "bbc_news": {"pfm": [0.969, 0.946, 0.946], "plain": [0.971, 0.953, 0.953]},
    "rt3": {"pfm": [0.819, 0.817, 0.800], "plain": [0.836, 0.814, 0.808]},
    "mnist5k": {"pfm": [0.934, 0.922, 0.912], "plain": [0.909, 0.928, 0.947]},
}
TEXT_MAPS = [("cls+mean", {}), ("last-k", {"last_k": 3}), ("last-k", {"last_k": 6})]
IMAGE_MAPS = [("cls+mean", {}), ("last-k", {"last_k": 3})]


def t_interval(values) -> list[float]:
    """95% t interval of the mean over seeds (K - 1 degrees of freedom)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def features(dataset: str, feature_map: str, extra: dict, max_length: int, image_size: int | None, scale_bits: int):
    from promptforget.analytic.config import AnalyticConfig
    from promptforget.analytic.features import FeatureExtractor
    from promptforget.data import load_splits

    train, test = load_splits(dataset, 0.2, SEEDS[0])  # every example once: ids are row numbers
    is_text = hasattr(train, "texts")
    cfg = AnalyticConfig(backbone="minilm" if is_text else "dinov2-s14", feature_map=feature_map, max_length=max_length,
                         image_size=image_size, scale_bits=scale_bits, **extra)
    ids = np.array([int(i) for i in train.ids + test.ids])
    inputs = (train.inputs + test.inputs) if is_text else np.concatenate([train.inputs, test.inputs])
    labels = np.concatenate([train.labels, test.labels])
    order = np.argsort(ids)
    inputs = [inputs[i] for i in order] if is_text else inputs[order]
    t0 = time.perf_counter()
    q = FeatureExtractor(cfg).fixed_point(inputs, progress=True)
    return q, labels[order], time.perf_counter() - t0


def score(q, labels, dataset, heads, projection_dims, scale_bits: int) -> dict:
    from promptforget.analytic.features import project, projection_matrix
    from promptforget.analytic.head import solve
    from promptforget.analytic.stats import ExactStats, dequantize
    from promptforget.data import load_splits

    out = {}
    for m in projection_dims:
        z = q if not m else project(q, *projection_matrix(q.shape[1], m, 42))
        for head in heads:
            accs, seconds = [], []
            for seed in SEEDS:
                train, test = load_splits(dataset, 0.2, seed)
                tr, te = np.array([int(i) for i in train.ids]), np.array([int(i) for i in test.ids])
                t0 = time.perf_counter()
                st = ExactStats.of_rows(z[tr], labels[tr], int(labels.max()) + 1)
                w, b, info = solve(st, head, scale_bits)
                seconds.append(time.perf_counter() - t0)
                pred = (dequantize(z[te], scale_bits) @ w.T + b).argmax(1)
                accs.append(float((pred == labels[te]).mean()))
            out[f"{head}, M={m or 'none'}"] = {"acc": accs, "mean": float(np.mean(accs)), "ci95": t_interval(accs),
                                                "stats_and_solve_seconds": float(np.median(seconds))}
            print(f"  {head:5s} M={m or '-':>5}: {' / '.join(f'{a:.3f}' for a in accs)}  mean {np.mean(accs):.3f}",
                  flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["bbc_news", "mnist5k"])
    ap.add_argument("--max-length", type=int, default=48, help="text tokens (the PFM demo recipe's 48)")
    ap.add_argument("--image-sizes", type=int, nargs="+", default=[56, 28])
    ap.add_argument("--projection", type=int, nargs="*", default=[2000], help="M values to try besides none")
    ap.add_argument("--scale-bits", type=int, default=12)
    ap.add_argument("--out", default="runs/bench/analytic_accuracy.json")
    args = ap.parse_args()
    results = {"load_average": os.getloadavg(), "seeds": SEEDS, "datasets": {}}
    for dataset in args.datasets:
        name = Path(dataset.split(":", 1)[1]).stem if ":" in dataset else dataset
        is_text = dataset != "mnist5k"
        rows = {}
        for fmap, extra in TEXT_MAPS if is_text else IMAGE_MAPS:
            for size in [None] if is_text else args.image_sizes:
                label = fmap + "".join(f" k={v}" for v in extra.values()) + (f" {size}px" if size else "")
                print(f"[{name}] {label}", flush=True)
                q, labels, seconds = features(dataset, fmap, extra, args.max_length, size, args.scale_bits)
                rows[label] = {"feature_seconds": seconds, "dim": q.shape[1],
                               "heads": score(q, labels, dataset, ["lda", "ridge"], [0, *args.projection], args.scale_bits)}
        best = max(((f, h, r) for f, v in rows.items() for h, r in v["heads"].items()), key=lambda x: x[2]["mean"])
        results["datasets"][name] = {"variants": rows, "best": {"features": best[0], "head": best[1], **best[2]},
                                     "references": REFERENCES.get(name)}
        print(f"[{name}] best: {best[0]}, {best[1]}: mean {best[2]['mean']:.3f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"JSON -> {args.out}; load average {results['load_average']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
