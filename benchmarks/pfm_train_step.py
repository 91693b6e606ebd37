"""PFM training step: our vectorised objective (one forward of 2B with gathered prompt sets and key
masks) vs a straightforward reference (per-sample Python loop building each prompt set, and, since the
sets have different sizes, one forward per sample and view). Same backbone, batch, objective.

    python benchmarks/pfm_train_step.py [--classes 10] [--batch 32] [--steps 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import timeit, vit_dir, write_result
from promptforget.pfm import PFMConfig, PFMModel
from promptforget.pfm.objective import kl_uniform_to_softmax, pfm_loss


def naive_loss(model: PFMModel, pixel_values: torch.Tensor, labels: torch.Tensor, rng: random.Random):
    """The same objective written the obvious way: per-sample set building and per-sample forwards."""
    c = model.num_classes
    ce_terms, kl_terms = [], []
    for i in range(len(labels)):
        y = int(labels[i])
        wrong = [j for j in range(c) if j != y]
        rng.shuffle(wrong)
        view_a = [y] + wrong[: rng.randint(0, c - 1)]
        rng.shuffle(wrong)
        view_b = wrong[: rng.randint(0, c - 1)]
        x = {"pixel_values": pixel_values[i : i + 1]}
        la = model(x, torch.tensor([view_a]), torch.ones(1, len(view_a), dtype=torch.bool))
        lb = model(x, torch.tensor([view_b], dtype=torch.long).reshape(1, -1), torch.ones(1, len(view_b), dtype=torch.bool))
        ce_terms.append(F.cross_entropy(la, labels[i : i + 1]))
        kl_terms.append(kl_uniform_to_softmax(lb))
    return torch.stack(ce_terms).mean() + torch.stack(kl_terms).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=32)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        backbone = vit_dir(Path(tmp), image_size=args.image_size)
        model = PFMModel(PFMConfig(backbone=backbone, class_names=[f"c{i}" for i in range(args.classes)])).to(device).train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
        y = torch.arange(args.batch, device=device) % args.classes
        gen, rng = torch.Generator().manual_seed(0), random.Random(0)

        def ours():
            loss, _ = pfm_loss(model, {"pixel_values": x}, y, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def naive():
            loss = naive_loss(model, x, y, rng)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t_ours = timeit(ours, repeats=args.steps)
        t_naive = timeit(naive, repeats=args.steps)
    ratio = t_naive["median_s"] / t_ours["median_s"]
    result = {
        "benchmark": "pfm_train_step",
        "device": device,
        "settings": vars(args) | {"backbone": "ViT 6x192 (random weights), patch 8"},
        "ours": t_ours | {"samples_per_s": args.batch / t_ours["median_s"]},
        "naive": t_naive | {"samples_per_s": args.batch / t_naive["median_s"]},
        "speedup": ratio,
    }
    path = write_result("pfm_train_step", result)
    print(f"PFM train step ({device}, C={args.classes}, batch {args.batch}): ours {result['ours']['samples_per_s']:.1f} img/s, "
          f"naive {result['naive']['samples_per_s']:.1f} img/s, speedup {ratio:.2f}x  -> {path}")


if __name__ == "__main__":
    main()
