"""PFM training step: ours vs two references, timed side by side (interleaved, best of N repeats).

- ours: `pfm_loss` as `fit` runs it: a prompt-set size drawn per sample and view, sets cut from one
  argsort, both views as one batch of 2B whose token-style forward is grouped by set size.
- published: our re-implementation of the published PFM code's algorithm (perceivelab/
  PreForgettableModels, `preforgettable/models.py`): ONE set size per view per batch (k_A, k_B ~ U{0..C-1};
  view A adds the own prompt, k_B = 0 means no prompt at all), each sample's set built in a Python
  loop (own class + k random others, shuffled), two forwards of B (one per view), loss = CE(view A) +
  KL(uniform || softmax(view B)), backbone in eval mode (LoRA dropout off), as there.
- naive: the same objective as ours written the obvious way: per-sample set building and, since the
  sets differ in size, one forward per sample and view.

Same model, weights, batch and trainable parameters for all three. Also reported: sequence positions
(input tokens + prompt slots, padding included) pushed per sample and view.

    python benchmarks/pfm_train_step.py [--classes 10 100] [--styles token prefix] [--batch 32] [--steps 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import vit_dir, write_result
from promptforget.pfm import PFMConfig, PFMModel
from promptforget.pfm.objective import kl_uniform_to_softmax, pfm_loss


def naive_loss(model: PFMModel, pixel_values: torch.Tensor, labels: torch.Tensor, rng: random.Random):
    """Our objective written the obvious way: per-sample set building and per-sample forwards."""
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


def published_loss(model: PFMModel, pixel_values: torch.Tensor, labels: torch.Tensor, rng: random.Random):
    """The published algorithm: one set size per view per batch, sets built per sample, two forwards of B."""
    c, b = model.num_classes, len(labels)
    k_a, k_b = rng.randrange(c), rng.randrange(c)
    sets_a, sets_b = [], []
    for y in labels.tolist():
        others = [j for j in range(c) if j != y]
        view_a = [y] + rng.sample(others, k_a)
        rng.shuffle(view_a)
        sets_a.append(view_a)
        sets_b.append(rng.sample(others, k_b))
    x = {"pixel_values": pixel_values}
    logits_a = model(x, torch.tensor(sets_a), torch.ones(b, k_a + 1, dtype=torch.bool))
    ids_b = torch.tensor(sets_b, dtype=torch.long).reshape(b, k_b)  # k_b = 0: no prompt at all
    logits_b = model(x, ids_b, torch.ones(b, k_b, dtype=torch.bool))
    return F.cross_entropy(logits_a, labels) + kl_uniform_to_softmax(logits_b)


class PositionCounter:
    """Counts sequence positions (tokens + prompt slots, padding included) entering the encoder."""

    def __init__(self, model: PFMModel):
        self.positions = self.rows = 0
        encode = model.encoder.encode

        def counted(tokens, key_mask, start=0):
            self.positions += tokens.shape[0] * tokens.shape[1]
            return encode(tokens, key_mask, start)

        model.encoder.encode = counted

    def take(self) -> int:
        n, self.positions = self.positions, 0
        return n


def run_config(backbone: str, c: int, style: str, args, x, y) -> dict:
    def make(prompt_style):
        m = PFMModel(PFMConfig(backbone=backbone, class_names=[f"c{i}" for i in range(c)], prompt_style=prompt_style))
        return m, torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3), PositionCounter(m)

    model, opt, counter = make(style)
    # The published code has token-style prompts only: a prefix-style row is compared with it as it is.
    ref, ref_opt, ref_counter = (model, opt, counter) if style == "token" else make("token")
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)

    def step(m, optimizer, loss_fn, train: bool):
        def fn():
            m.train(train)
            loss = loss_fn()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return fn

    impls = {
        "ours": step(model, opt, lambda: pfm_loss(model, {"pixel_values": x}, y, gen)[0], train=True),
        "published": step(ref, ref_opt, lambda: published_loss(ref, x, y, rng), train=False),
    }
    if args.naive:
        impls["naive"] = step(model, opt, lambda: naive_loss(model, x, y, rng), train=True)
    times = {k: [] for k in impls}
    positions = {k: 0 for k in impls}
    for name, fn in impls.items():  # warm-up
        fn()
    counter.take(), ref_counter.take()
    for _ in range(args.steps):  # interleaved, so load changes hit every implementation alike
        for name, fn in impls.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            positions[name] += counter.take() + (ref_counter.take() if ref_counter is not counter else 0)
    row = {"classes": c, "style": style, "trainable_parameters": model.num_parameters()}
    for name in impls:
        best = min(times[name])
        row[name] = {"best_s": best, "median_s": sorted(times[name])[len(times[name]) // 2],
                     "samples_per_s": args.batch / best,
                     "positions_per_sample_view": positions[name] / (args.steps * 2 * args.batch)}
    row["ours_vs_published"] = row["published"]["best_s"] / row["ours"]["best_s"]
    if args.naive:
        row["ours_vs_naive"] = row["naive"]["best_s"] / row["ours"]["best_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--styles", nargs="+", default=["token", "prefix"], choices=["token", "prefix"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed repeats per implementation (best is reported)")
    ap.add_argument("--image-size", type=int, default=56)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the per-sample loop (slow at C = 100)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backbone = vit_dir(Path(tmp), image_size=args.image_size, patch=args.patch, hidden=args.hidden,
                           layers=args.layers, heads=args.hidden // 64)
        x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
        y = torch.arange(args.batch, device=device) % max(args.classes)
        for c in args.classes:
            for style in args.styles:
                row = run_config(backbone, c, style, args, x, y % c)
                rows.append(row)
                naive = f", vs naive {row['ours_vs_naive']:.2f}x" if args.naive else ""
                print(f"C={c:>4} {style:>6}: ours {row['ours']['samples_per_s']:.1f} img/s "
                      f"({row['ours']['positions_per_sample_view']:.1f} positions), published "
                      f"{row['published']['samples_per_s']:.1f} img/s ({row['published']['positions_per_sample_view']:.1f}): "
                      f"{row['ours_vs_published']:.2f}x{naive}", flush=True)
    result = {"benchmark": "pfm_train_step", "device": device,
              "settings": vars(args) | {"backbone": f"ViT {args.layers}x{args.hidden} (random weights), patch {args.patch}"},
              "rows": rows}
    print(f"-> {write_result('pfm_train_step', result)}")


if __name__ == "__main__":
    main()
