"""The ``promptforget`` command line. Each method package registers its own sub-commands
(``register(subparsers)`` in its ``cli.py``); heavy imports happen inside the handlers so that
``--help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys

from promptforget import __version__

# Packages that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES = [
    "promptforget.pfm.cli",
    "promptforget.spul.cli",
    "promptforget.baselines.cli",
    "promptforget.audit.cli",
    "promptforget.service.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptforget",
        description="Machine unlearning by design: train models whose knowledge sits in prompt tokens, "
        "forget on request, and prove it.",
    )
    parser.add_argument("--version", action="version", version=f"promptforget {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class ConsoleHandler(logging.Handler):
    """What the library logs under ``promptforget``, as the user reads it: the message alone, INFO on
    stdout and warnings on stderr (the streams of the moment, so captured output works too). accelerate's
    ``[RANK 0]`` prefix is dropped: on the training paths only rank 0 speaks."""

    RANK_ZERO = re.compile(r"^\[RANK 0\] ")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.RANK_ZERO.sub("", self.format(record)) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def configure_console_logging() -> None:
    package = logging.getLogger("promptforget")
    package.handlers = [h for h in package.handlers if not isinstance(h, ConsoleHandler)] + [ConsoleHandler()]
    package.setLevel(logging.INFO)


# Hugging Face Trainer's names for our flags: accepted, with a note naming ours. Any other --snake_case flag
# is read as its --kebab-case spelling (no flag of ours has an underscore).
HF_FLAGS = {"--output-dir": "--out", "--learning-rate": "--lr", "--num-train-epochs": "--epochs",
            "--per-device-train-batch-size": "--batch-size", "--model-name-or-path": "--model",
            "--dataset-name": "--dataset"}


def translate_flags(argv: list[str]) -> list[str]:
    """``--learning_rate 1e-3`` -> ``--lr 1e-3`` (with a note on stderr), ``--max_length`` -> ``--max-length``."""
    out = []
    for token in argv:
        flag, eq, value = token.partition("=")
        if re.fullmatch(r"--[a-z0-9]+(_[a-z0-9]+)+", flag):
            dashed = flag.replace("_", "-")
            ours = HF_FLAGS.get(dashed, dashed)
            print(f"promptforget: note: {flag} is read as {ours}", file=sys.stderr)
            token = ours + eq + value
        out.append(token)
    return out


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Like ``parser.parse_args``, but an unknown flag is reported by the sub-command's parser, with its usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def command_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The innermost sub-command parser that ``args`` went through (``spul finetune`` -> its own parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return command_parser(action.choices[name], args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, translate_flags(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_console_logging()
    from promptforget.store.anchor import ANCHOR_DIR_ENV

    outer_anchor_dir = os.environ.get(ANCHOR_DIR_ENV)
    if getattr(args, "anchor_dir", None):
        os.environ[ANCHOR_DIR_ENV] = os.path.abspath(args.anchor_dir)  # every store call of this command sees it
    try:
        return int(args.func(args) or 0)
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)):
            return _input_error(args, exc)
        # The disk refused a write (full, read-only): state is unchanged, and the input was fine.
        print(f"promptforget {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    except (ValueError, KeyError) as exc:
        from promptforget.store.durable import StorageError

        if isinstance(exc, StorageError):
            print(f"promptforget {args.command}: error: {exc}", file=sys.stderr)
            return 1
        return _input_error(args, exc)
    finally:
        if outer_anchor_dir is None:
            os.environ.pop(ANCHOR_DIR_ENV, None)
        else:
            os.environ[ANCHOR_DIR_ENV] = outer_anchor_dir


def _input_error(args, exc: Exception) -> int:
    """Input problems: one clear line, no traceback, exit 2."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    print(f"promptforget {args.command}: error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
