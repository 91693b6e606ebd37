"""Command-line plumbing shared by the packages' ``cli.py`` modules (argparse only)."""

from __future__ import annotations

import inspect


def add_command(subparsers, name: str, handler, help: str):
    """A sub-command run by ``handler``; its --help description is the handler's docstring."""
    p = subparsers.add_parser(name, help=help, description=inspect.cleandoc(handler.__doc__ or help))
    p.set_defaults(func=handler)
    return p


def add_report_to(parser) -> None:
    """``--report-to``: experiment tracking through Accelerate's trackers (utils/tracking.py)."""
    from promptforget.utils.tracking import REPORT_TO

    parser.add_argument("--report-to", choices=REPORT_TO, default="auto",
                        help="track losses, lr and evaluation metrics: auto = TensorBoard under RUN/logs when "
                        "installed, else none (default: %(default)s)")


def add_data_root_flag(parser) -> None:
    """``--data-root``: where a moved run's data now is (data/sources.py)."""
    parser.add_argument("--data-root", default=None,
                        help="folder that now holds the run's data file (or the file itself), if it moved apart from "
                        "the run (else $PROMPTFORGET_DATA_ROOT; the content must be unchanged: its sha256 is checked)")


def add_ledger_key_flag(parser, key_file: bool = True) -> None:
    """``--ledger-key-file``: the HMAC key that signs and checks the deletion ledger (store/ledger.py), and
    ``--anchor-dir``: where the ledger's head is anchored outside the run (store/anchor.py; ``promptforget.cli``
    exports it as $PROMPTFORGET_ANCHOR_DIR for the command)."""
    if key_file:
        parser.add_argument("--ledger-key-file", default=None,
                            help="file holding the ledger key (else $PROMPTFORGET_LEDGER_KEY_FILE or "
                            "$PROMPTFORGET_LEDGER_KEY); entries are signed and checked with it")
    parser.add_argument("--anchor-dir", default=None,
                        help="directory outside the run that keeps each run's ledger head, checked before every "
                        "forget (else $PROMPTFORGET_ANCHOR_DIR, else promptforget-anchors/ beside the key file)")
