"""Rows of a user's data file: CSV with a header, or JSON lines (one object per line).

Bad files fail with one line naming the file and, for JSON lines, the line number.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` for every non-blank line (numbers count from 1 and include blank lines)."""
    path = _existing(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file, blank lines skipped."""
    return [row for _, row in iter_jsonl(path)]


def read_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of a CSV file with a header line, as ``{column: text}``."""
    path = _existing(path)
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
