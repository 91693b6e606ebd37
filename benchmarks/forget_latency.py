"""Forget latency: PFM `forget` (in memory, and durable: artefact + ledger on disk, fsynced) vs
retraining without the class, and vs one epoch of a fine-tuning unlearning baseline (GA+GD:
gradient ascent on the forgotten class + descent on the retained ones).

Setting: DINOv2-S/14 dimensions (12 layers, 384 wide; random weights: cost does not depend on
them) at 42 px, C = 10 classes, MNIST-5k sizes (4,000 training images, 400 per class), batch 32.
Retraining and the baseline epoch are timed over a few real optimisation steps and scaled by the
number of steps they take (retrain: ceil(3,600 / 32) steps x epochs; GA+GD: one epoch over the retain
set, forget batches alongside); the scaled figures are labelled as such in the JSON.

    python benchmarks/forget_latency.py [--epochs 10] [--steps 3] [--repeats 20]
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import timeit, vit_dir, write_result
from promptforget.pfm import PFMConfig, PFMModel
from promptforget.pfm.objective import pfm_loss
from promptforget.store.durable import forget as durable_forget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the retraining recipe (paper: 10)")
    ap.add_argument("--train-size", type=int, default=4000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=42)
    ap.add_argument("--steps", type=int, default=3, help="optimisation steps actually timed")
    ap.add_argument("--repeats", type=int, default=20, help="forgets timed")
    args = ap.parse_args()
    names = [f"c{i}" for i in range(args.classes)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone = vit_dir(tmp, image_size=args.image_size, patch=14, hidden=384, layers=12, heads=6)
        model = PFMModel(PFMConfig(backbone=backbone, class_names=names))
        # In memory: delete a prompt (restore the bank between repeats).
        bank = model.prompts
        def mem():
            model.prompts = bank
            model.forget(["c3"])
        t_mem = timeit(mem, repeats=args.repeats, warmup=2)
        model.prompts = bank
        # Durable: artefact rewritten atomically + pending/commit ledger entries, all fsynced.
        model.save_pretrained(tmp / "run0")
        durable = []
        for i in range(args.repeats):
            run = tmp / f"run{i + 1}"
            shutil.copytree(tmp / "run0", run)
            t = time.perf_counter()
            durable_forget(run, ["c3"], reason="benchmark", request_id=f"bench-{i}", source="benchmark")
            durable.append(time.perf_counter() - t)
        durable.sort()
        t_durable = {"median_s": durable[len(durable) // 2], "min_s": durable[0], "max_s": durable[-1], "repeats": len(durable)}

        # Retraining: the PFM recipe's training step on the retained classes, scaled to the whole run.
        x = {"pixel_values": torch.randn(args.batch, 3, args.image_size, args.image_size)}
        y = torch.arange(args.batch) % args.classes
        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        gen = torch.Generator().manual_seed(0)

        def pfm_step():
            loss, _ = pfm_loss(model, x, y, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t_step = timeit(pfm_step, repeats=args.steps)
        retain = args.train_size * (args.classes - 1) // args.classes
        retrain_steps = math.ceil(retain / args.batch) * args.epochs
        retrain_s = t_step["median_s"] * retrain_steps

        # GA+GD baseline, one epoch: per retain batch, one descent step + one ascent step on a forget batch.
        base = copy.deepcopy(model)
        opt2 = torch.optim.Adam([p for p in base.parameters() if p.requires_grad], lr=1e-5)

        def gagd_step():
            loss = F.cross_entropy(base(x), y) - F.cross_entropy(base(x), torch.full_like(y, 3))
            opt2.zero_grad()
            loss.backward()
            opt2.step()

        t_gagd = timeit(gagd_step, repeats=args.steps)
        gagd_s = t_gagd["median_s"] * math.ceil(retain / args.batch)

    result = {
        "benchmark": "forget_latency",
        "settings": vars(args) | {"backbone": "ViT with DINOv2-S/14 dimensions, random weights"},
        "forget_in_memory": t_mem,
        "forget_durable": t_durable,
        "retrain": {"step": t_step, "steps": retrain_steps, "seconds_scaled_from_steps": retrain_s},
        "ga_gd_one_epoch": {"step": t_gagd, "steps": math.ceil(retain / args.batch), "seconds_scaled_from_steps": gagd_s},
        "ratio_retrain_vs_forget_in_memory": retrain_s / t_mem["median_s"],
        "ratio_retrain_vs_forget_durable": retrain_s / t_durable["median_s"],
        "ratio_ga_gd_epoch_vs_forget_durable": gagd_s / t_durable["median_s"],
    }
    path = write_result("forget_latency", result)
    print(f"forget in memory: {1e3 * t_mem['median_s']:.3f} ms;  durable (artefact + ledger, fsync): {1e3 * t_durable['median_s']:.1f} ms")
    print(f"retrain without the class: {retrain_s:.0f} s ({retrain_steps} steps x {t_step['median_s']:.2f} s);  "
          f"GA+GD one epoch: {gagd_s:.0f} s")
    print(f"ratios: retrain / in-memory forget = {result['ratio_retrain_vs_forget_in_memory']:,.0f}x;  "
          f"retrain / durable forget = {result['ratio_retrain_vs_forget_durable']:,.0f}x;  "
          f"GA+GD epoch / durable forget = {result['ratio_ga_gd_epoch_vs_forget_durable']:,.0f}x  -> {path}")


if __name__ == "__main__":
    main()
