"""Exact forget (`forget --exact`) against the retrains a user would otherwise run, side by side in one run.

Trains one run, then, ``--repeats`` times in alternation on the same machine:
- **exact**: ``exact_forget`` on a copy of the run -- data check, instant forget, retrain of the run's recipe
  without the class, atomic install, ledger entries -- timed end to end;
- **PFM retrain**: the same recipe trained from scratch on the split minus the class and saved, with no
  ledger or checks (what the exact forget does at its core);
- **plain retrain**: an ordinary LoRA fine-tune (``objective=plain``, no prompts) trained from scratch on
  the split minus the class: the retrain a user without promptforget runs.

Prints each pair's seconds, the ratios (medians over repeats) and the load average before and after, and
writes JSON to runs/bench/exact_forget_cost.json.

    python benchmarks/exact_forget_cost.py [--dataset bbc_news --max-train 400 --forget sport] \
        [--set epochs=2 --set prompt_layer=3 --set max_length=48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import write_result
from forgetting_candidates import parse_sets

from promptforget.data.registry import get_dataset, load_splits
from promptforget.pfm.config import PFMConfig
from promptforget.pfm.exact import exact_forget
from promptforget.pfm.model import PFMModel
from promptforget.pfm.run import load_split, train_run
from promptforget.pfm.train import fit
from promptforget.store.layout import read_config_record

TEXT_RECIPE = {"epochs": 2, "prompt_layer": 3, "max_length": 48}


def retrain_from_scratch(run: Path, forget: str, out: Path, **overrides) -> float:
    """The run's recipe (with ``overrides``) trained from scratch on its split minus ``forget``, saved to ``out``."""
    cfg = replace(PFMConfig.from_dict(read_config_record(run)["config"]), **overrides)
    train, _ = load_split(run)
    t0 = time.perf_counter()
    kept = train.subset(np.flatnonzero(train.labels != cfg.class_names.index(forget)))
    model = PFMModel(cfg)
    fit(model, model.encode_dataset(kept.inputs), torch.as_tensor(kept.labels), progress=False)
    if cfg.objective != "plain":
        model.forget([forget])
    model.save_pretrained(out)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="bbc_news")
    ap.add_argument("--max-train", type=int, default=400)
    ap.add_argument("--backbone", default=None, help="default: minilm for text, dinov2-s14 for images")
    ap.add_argument("--forget", default=None, help="class to forget (default: the first)")
    ap.add_argument("--set", action="append", default=[], help="recipe knob, key=value, over "
                    f"PFMConfig's defaults (text sets start from {TEXT_RECIPE})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args(argv)
    knobs = {**(TEXT_RECIPE if get_dataset(args.dataset).kind != "image" else {}), **parse_sets(args.set)}
    classes = list(load_splits(args.dataset)[0].class_names)
    forget = args.forget or classes[0]
    if forget not in classes:
        raise SystemExit(f"error: --forget {forget!r} is not a class of {args.dataset} ({classes})")
    work = Path(args.out or tempfile.mkdtemp(prefix="exact-cost-"))
    base = work / "base"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    train_run(base, args.dataset, max_train=args.max_train, backbone=args.backbone, overwrite=True, **knobs)
    base_seconds = time.perf_counter() - t0
    rows = []
    for i in range(args.repeats):
        run = work / f"exact-{i}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run)
        t = time.perf_counter()
        _, entry = exact_forget(run, [forget], reason="benchmark", log=lambda *_: None)
        exact_s = time.perf_counter() - t
        pfm_s = retrain_from_scratch(base, forget, work / f"pfm-{i}")
        plain_s = retrain_from_scratch(base, forget, work / f"plain-{i}", objective="plain")
        rows.append({"exact_s": exact_s, "exact_train_s": entry["train_seconds"], "pfm_retrain_s": pfm_s,
                     "plain_retrain_s": plain_s, "load_after": os.getloadavg()[0]})
        print(f"pair {i + 1}: exact {exact_s:.1f} s (of which training {entry['train_seconds']:.1f} s); "
              f"PFM retrain {pfm_s:.1f} s; plain fine-tune retrain {plain_s:.1f} s; load {rows[-1]['load_after']:.1f}",
              flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("exact_s", "pfm_retrain_s", "plain_retrain_s")}
    result = {"settings": {**vars(args), "forget": forget, "classes": classes}, "base_train_s": base_seconds,
              "pairs": rows, "median": med, "ratio_exact_vs_pfm_retrain": med["exact_s"] / med["pfm_retrain_s"],
              "ratio_exact_vs_plain_retrain": med["exact_s"] / med["plain_retrain_s"],
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    path = write_result("exact_forget_cost", result)
    print(f"medians over {args.repeats}: exact {med['exact_s']:.1f} s, PFM retrain {med['pfm_retrain_s']:.1f} s, "
          f"plain retrain {med['plain_retrain_s']:.1f} s; exact / PFM retrain = "
          f"{result['ratio_exact_vs_pfm_retrain']:.2f}x, exact / plain = {result['ratio_exact_vs_plain_retrain']:.2f}x "
          f"(load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}) -> {path}")
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
