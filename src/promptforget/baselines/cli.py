"""``promptforget baseline {ga,rl,ga_kl,ga_gd}``: fine-tuning unlearning baselines on a stage-1 model.

Writes ``RUN/adapter/`` (LoRA adapter, safetensors, loadable with PEFT onto the stage-1 model),
``RUN/config.json`` and ``RUN/results.json`` (4-split evaluation + generation check).
"""

from __future__ import annotations

from promptforget.baselines.config import METHODS


def cmd_baseline(args) -> int:
    from promptforget.baselines.config import BaselineConfig
    from promptforget.baselines.model import Baseline
    from promptforget.spul.cli import generic_labels, run_unlearner

    cfg = BaselineConfig(method=args.method, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                         retain_weight=args.retain_weight, max_length=args.max_length, seed=args.seed,
                         generic_labels=generic_labels(args))
    return run_unlearner(args, lambda m, tok, task: Baseline(m, tok, task, cfg), "adapter", f"baseline {args.method}",
                         "baseline", cfg)


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
