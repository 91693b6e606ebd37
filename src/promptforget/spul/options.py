"""Command-line option groups shared by ``promptforget spul ...`` and ``promptforget baseline NAME``
(argparse only: importing this module stays instant)."""

from __future__ import annotations

import json

from promptforget.spul.config import DataConfig
from promptforget.utils.cli_args import add_data_root_flag
from promptforget.utils.config import add_config_args, config_from_args

DEFAULT_MODEL = "smollm2"
GIVEN = "given_flags"  # the namespace attribute listing the tracked flags typed on the command line


def add_model_args(parser, run: bool = False, out_required: bool = True) -> None:
    """``--model`` and ``--out``; with ``run``, the positional RUN a command starts from."""
    if run:
        parser.add_argument("run", nargs="?", metavar="RUN",
                            help="a `spul finetune` run directory, or a run made from one: the model (RUN/model), the "
                                 "data, template and split (and a made run's forget set) are read from it")
    model = parser.add_argument(
        "--model", default=DEFAULT_MODEL,
        help=f"HF name, directory or .gguf to fine-tune (default: {DEFAULT_MODEL}, the offline SmolLM2-135M-Instruct)"
        if not run else "without RUN: the stage-1 model directory (STAGE1_RUN/model); with RUN it is RUN's and "
        f"need not be given (default: {DEFAULT_MODEL})")
    track_given([model])
    parser.add_argument("--out", required=out_required,
                        help="run directory to write (created)" + ("" if out_required else "; default: RUN/evaluation"))
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line (default: a table)")


class _Collecting:
    """An argument group that remembers the actions added to it."""

    def __init__(self, group):
        self.group, self.actions = group, []

    def add_argument(self, *args, **kwargs):
        action = self.group.add_argument(*args, **kwargs)
        self.actions.append(action)
        return action


def track_given(actions) -> None:
    """Make ``actions`` note their dest in ``args.given_flags`` when typed, so a value given on the command
    line can be told from a default (a given flag must agree with a run's record; a default gives way to it)."""
    for action in actions:
        base = type(action)

        class Given(base):
            def __call__(self, parser, namespace, values, option_string=None):
                super().__call__(parser, namespace, values, option_string)
                setattr(namespace, GIVEN, [*getattr(namespace, GIVEN, []), self.dest])

        Given.__name__ = base.__name__
        action.__class__ = Given


def add_data_args(parser, forget: bool = True, from_run: bool = False) -> None:
    """The :class:`DataConfig` flags, ``--forget`` only for commands that forget."""
    description = ("with RUN, these are read from the stage-1 run's record: leave them out (a given value must "
                   "agree with the record; --seed, --max-length, --eval-batch-size, --forget and --min-forget "
                   "are this command's own)") if from_run else None
    group = _Collecting(parser.add_argument_group("data", description))
    add_config_args(group, DataConfig, exclude=() if forget else ("forget", "min_forget"))
    track_given(group.actions)
    if from_run:
        add_data_root_flag(group.group)


def given_args(args) -> list[str]:
    return list(getattr(args, GIVEN, []))


def run_inputs(args):
    """The :class:`~promptforget.spul.runs.RunInputs` of a command: from RUN's record, or (without RUN)
    from --model and the data flags."""
    from promptforget.spul.runs import RunInputs, resolve_inputs

    given = given_args(args)
    if getattr(args, "run", None):
        data = {k: getattr(args, k) for k in given if k in DataConfig.__dataclass_fields__}
        return resolve_inputs(args.run, data, args.model if "model" in given else None, getattr(args, "data_root", None))
    return RunInputs(model=args.model, data=config_from_args(DataConfig, args))


def recorded_args(args) -> dict:
    """The parsed arguments as a run's ``config.json`` records them (``args``)."""
    return {k: v for k, v in vars(args).items() if k not in ("func", GIVEN)}


def summary_text(out, results: dict | None, as_json: bool = False) -> str | None:
    """What a command prints: a table per split, or (``--json``) one JSON line with the accuracies; None on a
    rank other than 0 (no results)."""
    from promptforget.spul.pipeline import accuracies, summary_lines

    if results is None:
        return None
    if as_json:
        return json.dumps({"out": str(out), **accuracies(results["evaluation"])})
    return "\n".join(summary_lines(out, results))
