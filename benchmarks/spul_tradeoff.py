"""SPUL vs the fine-tuning baselines as a trade-off: forgetting (train-forget accuracy) against keeping
(train-retain accuracy), for every point of a grid, >= 2 seeds each, with the Pareto front per method.

One stage-1 run (``spul finetune``) is given or trained; every point is then ``spul unlearn STAGE1`` or
``baseline NAME STAGE1`` through the library, with the forget set built from ``--forget``. Writes
``OUT/tradeoff.json`` (every run: settings, seed, four-split accuracies, seconds, peak RSS) and
``OUT/tradeoff.png`` (train pair and test pair, mean over seeds, Pareto front marked).

    PYTHONPATH=src python benchmarks/spul_tradeoff.py --stage1 runs/spul-s1 --forget entity:auto \\
        --spul-lr 1e-4,1e-3,3e-3 --spul-epochs 20,60 --baseline-lr 1e-4,5e-4 --seeds 0,1 --out runs/tradeoff

A sweep run in pieces (e.g. one process per method, side by side) is joined with
``--merge DIR [DIR ...] --out OUT``: same stage 1 and forget spec required; nothing is trained.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import PeakRSS  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

PAIRS = {"train": ("train_retain", "train_forget"), "test": ("test_retain", "test_forget")}


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="join the tradeoff.json of earlier sweeps of the same "
                    "stage 1 and forget spec into OUT (table, front, plot); trains nothing")
    ap.add_argument("--stage1", help="a `spul finetune` run directory (else one is trained into OUT/stage1)")
    ap.add_argument("--model", default="smollm2", help="base model when training stage 1")
    ap.add_argument("--data", default="rotten_tomatoes", help="data when training stage 1 (PFM's grammar)")
    ap.add_argument("--template", default=None)
    ap.add_argument("--n-train", type=int, default=192)
    ap.add_argument("--n-test", type=int, default=96)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--stage1-lr", type=float, default=5e-4)
    ap.add_argument("--stage1-epochs", type=int, default=2)
    ap.add_argument("--forget", default="entity:auto")
    ap.add_argument("--min-forget", type=int, default=20)
    ap.add_argument("--seeds", type=ints, default=[0, 1], help="training / forget-set seeds, >= 2")
    ap.add_argument("--spul-lr", type=floats, default=[1e-4, 1e-3, 3e-3])
    ap.add_argument("--spul-epochs", type=ints, default=[20])
    ap.add_argument("--spul-alpha", type=floats, default=[2.0])
    ap.add_argument("--spul-beta", type=floats, default=[0.5])
    ap.add_argument("--spul-tokens", type=ints, default=[30])
    ap.add_argument("--spul-warmup", type=floats, default=[0.1])
    ap.add_argument("--spul-batch-size", type=int, default=8)
    ap.add_argument("--spul-encoder-hidden", type=int, default=128)
    ap.add_argument("--baselines", default="ga_gd", help="comma-separated: ga, rl, ga_kl, ga_gd")
    ap.add_argument("--baseline-lr", type=floats, default=[1e-4, 5e-4])
    ap.add_argument("--baseline-epochs", type=ints, default=[1, 3])
    ap.add_argument("--baseline-batch-size", type=int, default=8)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--piece", action="store_true", help="one piece of a sweep, to be joined by --merge: a single "
                    "seed is allowed (the merged points then carry every piece's seeds)")
    ap.add_argument("--no-stage1-eval", action="store_true", help="skip evaluating stage 1 on the forget split (a "
                    "piece whose sibling evaluates it; --merge takes it from any piece)")
    args = ap.parse_args(argv)
    if args.merge:
        return args
    if len(set(args.seeds)) < 2 and not args.piece:
        ap.error("--seeds needs at least two seeds (or --piece, for a piece joined later by --merge)")
    return args


def grid(args) -> list[tuple[str, dict]]:
    """``(method, settings)`` for every point, seeds not included."""
    points = [("spul", {"lr": lr, "epochs": ep, "alpha": a, "beta": b, "num_virtual_tokens": n, "warmup_ratio": w})
              for lr, ep, a, b, n, w in itertools.product(args.spul_lr, args.spul_epochs, args.spul_alpha,
                                                          args.spul_beta, args.spul_tokens, args.spul_warmup)]
    for method in [m for m in args.baselines.split(",") if m]:
        points += [(method, {"lr": lr, "epochs": ep}) for lr, ep in itertools.product(args.baseline_lr, args.baseline_epochs)]
    return points


def train_stage1(args, out: Path) -> Path:
    from promptforget.spul.config import DataConfig, FinetuneConfig
    from promptforget.spul.pipeline import finetune_run

    data = DataConfig(data=args.data, template=args.template, n_train=args.n_train, n_test=args.n_test,
                      max_length=args.max_length, seed=args.seeds[0])
    cfg = FinetuneConfig(lr=args.stage1_lr, epochs=args.stage1_epochs, max_length=args.max_length, seed=args.seeds[0],
                         lora_r=args.lora_r, lora_alpha=args.lora_alpha, warmup_ratio=0.1)
    finetune_run(out, args.model, data, cfg, {"command": "spul finetune", "args": {"model": args.model, **vars(args)}})
    return out


def run_point(args, stage1: Path, method: str, settings: dict, seed: int, out: Path) -> dict:
    from promptforget.baselines.config import BaselineConfig
    from promptforget.baselines.model import Baseline
    from promptforget.spul.config import SPULConfig
    from promptforget.spul.model import SPUL
    from promptforget.spul.pipeline import accuracies, unlearn_run
    from promptforget.spul.runs import resolve_inputs

    inputs = resolve_inputs(stage1, {"forget": args.forget, "min_forget": args.min_forget, "seed": seed})
    common = {"seed": seed, "max_length": inputs.data.max_length}
    if method == "spul":
        cfg = SPULConfig(**settings, batch_size=args.spul_batch_size, encoder_hidden_size=args.spul_encoder_hidden,
                         **common)
        make, save_as = (lambda m, tok, task: SPUL(m, tok, task, cfg)), "prompt"
    else:
        cfg = BaselineConfig(method=method, **settings, batch_size=args.baseline_batch_size, lora_r=args.lora_r,
                             lora_alpha=args.lora_alpha, **common)
        make, save_as = (lambda m, tok, task: Baseline(m, tok, task, cfg)), "adapter"
    t0 = time.time()
    with PeakRSS() as mem:
        results = unlearn_run(out, inputs, make, save_as, {"command": f"tradeoff {method}", "args": settings})
    return {"method": method, "settings": settings, "seed": seed, "out": str(out),
            "accuracy": accuracies(results["evaluation"]), "seconds": round(time.time() - t0, 1),
            "peak_rss_mb": round(mem.peak / 2**20, 1), "forget": results.get("forget")}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (method, settings)."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["method"], json.dumps(r["settings"], sort_keys=True)), []).append(r)
    points = []
    for (method, key), rs in groups.items():
        acc = {}
        for split in rs[0]["accuracy"]:
            vals = [r["accuracy"][split] for r in rs if r["accuracy"][split] is not None]
            acc[split] = {"mean": statistics.fmean(vals) if vals else None,
                          "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        points.append({"method": method, "settings": json.loads(key), "seeds": [r["seed"] for r in rs], "accuracy": acc,
                       "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)})
    return points


def pareto_front(points: list[dict], retain: str, forget: str) -> list[int]:
    """Indices of the points no other point beats on both axes (higher retain, lower forget)."""
    xy = [(p["accuracy"][retain]["mean"], p["accuracy"][forget]["mean"]) for p in points]
    front = []
    for i, (r, f) in enumerate(xy):
        if r is None or f is None:
            continue
        dominated = any(r2 is not None and f2 is not None and r2 >= r and f2 <= f and (r2, f2) != (r, f)
                        for r2, f2 in xy)
        if not dominated:
            front.append(i)
    return front


def closest_to_pattern(points: list[dict], stage1: dict | None, max_forget: float = 0.20, max_drop: float = 0.03) -> list[dict]:
    """Per method, the point nearest the SPUL paper's pattern: train-forget <= max_forget with train-retain within
    max_drop of stage 1. Distance = how far the point misses each bound, summed (0: the pattern is met)."""
    if not stage1 or stage1.get("train_retain") is None:
        return []
    floor = stage1["train_retain"] - max_drop
    best: dict = {}
    for i, p in enumerate(points):
        r, f = p["accuracy"]["train_retain"]["mean"], p["accuracy"]["train_forget"]["mean"]
        if r is None or f is None:
            continue
        miss = {"forget": max(0.0, f - max_forget), "retain": max(0.0, floor - r)}
        d = miss["forget"] + miss["retain"]
        if p["method"] not in best or d < best[p["method"]]["distance"]:
            best[p["method"]] = {"method": p["method"], "point": i, "settings": p["settings"], "distance": round(d, 4),
                                 "misses_by": {k: round(v, 4) for k, v in miss.items()}, "meets": d == 0}
    return sorted(best.values(), key=lambda b: b["distance"])


def plot(points: list[dict], reference: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    methods = sorted({p["method"] for p in points})
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, (pair, (retain, forget)) in zip(axes, PAIRS.items()):
        front = set(pareto_front(points, retain, forget))
        for m in methods:
            own = [i for i, p in enumerate(points) if p["method"] == m]
            for i in own:
                p = points[i]
                x, y = p["accuracy"][retain]["mean"], p["accuracy"][forget]["mean"]
                if x is None or y is None:
                    continue
                ax.errorbar(x, y, xerr=p["accuracy"][retain]["sd"], yerr=p["accuracy"][forget]["sd"],
                            fmt="*" if i in front else "o", ms=11 if i in front else 6, color=colours[m], alpha=0.8)
            line = sorted((points[own[k]]["accuracy"][retain]["mean"], points[own[k]]["accuracy"][forget]["mean"])
                          for k in pareto_front([points[j] for j in own], retain, forget))
            if line:
                ax.plot(*zip(*line), "-", color=colours[m], label=f"{m} (front)")
        if reference:
            ax.plot(reference[retain], reference[forget], "kX", ms=10, label="stage 1")
        ax.set_xlabel(f"{retain} accuracy (higher: kept)")
        ax.set_ylabel(f"{forget} accuracy (lower: forgotten)")
        ax.set_title(f"{pair} pair; star = on the overall Pareto front")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(record: dict) -> list[str]:
    """The table of docs/results.md: mean +- sd over seeds (%), peak RSS, and whether the point is on the front."""
    fronts = {pair: set(record.get(f"pareto_{pair}", [])) for pair in PAIRS}
    lines = ["| method | lr | epochs | seeds | train-retain | train-forget | test-retain | test-forget | peak RSS (MB) "
             "| on the front (train / test) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    s1 = record.get("stage1_accuracy")
    if s1:
        lines.append("| stage 1 | | | | " + " | ".join("-" if s1.get(k) is None else f"{100 * s1[k]:.1f}" for k in
                                                    ("train_retain", "train_forget", "test_retain", "test_forget"))
                     + " | | |")

    def cell(acc):
        return "-" if acc["mean"] is None else f"{100 * acc['mean']:.1f} +- {100 * acc['sd']:.1f}"

    for i, p in enumerate(record["points"]):
        a, st = p["accuracy"], p["settings"]
        marks = " / ".join("yes" if i in fronts[pair] else "no" for pair in PAIRS)
        lines.append(f"| {p['method']} | {st.get('lr'):g} | {st.get('epochs')} | {len(p['seeds'])} | "
                     + " | ".join(cell(a[k]) for k in ("train_retain", "train_forget", "test_retain", "test_forget"))
                     + f" | {p['peak_rss_mb']:.0f} | {marks} |")
    for c in record.get("closest_to_pattern", []):
        st = c["settings"]
        verdict = "meets it" if c["meets"] else (f"misses train-forget <= 20% by {100 * c['misses_by']['forget']:.1f} and "
                                                 f"train-retain within 3 points by {100 * c['misses_by']['retain']:.1f} points")
        lines.append(f"\nClosest {c['method']} point to the paper's pattern (lr {st.get('lr'):g}, {st.get('epochs')} "
                     f"epochs): {verdict}.")
    return lines


def merge(dirs: list[str]) -> dict:
    """One record from sweeps run in pieces over the same stage 1 and forget spec."""
    missing = [d for d in dirs if not (Path(d) / "tradeoff.json").is_file()]
    if missing:
        raise SystemExit(f"--merge: no tradeoff.json in {', '.join(missing)}")
    records = [json.loads((Path(d) / "tradeoff.json").read_text()) for d in dirs]
    stage1s = {str(Path(r["stage1"]).resolve()) for r in records}  # one run, named relative or absolute
    if len(stage1s) > 1:
        raise SystemExit(f"--merge: the sweeps differ in their stage 1: {sorted(stage1s)}")
    specs = {r["args"]["forget"] for r in records}
    if len(specs) > 1:
        raise SystemExit(f"--merge: the sweeps differ in their forget spec: {sorted(specs)}")
    record = {"merged_from": [str(d) for d in dirs], "stage1": records[0]["stage1"], "args": records[0]["args"],
              "runs": [run for r in records for run in r["runs"]],
              "seconds": sum(r.get("seconds", 0) for r in records)}
    for r in records:
        if "stage1_accuracy" in r:
            record["stage1_accuracy"] = r["stage1_accuracy"]
    record["points"] = summarise(record["runs"])
    for pair, (retain, forget) in PAIRS.items():
        record[f"pareto_{pair}"] = pareto_front(record["points"], retain, forget)
    record["closest_to_pattern"] = closest_to_pattern(record["points"], record.get("stage1_accuracy"))
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        from promptforget.utils.io import atomic_write_json

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = merge(args.merge)
        atomic_write_json(out / "tradeoff.json", record)
        plot(record["points"], record.get("stage1_accuracy"), out / "tradeoff.png")
        print("\n".join(markdown(record)))
        print(f"-> {out / 'tradeoff.json'}, {out / 'tradeoff.png'}")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from promptforget.utils.io import atomic_write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stage1 = Path(args.stage1) if args.stage1 else train_stage1(args, out / "stage1")
    record = {"args": vars(args), "stage1": str(stage1), "runs": []}
    stage1_results = json.loads((stage1 / "results.json").read_text())
    t_all = time.time()
    for k, ((method, settings), seed) in enumerate(itertools.product(grid(args), args.seeds)):
        run = run_point(args, stage1, method, settings, seed, out / "runs" / f"{k:03d}-{method}-s{seed}")
        record["runs"].append(run)
        print(json.dumps({k: run[k] for k in ("method", "settings", "seed", "accuracy", "seconds")}), flush=True)
        record["points"] = summarise(record["runs"])
        record["seconds"] = round(time.time() - t_all, 1)
        atomic_write_json(out / "tradeoff.json", record)
    if not args.no_stage1_eval:
        # Stage 1 on the same four splits: the runs do not keep their evaluation of stage 1, so evaluate it once.
        from promptforget.spul.pipeline import accuracies, evaluate_run
        from promptforget.spul.runs import resolve_inputs

        inputs = resolve_inputs(stage1, {"forget": args.forget, "min_forget": args.min_forget, "seed": args.seeds[0]})
        ev = evaluate_run(out / "stage1_eval", inputs, {"command": "tradeoff stage1"})
        record["stage1_accuracy"] = accuracies(ev["evaluation"])
    record["stage1_train_acc"] = stage1_results["evaluation"]["train"]["accuracy"]
    for pair, (retain, forget) in PAIRS.items():
        record[f"pareto_{pair}"] = pareto_front(record["points"], retain, forget)
    record["closest_to_pattern"] = closest_to_pattern(record["points"], record.get("stage1_accuracy"))
    atomic_write_json(out / "tradeoff.json", record)
    plot(record["points"], record.get("stage1_accuracy"), out / "tradeoff.png")
    print("\n".join(markdown(record)))
    print(f"-> {out / 'tradeoff.json'}, {out / 'tradeoff.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
