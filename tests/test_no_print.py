"""Library code logs (``logging``, accelerate's logger on multi-process paths); only the command line
modules print, and the model code an export ships (it runs without promptforget)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "promptforget"
ALLOWED = ("cli.py", "__main__.py")
EXPORTED = PACKAGE / "pfm" / "hf_export"


def print_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def test_no_print_in_library_code():
    checked, found = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ALLOWED or EXPORTED in path.parents:
            continue
        checked += 1
        found += [f"{path.relative_to(PACKAGE)}:{line}" for line in print_calls(path)]
    assert checked > 50  # the walk found the package
    assert not found, f"print() in library code (use logging): {found}"


def test_the_check_sees_a_print(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""print(1) in a docstring is no call"""\ndef f():\n    # print(2)\n    print("x")\n')
    assert print_calls(f) == [4]


def test_the_cli_shows_library_logs_as_plain_lines(capsys):
    import logging

    from promptforget.cli import configure_console_logging

    configure_console_logging()
    configure_console_logging()  # idempotent: one handler, one copy of each line
    logging.getLogger("promptforget.pfm").info("[RANK 0] [train] epoch %d: loss %.4f", 1, 0.5)
    logging.getLogger("promptforget.audit").info("[audit] run: forgetting %s", ["a"])
    logging.getLogger("promptforget.spul").warning("note: %s", "multi-token labels")
    logging.getLogger("promptforget.pfm").debug("not shown")
    out, err = capsys.readouterr()
    assert out == "[train] epoch 1: loss 0.5000\n[audit] run: forgetting ['a']\n"
    assert err == "note: multi-token labels\n"
