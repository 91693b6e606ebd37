"""Command-line plumbing shared by the packages' ``cli.py`` modules (argparse only)."""

from __future__ import annotations

import inspect


def add_command(subparsers, name: str, handler, help: str):
    """A sub-command run by ``handler``; its --help description is the handler's docstring."""
    p = subparsers.add_parser(name, help=help, description=inspect.cleandoc(handler.__doc__ or help))
    p.set_defaults(func=handler)
    return p
