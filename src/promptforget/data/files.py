"""Rows of a user's data file: CSV with a header, or JSON lines (one object per line).

Files are parsed by Hugging Face ``datasets`` (its ``csv`` and ``json`` builders, offline, nothing cached
between calls): :func:`load_table` gives the ``datasets.Dataset``, :func:`read_csv` / :func:`read_jsonl`
its rows as dicts. CSV cells stay text exactly as written (no ``"007"`` -> 7, empty cells stay ``""``);
JSON values keep their JSON types, and a field missing from a line reads as ``None``.
Bad files fail with one line naming the file and, for JSON lines, the line number.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

FORMATS = ("csv", "jsonl")


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` for every non-blank line (numbers count from 1 and include blank lines).

    Line by line with the stdlib: what ``datasets`` cannot say is which line is bad.
    """
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


@contextlib.contextmanager
def _quiet_datasets():
    """``datasets`` without its per-file progress bars and its own log of a parse error we report in one
    line, both restored afterwards."""
    from datasets.utils import logging as ds_logging

    bars, verbosity = ds_logging.is_progress_bar_enabled(), ds_logging.get_verbosity()
    ds_logging.disable_progress_bar()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if bars:
            ds_logging.enable_progress_bar()


def _build(builder: str, path: Path, **config):
    import datasets

    # A throw-away cache: a user's file is read afresh each time, never served stale from ~/.cache.
    with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="pf-datasets-") as cache:
        return datasets.load_dataset(
            builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **config
        )


def _is_empty_error(exc: Exception) -> bool:
    return isinstance(exc, ValueError) and "corresponds to no data" in str(exc)


def _csv_table(path: Path):
    import datasets
    import pandas as pd

    try:
        columns = list(pd.read_csv(path, nrows=0, encoding="utf-8").columns)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' EmptyDataError / ParserError are ValueErrors
        raise ValueError(f"{path}: not a readable CSV file with a header line ({exc})") from None
    # Every column as text, no NA guessing: the cells as written, like csv.DictReader gives them.
    features = datasets.Features({c: datasets.Value("string") for c in columns})
    try:
        return _build("csv", path, features=features, na_filter=False, encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - datasets wraps pandas' errors in its own
        if _is_empty_error(exc):
            return datasets.Dataset.from_dict({c: [] for c in columns}, features=features)
        raise ValueError(f"{path}: not a readable CSV file ({_root_message(exc)})") from None


def _jsonl_table(path: Path):
    import datasets

    try:
        table = _build("json", path)
    except Exception as exc:  # noqa: BLE001
        if _is_empty_error(exc):
            return datasets.Dataset.from_dict({})
        table = None
    # datasets also accepts a whole JSON document (an array, a pretty-printed object): a row count that
    # differs from the non-blank line count means the file is not JSON lines.
    with path.open(encoding="utf-8") as f:
        lines = sum(1 for line in f if line.strip())
    if table is None or len(table) != lines:
        for _ in iter_jsonl(path):  # raises with the number of the first bad line
            pass
        raise ValueError(f"{path}: not readable as JSON lines")
    return table


def _root_message(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_table(path: str | os.PathLike, fmt: str):
    """A CSV (``fmt="csv"``) or JSON-lines (``"jsonl"``) file as a ``datasets.Dataset``, rows in file order."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown text file format {fmt!r}; use csv or jsonl")
    path = _existing(path)
    return _csv_table(path) if fmt == "csv" else _jsonl_table(path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file, blank lines skipped."""
    return load_table(path, "jsonl").to_list()


def read_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of a CSV file with a header line, as ``{column: text}``."""
    return load_table(path, "csv").to_list()
