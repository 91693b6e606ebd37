"""Inference cost of class prompts: throughput of the plain backbone vs a PFM with C class prompts,
token style (prompts are input tokens, the paper) and prefix style (prompts are only extra keys/values).

Backbone: a random-weight ViT with DINOv2-S/14 dimensions (12 layers, 384 wide, 6 heads) at 224 px
(256 patches + CLS), batch 8. Synthetic class counts C = 10, 100, 1000 (10,000 on request). Prefix style
is also timed with prompts only from block ``--prompt-layer`` on (the blocks below run without them).
Memory: peak GPU memory on CUDA, else the process's peak resident set during the row (sampled).

    python benchmarks/prompt_overhead.py [--classes 10 100 1000 10000] [--image-size 224] [--batch 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _common import PeakRSS, timeit, vit_dir, write_result
from promptforget.pfm import PFMConfig, PFMModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt-layer", type=int, default=6, help="also time prefix style with prompts from this block on (0: skip)")
    ap.add_argument("--styles", nargs="+", default=["token", "prefix"], choices=["token", "prefix"])
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        backbone = vit_dir(Path(tmp), image_size=args.image_size, patch=14, hidden=384, layers=12, heads=6)
        x = {"pixel_values": torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)}
        bases = []
        empty = (torch.zeros(args.batch, 0, dtype=torch.long), torch.zeros(args.batch, 0, dtype=torch.bool))
        variants = [(style, 0) for style in args.styles]
        if args.prompt_layer and "prefix" in args.styles:
            variants.append(("prefix", args.prompt_layer))
        for c in args.classes:
            for style, layer in variants:
                m = PFMModel(PFMConfig(backbone=backbone, class_names=[f"c{i}" for i in range(c)], prompt_style=style,
                                       prompt_layer=layer))
                m = m.to(device).eval()
                # The plain backbone (this model with no prompt at all) is timed right before each row,
                # so machine load and clock drift hit both sides of the ratio alike.
                base = timeit(lambda: m(x, *empty), repeats=args.repeats)
                bases.append(base)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                with PeakRSS() as rss:
                    t = timeit(lambda: m(x), repeats=args.repeats)
                memory = ({"gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if device == "cuda"
                          else rss.as_dict())
                row = {"classes": c, "style": style, "prompt_layer": layer, **t, "images_per_s": args.batch / t["median_s"],
                       "plain_median_s": base["median_s"], "overhead_vs_plain": t["median_s"] / base["median_s"], **memory}
                rows.append(row)
                mem = f"{row['gpu_peak_mb']} MB GPU peak" if device == "cuda" else f"peak RSS {row['rss_peak_mb']} MB"
                print(f"C={c:>5} {style:>6} from block {layer}: {row['images_per_s']:.1f} img/s, "
                      f"{row['overhead_vs_plain']:.2f}x the plain backbone, {mem}", flush=True)
                m = None  # free this model before the next is built
    plain = min(bases, key=lambda b: b["median_s"])
    result = {"benchmark": "prompt_overhead", "device": device, "settings": vars(args),
              "plain_backbone": plain | {"images_per_s": args.batch / plain["median_s"]}, "rows": rows}
    print(f"-> {write_result('prompt_overhead', result)}")


if __name__ == "__main__":
    main()
