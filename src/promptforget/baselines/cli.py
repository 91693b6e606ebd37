"""``promptforget baseline {ga,rl,ga_kl,ga_gd}``: fine-tuning unlearning baselines on a stage-1 model.

Writes ``RUN/adapter/`` (LoRA adapter, safetensors, loadable with PEFT onto the stage-1 model),
``RUN/config.json`` and ``RUN/results.json`` (4-split evaluation + generation check).
"""

from __future__ import annotations

import json

from promptforget.baselines.config import METHODS, BaselineConfig
from promptforget.spul.config import DataConfig
from promptforget.spul.options import add_data_args, add_model_args, recorded_args
from promptforget.spul.pipeline import accuracies
from promptforget.utils.cli_args import add_command
from promptforget.utils.config import add_config_args, config_from_args


def cmd_baseline(args) -> int:
    """Unlearn the forget set from a stage-1 model with a fine-tuning baseline (a LoRA adapter, OUT/adapter):
    ga (gradient ascent), rl (random generic labels), ga_kl (GA + KL to stage 1 on the retain set) or
    ga_gd (GA + retain CE); evaluate the four splits."""
    from promptforget.baselines.model import Baseline
    from promptforget.spul.pipeline import unlearn_run

    cfg = config_from_args(BaselineConfig, args)
    record = {"command": f"baseline {args.method}", "args": recorded_args(args),
              "baseline": cfg.to_dict()}
    results = unlearn_run(args.out, args.model, config_from_args(DataConfig, args),
                          lambda m, tok, task: Baseline(m, tok, task, cfg), "adapter", record)
    if results is not None:  # None: a rank other than 0
        print(json.dumps({"out": str(args.out), **accuracies(results["evaluation"])}))
    return 0


def register(subparsers) -> None:
    p = add_command(subparsers, "baseline", cmd_baseline,
                    help="unlearning baselines (GA, RL, GA+KL, GA+GD) on a stage-1 model")
    p.add_argument("method", choices=METHODS, metavar="NAME", help=f"one of {', '.join(METHODS)}")
    add_model_args(p)
    add_data_args(p)
    # --seed and --max-length come with the data flags; the method is the positional NAME.
    add_config_args(p.add_argument_group("baseline"), BaselineConfig, exclude=("method", "seed", "max_length"))
