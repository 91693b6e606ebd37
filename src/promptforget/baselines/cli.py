"""``promptforget baseline {ga,rl,ga_kl,ga_gd}``: fine-tuning unlearning baselines on a stage-1 model.

Writes ``RUN/adapter/`` (LoRA adapter, safetensors, loadable with PEFT onto the stage-1 model),
``RUN/config.json`` and ``RUN/results.json`` (4-split evaluation + generation check).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from promptforget.baselines.config import METHODS


def cmd_baseline(args) -> int:
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.baselines.config import BaselineConfig
    from promptforget.baselines.model import Baseline
    from promptforget.spul.cli import _args_dict, _eval_four, data_from_args, forget_splits, split_ids, write_run
    from promptforget.spul.evaluate import generation_check
    from promptforget.utils.io import atomic_write_json

    out = Path(args.out)
    cfg = BaselineConfig(method=args.method, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                         retain_weight=args.retain_weight, max_length=args.max_length, seed=args.seed,
                         generic_labels=[w.strip() for w in args.generic_labels.split(",") if w.strip()])
    task, train, test = data_from_args(args)
    split = forget_splits(args, train, test)
    model, tok = load_causal_lm(args.model)
    bl = Baseline(model, tok, task, cfg)
    t0 = time.time()
    hist = bl.forget(split["train_forget"], split["train_retain"])
    secs = time.time() - t0
    bl.save_pretrained(out / "adapter")
    atomic_write_json(out / "forget_split.json", {"info": split["info"], "ids": split_ids(split)})
    ev = _eval_four(bl.scorer(), tok, task, split, args.max_length, args.eval_batch_size)
    gen = generation_check(bl.peft_model, tok, task, split["train_forget"][:3] + split["train_retain"][:3], args.max_length)
    results = {"evaluation": ev, "generation_check": gen, "train_seconds": secs, "history": hist["steps"],
               "trainable_parameters": sum(p.numel() for p in bl.trainable_parameters())}
    write_run(out, {"command": f"baseline {args.method}", "args": _args_dict(args), "baseline": cfg.to_dict(),
                    "task": task.to_dict(), "forget": split["info"]}, results)
    print(json.dumps({"out": str(out), **{k: v["accuracy"] for k, v in ev.items() if isinstance(v, dict)}}))
    return 0


def register(subparsers) -> None:
    from promptforget.spul.cli import add_data_args, add_model_args

    p = subparsers.add_parser("baseline", help="unlearning baselines (GA, RL, GA+KL, GA+GD) on a stage-1 model")
    p.add_argument("method", choices=METHODS, metavar="NAME", help=f"one of {', '.join(METHODS)}")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--retain-weight", type=float, default=1.0, help="weight of the KL (ga_kl) or retain CE (ga_gd) term")
    p.add_argument("--generic-labels", default="neutral,unknown", help="rl: labels drawn for forget examples")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.set_defaults(func=cmd_baseline)
