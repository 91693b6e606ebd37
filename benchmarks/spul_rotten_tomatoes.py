"""End-to-end SPUL benchmark on Rotten Tomatoes with SmolLM2-135M-Instruct (offline, CPU-sized).

Pipeline: subsample RT -> cluster forget set (MiniLM + k-means) -> stage-1 LoRA fine-tune (merged)
-> SPUL soft prompt -> baselines GA, RL, GA+KL, GA+GD (LoRA, one epoch each) -> 4-split evaluation of
every model, generation check, parameter counts and per-phase peak RSS. Everything goes to
``RUN/results.json`` (rewritten atomically after each phase), prompts/adapters to ``RUN/<method>/``.

    PYTHONPATH=src python benchmarks/spul_rotten_tomatoes.py --out runs/spul_rt
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import PeakRSS  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

SPLITS = ("train_retain", "train_forget", "test_retain", "test_forget")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/spul_rotten_tomatoes")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n-train", type=int, default=192)
    ap.add_argument("--n-test", type=int, default=96)
    ap.add_argument("--forget", default="cluster:8:1:15")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage1-lr", type=float, default=5e-4)
    ap.add_argument("--stage1-epochs", type=int, default=2)
    ap.add_argument("--stage1-batch-size", type=int, default=16)
    ap.add_argument("--spul-lr", type=float, default=1e-2)
    ap.add_argument("--spul-epochs", type=int, default=6)
    ap.add_argument("--spul-batch-size", type=int, default=8)
    ap.add_argument("--spul-alpha", type=float, default=1.0)
    ap.add_argument("--spul-beta", type=float, default=0.5)
    ap.add_argument("--spul-virtual-tokens", type=int, default=30)
    ap.add_argument("--baseline-lr", type=float, default=5e-4)
    ap.add_argument("--baseline-batch-size", type=int, default=8)
    ap.add_argument("--baselines", default="ga,rl,ga_kl,ga_gd")
    ap.add_argument("--skip-spul", action="store_true")
    ap.add_argument("--eval-batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 avoids OpenMP oversubscription on a shared, busy CPU")
    ap.add_argument("--save-stage1", help="also save the merged stage-1 model here (safetensors)")
    ap.add_argument("--stage1-model", help="load a saved stage-1 model instead of fine-tuning (for tuning runs)")
    ap.add_argument("--skip-stage1-eval", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from promptforget.backbones.causal_lm import count_parameters, load_causal_lm
    from promptforget.baselines.config import BaselineConfig
    from promptforget.baselines.model import Baseline
    from promptforget.data.sentiment import load_rotten_tomatoes
    from promptforget.spul import ops
    from promptforget.spul.config import FinetuneConfig, SPULConfig
    from promptforget.spul.evaluate import evaluate_splits, generation_check
    from promptforget.spul.forget_sets import build_forget_split
    from promptforget.spul.model import SPUL
    from promptforget.spul.tasks import SentimentTask, check_label_tokens
    from promptforget.spul.train import finetune
    from promptforget.utils.io import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    results: dict = {"args": vars(args), "phases": {}, "evaluation": {}, "generation_check": {}, "parameters": {}}

    def save():
        results["total_seconds"] = round(time.time() - t_all, 1)
        atomic_write_json(out / "results.json", results)

    def phase(name, secs, mem):
        results["phases"][name] = {"seconds": round(secs, 1), **mem.as_dict()}
        print(f"[{name}] {secs:.0f}s  peak RSS {mem.peak / 2**20:.0f} MB (+{(mem.peak - mem.start) / 2**20:.0f})", flush=True)
        save()

    task = SentimentTask()
    train, test = load_rotten_tomatoes(n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    t0 = time.time()
    with PeakRSS() as mem:
        split = build_forget_split(args.forget, train, test, seed=args.seed)
    results["forget"] = split["info"]
    results["split_sizes"] = {k: len(split[k]) for k in SPLITS}
    results["forget_ids"] = {k: [ex["id"] for ex in split[k]] for k in ("train_forget", "test_forget")}
    phase("forget_set", time.time() - t0, mem)
    print("split sizes", results["split_sizes"], flush=True)
    four = {k: split[k] for k in SPLITS}

    t0 = time.time()
    with PeakRSS() as mem:
        model, tok = load_causal_lm(args.stage1_model or args.model)
    phase("load_model", time.time() - t0, mem)
    results["label_tokens"] = check_label_tokens(tok, list(task.labels) + ["neutral", "unknown"])
    results["parameters"]["base_model"] = count_parameters(model)

    def evaluate(name, scorer, gen_model):
        t0 = time.time()
        with PeakRSS() as mem:
            results["evaluation"][name] = evaluate_splits(scorer, tok, task, four, args.max_length, args.eval_batch_size)
            results["generation_check"][name] = generation_check(
                gen_model, tok, task, split["train_forget"][:3] + split["train_retain"][:2], args.max_length
            )
        phase(f"eval_{name}", time.time() - t0, mem)
        ev = results["evaluation"][name]
        print(name, {k: round(ev[k]["accuracy"], 3) for k in SPLITS if ev[k]["accuracy"] is not None}, flush=True)

    # Stage 1 ---------------------------------------------------------------------------------
    ft_cfg = FinetuneConfig(lr=args.stage1_lr, epochs=args.stage1_epochs, batch_size=args.stage1_batch_size,
                            max_length=args.max_length, seed=args.seed, warmup_ratio=0.1)
    results["stage1_config"] = ft_cfg.to_dict()
    if not args.stage1_model:
        t0 = time.time()
        with PeakRSS() as mem:
            model, hist = finetune(model, tok, task, train, ft_cfg)
        results["parameters"]["stage1_lora_trainable"] = hist["trainable_parameters"]
        results["stage1_loss"] = [round(s["loss"], 4) for s in hist["steps"]]
        phase("stage1_train", time.time() - t0, mem)
        if args.save_stage1:
            model.save_pretrained(args.save_stage1, safe_serialization=True)
            tok.save_pretrained(args.save_stage1)
    if not args.skip_stage1_eval:
        evaluate("stage1", lambda b: ops.label_logits(model, b), model)

    # SPUL ------------------------------------------------------------------------------------
    if not args.skip_spul:
        sp_cfg = SPULConfig(lr=args.spul_lr, epochs=args.spul_epochs, batch_size=args.spul_batch_size,
                            alpha=args.spul_alpha, beta=args.spul_beta, num_virtual_tokens=args.spul_virtual_tokens,
                            max_length=args.max_length, seed=args.seed)
        results["spul_config"] = sp_cfg.to_dict()
        t0 = time.time()
        with PeakRSS() as mem:
            spul = SPUL(model, tok, task, sp_cfg)
            hist = spul.forget(split["train_forget"], split["train_retain"])
        results["parameters"]["spul_trainable"] = sum(p.numel() for p in spul.trainable_parameters())
        results["spul_history"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in hist["steps"]]
        phase("spul_train", time.time() - t0, mem)
        spul.save_pretrained(out / "spul" / "prompt")
        evaluate("spul", spul.scorer(), spul.peft_model)
        model = spul.peft_model.get_base_model()
        del spul

    # Baselines -------------------------------------------------------------------------------
    for method in [m for m in args.baselines.split(",") if m]:
        cfg = BaselineConfig(method=method, lr=args.baseline_lr, batch_size=args.baseline_batch_size,
                             max_length=args.max_length, seed=args.seed)
        results.setdefault("baseline_configs", {})[method] = cfg.to_dict()
        t0 = time.time()
        with PeakRSS() as mem:
            bl = Baseline(model, tok, task, cfg)
            hist = bl.forget(split["train_forget"], split["train_retain"])
        results["parameters"][f"{method}_trainable"] = sum(p.numel() for p in bl.trainable_parameters())
        results.setdefault("baseline_history", {})[method] = hist["steps"]
        phase(f"{method}_train", time.time() - t0, mem)
        bl.save_pretrained(out / method / "adapter")
        evaluate(method, bl.scorer(), bl.peft_model)
        model = bl.unload()
        del bl

    # Table -----------------------------------------------------------------------------------
    rows = ["| model | " + " | ".join(f"{s} acc / F1" for s in SPLITS) + " |", "|---" * (len(SPLITS) + 1) + "|"]
    for name, ev in results["evaluation"].items():
        cells = []
        for s in SPLITS:
            m = ev[s]
            cells.append("-" if m["accuracy"] is None else f"{100 * m['accuracy']:.1f} / {100 * m['f1_weighted']:.1f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    results["table_markdown"] = "\n".join(rows)
    results["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    save()
    print(results["table_markdown"])
    print(f"total {time.time() - t_all:.0f}s -> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
