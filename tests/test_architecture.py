"""The layers of docs/architecture.md, checked on the source: no import runs upward, no package cycle,
no ``cli`` module imported but by the top-level ``promptforget.cli``, and the fast commands stay torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "promptforget"

# Lowest first. A package may import its own layer and the layers below.
LAYERS = {
    "utils": 0,
    "store": 1,
    "backbones": 2, "data": 2,
    "unlearn": 3, "pfm": 3, "spul": 3, "baselines": 3, "analytic": 3, "families": 3,
    "audit": 4,
    "service": 5,
}
TOP = 6  # promptforget.cli and every */cli.py module


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported(name: str, path: Path) -> set[str]:
    """Every promptforget module ``name`` imports, at module level or inside functions."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in found if m in known and m != name}


def layer(module: str) -> int:
    parts = module.split(".")
    if module == "promptforget.cli" or parts[-1] == "cli":
        return TOP
    if len(parts) == 1:
        return 0  # the package itself (version only)
    return LAYERS[parts[1]]


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer():
    assert {package(m) for m in modules() if m.count(".") >= 1 and layer(m) != TOP} <= set(LAYERS) | {"cli"}


def test_no_import_runs_upward_and_cli_modules_are_leaves():
    problems = []
    for name, path in sorted(modules().items()):
        for dep in sorted(imported(name, path)):
            if dep.split(".")[-1] == "cli" and name != "promptforget.cli" and dep != name:
                problems.append(f"{name} imports the CLI module {dep}")
            elif layer(dep) > layer(name):
                problems.append(f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})")
    assert not problems, "\n".join(problems)


def test_no_package_cycle():
    graph: dict[str, set[str]] = {}
    for name, path in modules().items():
        if layer(name) == TOP:
            continue
        graph.setdefault(package(name), set()).update(
            package(d) for d in imported(name, path) if layer(d) != TOP and package(d) != package(name))
    seen, stack = set(), []

    def visit(p):
        if p in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(p):] + [p])}")
        if p in seen:
            return
        stack.append(p)
        for q in sorted(graph.get(p, ())):
            visit(q)
        stack.pop()
        seen.add(p)

    for p in sorted(graph):
        visit(p)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The walk above must catch a lazy import inside a function (the form that hid the old cycle)."""
    fake = tmp_path / "promptforget" / "store"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from promptforget.service.app import create_app\n")
    found = imported("promptforget.store.bad", fake / "bad.py")
    assert "promptforget.service.app" in found and layer("promptforget.service.app") > layer("promptforget.store.bad")


@pytest.mark.parametrize("argv", [["--help"], ["ledger", "verify", "--help"]])
def test_fast_commands_import_no_torch(argv):
    code = ("import sys; from promptforget.cli import main\n"
            "try:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'" % argv)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
