"""Command-line option groups shared by ``promptforget spul ...`` and ``promptforget baseline NAME``
(argparse only: importing this module stays instant)."""

from __future__ import annotations

from promptforget.spul.config import DataConfig
from promptforget.utils.config import add_config_args

DEFAULT_MODEL = "smollm2"


def add_model_args(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="HF name, directory or .gguf (default: offline SmolLM2-135M-Instruct)")
    parser.add_argument("--out", required=True, help="run directory to write (created)")


def add_data_args(parser, forget: bool = True) -> None:
    """The :class:`DataConfig` flags, ``--forget`` only for commands that forget."""
    add_config_args(parser.add_argument_group("data"), DataConfig, exclude=() if forget else ("forget",))


def recorded_args(args) -> dict:
    """The parsed arguments as a run's ``config.json`` records them (``args``)."""
    return {k: v for k, v in vars(args).items() if k != "func"}
