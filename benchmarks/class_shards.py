"""Class shards: what a cheaper exact forget costs in accuracy, and what it saves in time, in one run.

For each shard count S (``--shards 1 2``; S=1 is the ordinary PFM), trains the recipe as S class shards
(:mod:`promptforget.pfm.shards`) on one split and measures:
- accuracy on the test split under each way of combining the shards' scores;
- the exact forget of ``--forget``: the shard holding it retrained from scratch without it (S=1: the whole
  model), timed ``--repeats`` times, alternating between the S values, and the retained accuracy after it
  (test examples of the other classes).
A plain LoRA fine-tune (``objective=plain``, no prompts) gives the utility a user would otherwise get.
The frozen lower blocks run once for all models. Prints a table with the load average; writes JSON to
runs/bench/class_shards.json.

    python benchmarks/class_shards.py [--dataset bbc_news --forget tech --shards 1 2] [--shard-epochs steps] \
        [--set epochs=2 --set prompt_layer=3 --set max_length=48] [--max-train N] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import replace

import numpy as np
import torch
from _common import write_result
from forgetting_candidates import parse_sets

from promptforget.data.registry import get_dataset, load_splits
from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel
from promptforget.pfm.run import stratified_cap
from promptforget.pfm.shards import COMBINE_RULES, ShardedPFM, shard_classes
from promptforget.pfm.train import fit

TEXT_RECIPE = {"epochs": 2, "prompt_layer": 3, "max_length": 48}


def accuracy(p: np.ndarray, labels: np.ndarray, rows=None) -> float:
    rows = np.arange(len(labels)) if rows is None else rows
    return float((p[rows].argmax(1) == labels[rows]).mean())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="bbc_news")
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--backbone", default=None, help="default: minilm for text, dinov2-s14 for images")
    ap.add_argument("--forget", default=None, help="class to forget (default: the first)")
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", action="append", default=[], help="recipe knob, key=value, over PFMConfig's "
                    f"defaults (text sets start from {TEXT_RECIPE})")
    ap.add_argument("--shard-epochs", default="same", help="epochs of each shard when S > 1: 'same' (the "
                    "recipe's), 'steps' (S x the recipe's: about the optimiser steps of one model), or a number")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.shard_epochs not in ("same", "steps") and not args.shard_epochs.isdigit():
        raise SystemExit(f"error: --shard-epochs {args.shard_epochs!r}: give 'same', 'steps' or a number of epochs")
    spec = get_dataset(args.dataset)
    knobs = {**(TEXT_RECIPE if spec.kind != "image" else {}), **parse_sets(args.set)}
    cfg = PFMConfig(**knobs)
    train, test = load_splits(args.dataset, seed=cfg.seed)
    train = stratified_cap(train, args.max_train, cfg.seed)
    classes = list(train.class_names)
    forget = args.forget or classes[0]
    if forget not in classes:
        raise SystemExit(f"error: --forget {forget!r} is not a class of {args.dataset} ({classes})")
    for s in args.shards:
        try:
            groups = shard_classes(classes, s)
        except ValueError as e:
            raise SystemExit(f"error: --shards {s}: {e}") from None
        if len(next(g for g in groups if forget in g)) < 3:
            raise SystemExit(f"error: with {s} shards {forget!r} sits in a shard of 2 classes, which an exact forget "
                             "would leave with one; pick another class or shard count")
    cfg = replace(cfg, backbone=args.backbone or ("minilm" if spec.kind == "text" else "dinov2-s14"),
                  class_names=classes)

    def shard_epochs(s: int) -> int | None:
        if s == 1 or args.shard_epochs == "same":
            return None
        return s * cfg.epochs if args.shard_epochs == "steps" else int(args.shard_epochs)

    load_before = os.getloadavg()
    y_train, y_test = np.asarray(train.labels), np.asarray(test.labels)
    retained = np.flatnonzero(y_test != classes.index(forget))

    plain = PFMModel(replace(cfg, objective="plain"))
    x_train, x_test = plain.encode_dataset(train.inputs), plain.encode_dataset(test.inputs)
    t0 = time.perf_counter()
    fit(plain, x_train, torch.as_tensor(y_train), progress=False)
    plain_s = time.perf_counter() - t0
    with torch.no_grad():
        p_plain = torch.cat([torch.softmax(plain({k: v[i:i + 64] for k, v in x_test.items()}), 1)
                             for i in range(0, len(y_test), 64)]).numpy()
    rows = {"plain": {"train_s": plain_s, "accuracy": accuracy(p_plain, y_test)}}
    print(f"plain fine-tune: accuracy {rows['plain']['accuracy']:.3f}, trained in {plain_s:.0f} s", flush=True)
    del plain

    models = {}
    for s in args.shards:
        model = ShardedPFM(cfg, s, shard_epochs=shard_epochs(s))
        seconds = model.fit(x_train, y_train)
        models[s] = model
        p = {rule: model.predict_proba(x_test, combine=rule) for rule in COMBINE_RULES}
        rows[s] = {"shards": [sh.class_names for sh in model.shards], "epochs": model.config.epochs,
                   "train_s": sum(seconds),
                   "shard_train_s": seconds, "accuracy": {r: accuracy(p[r], y_test) for r in COMBINE_RULES},
                   "retained_before": {r: accuracy(p[r], y_test, retained) for r in COMBINE_RULES}, "exact_s": []}
        print(f"{s} shard(s), {model.config.epochs} epochs: trained in {sum(seconds):.0f} s; accuracy "
              + ", ".join(f"{r} {v:.3f}" for r, v in rows[s]["accuracy"].items()), flush=True)
    for i in range(args.repeats):
        for s in args.shards:
            model = copy.deepcopy(models[s])
            t = time.perf_counter()
            model.exact_forget([forget], x_train, y_train)
            rows[s]["exact_s"].append(time.perf_counter() - t)
            if i == 0:
                rows[s]["retained_after"] = {r: accuracy(model.predict_proba(x_test, combine=r), y_test, retained)
                                             for r in COMBINE_RULES}
            print(f"repeat {i + 1}, {s} shard(s): exact forget of {forget!r} {rows[s]['exact_s'][-1]:.1f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    base = args.shards[0]
    med = {s: statistics.median(rows[s]["exact_s"]) for s in args.shards}
    print(f"\n| shards | accuracy ({' / '.join(COMBINE_RULES)}) | retained after forget | exact forget | "
          f"vs {base} shard(s) |\n|---:|---|---|---:|---:|")
    print(f"| plain | {rows['plain']['accuracy']:.3f} | | | |")
    for s in args.shards:
        r = rows[s]
        r["exact_median_s"], r["exact_ratio_vs_first"] = med[s], med[s] / med[base]
        print(f"| {s} | {' / '.join(f'{v:.3f}' for v in r['accuracy'].values())} | "
              f"{' / '.join(f'{v:.3f}' for v in r['retained_after'].values())} | {med[s]:.1f} s | "
              f"{r['exact_ratio_vs_first']:.2f}x |")
    result = {"settings": {**vars(args), "forget": forget, "classes": classes, "recipe": knobs,
                           "n_train": len(y_train), "n_test": len(y_test)},
              "rows": {str(k): v for k, v in rows.items()}, "loadavg_before": load_before,
              "loadavg_after": os.getloadavg()}
    path = write_result("class_shards", result)
    print(f"load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; -> {path}")
    return result


if __name__ == "__main__":
    main()
