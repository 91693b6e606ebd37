"""``promptforget spul finetune|unlearn|evaluate``.

Each command writes a run directory: ``config.json`` (what was asked, and for stage 1 the record the
later commands read), ``results.json`` (what came out), plus weights: ``model/`` (stage-1 merged model,
safetensors; with ``template.json``), ``prompt/`` (SPUL soft prompt as a PEFT adapter, loadable with
``PeftModel.from_pretrained(base_model, "RUN/prompt")``).

    promptforget spul finetune --data csv:news.csv --template topic --out s1
    promptforget spul unlearn s1 --forget entity:auto --out u1
    promptforget baseline ga_gd u1 --out b1        # the same stage 1 and forget set as u1
    promptforget spul evaluate u1
"""

from __future__ import annotations

import json

from promptforget.spul.config import DataConfig, FinetuneConfig, SPULConfig
from promptforget.spul.options import add_data_args, add_model_args, recorded_args, run_inputs, summary_text
from promptforget.utils.cli_args import add_command, add_report_to
from promptforget.utils.config import add_config_args, config_from_args

# --seed and --max-length come with the data flags and reach the training configs too.
SHARED_WITH_DATA = ("seed", "max_length")


def run_record(args) -> dict:
    """What was asked, as ``config.json`` records it."""
    return {"command": f"spul {args.spul_command}", "args": recorded_args(args)}


def cmd_finetune(args) -> int:
    """Stage 1: LoRA fine-tune the causal LM on the task (loss on the label tokens), merge it, save it to
    OUT/model and evaluate it on the train and test splits."""
    from promptforget.spul.pipeline import finetune_run

    results = finetune_run(args.out, args.model, config_from_args(DataConfig, args),
                           config_from_args(FinetuneConfig, args), run_record(args), report_to=args.report_to)
    if results is not None and args.json:
        ev = results["evaluation"]
        print(json.dumps({"out": str(args.out), "train_acc": ev["train"]["accuracy"], "test_acc": ev["test"]["accuracy"],
                          "warnings": results["warnings"]}))
    elif results is not None:  # None: a rank other than 0
        print(summary_text(args.out, results))
    return 0


def cmd_unlearn(args) -> int:
    """Train a SPUL soft prompt (OUT/prompt) that makes the frozen stage-1 model forget the forget set and
    keep its behaviour on the rest; evaluate the four splits."""
    from promptforget.spul.model import SPUL
    from promptforget.spul.pipeline import unlearn_run

    inputs = run_inputs(args)
    cfg = config_from_args(SPULConfig, args, seed=inputs.data.seed, max_length=inputs.data.max_length)
    results = unlearn_run(args.out, inputs, lambda m, tok, task: SPUL(m, tok, task, cfg), "prompt",
                          {**run_record(args), "spul": cfg.to_dict()}, report_to=args.report_to)
    text = summary_text(args.out, results, args.json)
    if text is not None:
        print(text)
    return 0


def cmd_evaluate(args) -> int:
    """Accuracy and F1 on the four splits (train/test x retain/forget) of a model, alone, with a SPUL
    prompt (--prompt) or with a baseline LoRA adapter (--adapter). RUN = a `spul unlearn` or `baseline`
    run evaluates its prompt or adapter on its forget split; RUN = a stage-1 run evaluates stage 1
    (--forget needed)."""
    from pathlib import Path

    from promptforget.spul.pipeline import evaluate_run

    inputs = run_inputs(args)
    prompt, adapter = args.prompt, args.adapter
    if not (prompt or adapter):
        prompt, adapter = inputs.prompt, inputs.adapter
    if args.out is None and not args.run:
        raise ValueError("--out is required without RUN")
    out = args.out or Path(args.run) / "evaluation"
    results = evaluate_run(out, inputs, run_record(args), prompt=prompt, adapter=adapter)
    args.out = out
    text = summary_text(args.out, results, args.json)
    if text is not None:
        print(text)
    return 0


def register(subparsers) -> None:
    spul = subparsers.add_parser("spul", help="SPUL: soft-prompt unlearning for frozen causal LLMs")
    sub = spul.add_subparsers(dest="spul_command", metavar="STEP")

    p = add_command(sub, "finetune", cmd_finetune, help="stage 1: LoRA fine-tune on the task, merge, save the model")
    add_model_args(p)
    add_data_args(p, forget=False)
    add_config_args(p.add_argument_group("fine-tuning"), FinetuneConfig, exclude=SHARED_WITH_DATA)
    add_report_to(p)

    p = add_command(sub, "unlearn", cmd_unlearn,
                    help="train a soft prompt that makes the (frozen) model forget the forget set")
    add_model_args(p, run=True)
    add_data_args(p, from_run=True)
    add_config_args(p.add_argument_group("SPUL"), SPULConfig, exclude=SHARED_WITH_DATA)
    add_report_to(p)

    p = add_command(sub, "evaluate", cmd_evaluate,
                    help="4-split accuracy/F1 of a model, optionally with a SPUL prompt or LoRA adapter")
    add_model_args(p, run=True, out_required=False)
    add_data_args(p, from_run=True)
    p.add_argument("--prompt", help="SPUL prompt directory (RUN/prompt)")
    p.add_argument("--adapter", help="baseline LoRA adapter directory (RUN/adapter)")

    def _need_step(args):
        spul.print_help()
        return 2

    spul.set_defaults(func=_need_step)
