"""``hf:REPO`` datasets: a Hugging Face hub id (online or already cached) or a local dataset folder
(``train.csv`` / ``test.jsonl`` ...), read by ``datasets.load_dataset``; text or images, told by the columns.

The split is the source's own ``test`` (else ``validation``) split; a source with only ``train`` is split
stratified with ``test_size`` and ``seed``. Columns are found as for a user's file (``text``/``label``,
a ``ClassLabel``, an ``Image`` column) or named by ``text_column`` / ``label_column`` / ``image_column``.
"""

from __future__ import annotations


def fetch_hub_dataset(repo_id: str, split: str | None = None):
    """``datasets.load_dataset(repo_id, split=split)`` with one-line errors (a ``DatasetDict`` when split is None)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("hf: datasets need the `datasets` package: pip install datasets") from e
    try:
        return datasets.load_dataset(repo_id, split=split)
    except ValueError as e:  # e.g. an unknown split: the source is there, the request is wrong
        raise ValueError(f"{repo_id}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated: all say "cannot load"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConnectionError(f"could not load {repo_id!r} from the Hugging Face hub or its cache: {first}") from None


def image_column_of(table) -> str | None:
    """The first column holding ``datasets.Image`` values, if any."""
    from datasets import Image

    return next((c for c, f in table.features.items() if isinstance(f, Image)), None)


def load_hub_splits(repo_id: str, test_size: float = 0.2, seed: int = 42, text_column: str | None = None,
                    label_column: str | None = None, image_column: str | None = None):
    """``(train, test)`` as ``TextDataset`` or ``ImageDataset``, whichever the source's columns hold."""
    from promptforget.data.image_files import image_dataset_from_table
    from promptforget.data.text import find_text_columns, label_classes, text_dataset_from_table

    parts = fetch_hub_dataset(repo_id)
    if "train" not in parts:
        raise ValueError(f"{repo_id}: no 'train' split (splits: {list(parts)})")
    train = parts["train"]
    test_split = next((s for s in ("test", "validation") if s in parts), None)
    test = parts[test_split] if test_split else None
    name = f"hf:{repo_id}"
    if image_column or image_column_of(train):
        def as_images(table, split):
            return image_dataset_from_table(table, repo_id, split, image_column, label_column)

        if test is not None:
            return as_images(train, "train"), as_images(test, test_split)
        return as_images(train, "train").train_test_split(test_size, seed)
    text_column, label_column = find_text_columns(train, repo_id, text_column, label_column)
    raw = list(train[label_column]) + (list(test[label_column]) if test is not None else [])
    classes = label_classes([v for v in raw if v is not None])
    if test is None:
        return text_dataset_from_table(train, name, text_column, label_column, classes).train_test_split(test_size, seed)
    return (text_dataset_from_table(train, name, text_column, label_column, classes),
            text_dataset_from_table(test, name, text_column, label_column, classes))
