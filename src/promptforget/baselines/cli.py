"""``promptforget baseline {ga,rl,ga_kl,ga_gd}``: fine-tuning unlearning baselines on a stage-1 model.

Writes ``RUN/adapter/`` (LoRA adapter, safetensors, loadable with PEFT onto the stage-1 model),
``RUN/config.json`` and ``RUN/results.json`` (4-split evaluation + generation check).
"""

from __future__ import annotations


from promptforget.baselines.config import METHODS, BaselineConfig
from promptforget.spul.options import add_data_args, add_model_args, recorded_args, run_inputs, summary_text
from promptforget.utils.cli_args import add_command, add_report_to
from promptforget.utils.config import add_config_args, config_from_args


def cmd_baseline(args) -> int:
    """Unlearn the forget set from a stage-1 model with a fine-tuning baseline (a LoRA adapter, OUT/adapter):
    ga (gradient ascent), rl (random generic labels), ga_kl (GA + KL to stage 1 on the retain set) or
    ga_gd (GA + retain CE); evaluate the four splits. RUN = a stage-1 run (with --forget) or a `spul unlearn`
    run (its stage 1 and forget set: the baseline is compared on the same examples)."""
    from promptforget.baselines.model import Baseline
    from promptforget.spul.pipeline import unlearn_run

    inputs = run_inputs(args)
    cfg = config_from_args(BaselineConfig, args, seed=inputs.data.seed, max_length=inputs.data.max_length)
    record = {"command": f"baseline {args.method}", "args": recorded_args(args),
              "baseline": cfg.to_dict()}
    results = unlearn_run(args.out, inputs, lambda m, tok, task: Baseline(m, tok, task, cfg), "adapter", record,
                          report_to=args.report_to)
    text = summary_text(args.out, results, args.json)
    if text is not None:
        print(text)
    return 0


def register(subparsers) -> None:
    p = add_command(subparsers, "baseline", cmd_baseline,
                    help="unlearning baselines (GA, RL, GA+KL, GA+GD) on a stage-1 model")
    p.add_argument("method", choices=METHODS, metavar="NAME", help=f"one of {', '.join(METHODS)}")
    add_model_args(p, run=True)
    add_data_args(p, from_run=True)
    # --seed and --max-length come with the data flags; the method is the positional NAME.
    add_config_args(p.add_argument_group("baseline"), BaselineConfig, exclude=("method", "seed", "max_length"))
    add_report_to(p)
