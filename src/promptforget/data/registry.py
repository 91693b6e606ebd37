"""Every dataset a command line can name, so runs can refer to their data reproducibly.

A name is typed as ``name`` for a bundled set or ``name:LOCATION`` for a user's copy (``csv:PATH``).
Two uses, with their own names:

* ``classification``: labelled sets PFM trains on; :func:`load_splits` gives ``(train, test)``
  ``TextDataset`` / ``ImageDataset`` (the official split where the source has one);
* ``prompting``: example dicts SPUL prompts a causal LM with (``promptforget spul --data``).

Loaders import their modules when called, so reading the registry stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLASSIFICATION, PROMPTING = "classification", "prompting"
ANY = "text or image"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str  # "text", "image", or ANY (text or images, told by the source's columns)
    use: str  # CLASSIFICATION or PROMPTING
    description: str  # one line for --help
    location: str | None = None  # what follows "name:" (PATH, DIR, ...); None for bundled sets
    aliases: tuple[str, ...] = ()
    # classification: load(location, test_size, seed) -> (train, test). prompting: load(**options) ->
    # (train, test) example dicts; None where the SPUL loader reads the source itself (files, bbc_news, bigbench)
    load: Callable | None = None

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.location}" if self.location else self.name


# --------------------------------------------------------------------------- classification loaders
def _bbc_news(location, test_size, seed):
    from promptforget.data.text import load_bbc_news

    return load_bbc_news().train_test_split(test_size, seed)


def _text_file(fmt: str) -> Callable:
    def load(location, test_size, seed, **columns):
        from promptforget.data.text import load_text_file

        return load_text_file(Path(location), fmt=fmt, **columns).train_test_split(test_size, seed)

    return load


def _mnist_5k(location, test_size, seed):
    from promptforget.data.images import load_mnist_5k

    return load_mnist_5k().train_test_split(test_size, seed)


def _digits(location, test_size, seed):
    from promptforget.data.images import load_digits

    return load_digits().train_test_split(test_size, seed)


def _official_split(name: str) -> Callable:
    """Local copies ship their own test split; test_size and seed do not apply."""

    def load(location, test_size, seed):
        from promptforget.data.image_files import load_image_dataset

        return load_image_dataset(name, location, split="train"), load_image_dataset(name, location, split="test")

    return load


def _hub(location, test_size, seed, **columns):
    """The source's own test split where it has one; else a stratified split of its train split."""
    from promptforget.data.hub import load_hub_splits

    return load_hub_splits(location, test_size, seed, **columns)


# --------------------------------------------------------------------------- prompting loaders
def _sentiment(name: str) -> Callable:
    def load(**options):
        from promptforget.data.sentiment import load_sentiment

        return load_sentiment(name, **options)

    return load


REGISTRY: tuple[DatasetSpec, ...] = (
    DatasetSpec("bbc_news", "text", CLASSIFICATION, "BBC News articles, 5 topics (offline)", load=_bbc_news),
    DatasetSpec("mnist5k", "image", CLASSIFICATION, "5,000 MNIST digits (offline)", aliases=("mnist-5k",), load=_mnist_5k),
    DatasetSpec("digits", "image", CLASSIFICATION, "scikit-learn's 1,797 8x8 digits (offline)", load=_digits),
    DatasetSpec("csv", "text", CLASSIFICATION, "your CSV file with text and label columns", "PATH", load=_text_file("csv")),
    DatasetSpec("jsonl", "text", CLASSIFICATION, "your JSON lines with text and label fields", "PATH",
                load=_text_file("jsonl")),
    DatasetSpec("cifar10", "image", CLASSIFICATION, "local CIFAR-10 python copy (directory or .tar.gz)", "DIR",
                load=_official_split("cifar10")),
    DatasetSpec("cifar100", "image", CLASSIFICATION, "local CIFAR-100 python copy (directory or .tar.gz)", "DIR",
                load=_official_split("cifar100")),
    DatasetSpec("medmnist", "image", CLASSIFICATION, "local MedMNIST .npz (2-D, single-label)", "FILE.npz",
                load=_official_split("medmnist")),
    DatasetSpec("hf", ANY, CLASSIFICATION, "Hugging Face dataset, text or images (hub id: online or cached; or a "
                "local dataset folder)", "REPO_ID", load=_hub),
    DatasetSpec("rotten_tomatoes", "text", PROMPTING, "Rotten Tomatoes review snippets, positive/negative (offline)",
                load=_sentiment("rotten_tomatoes")),
    DatasetSpec("sst2", "text", PROMPTING, "SST-2 sentences (online, Hugging Face datasets)", load=_sentiment("sst2")),
    DatasetSpec("yelp_polarity", "text", PROMPTING, "Yelp polarity reviews (online, Hugging Face datasets)",
                load=_sentiment("yelp_polarity")),
    DatasetSpec("bbc_news", "text", PROMPTING, "BBC News articles, 5 topics (offline)"),
    DatasetSpec("csv", "text", PROMPTING, "your CSV file with text and label columns (an id column is kept)", "PATH"),
    DatasetSpec("jsonl", "text", PROMPTING, "your JSON lines with text and label fields (an id field is kept)", "PATH"),
    DatasetSpec("hf", "text", PROMPTING, "Hugging Face text dataset (hub id: online or cached; or a local dataset "
                "folder)", "REPO_ID"),
    DatasetSpec("bigbench", "text", PROMPTING,
                "BIG-bench multiple-choice task files to forget and retain (--bigbench-forget/--bigbench-retain)"),
)


def datasets(use: str | None = None, kind: str | None = None) -> list[DatasetSpec]:
    return [d for d in REGISTRY if use in (None, d.use) and (kind in (None, d.kind) or d.kind == ANY)]


def dataset_names(use: str | None = None, kind: str | None = None) -> list[str]:
    """How each dataset is typed (``bbc_news``, ``csv:PATH``...), in registry order."""
    return [d.usage for d in datasets(use, kind)]


def dataset_help(use: str) -> str:
    """One ``usage: description`` per dataset, for an argument's ``--help``."""
    return "; ".join(f"{d.usage}: {d.description}" for d in datasets(use))


def get_dataset(name: str, use: str = CLASSIFICATION) -> DatasetSpec:
    """The entry a typed name refers to (``csv:data.csv`` -> the ``csv`` entry)."""
    key = name.partition(":")[0]
    for d in datasets(use):
        if key == d.name or key in d.aliases:
            return d
    raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(dataset_names(use))}")


COLUMN_SOURCES = ("csv", "jsonl", "hf")  # the sources whose columns a user names


def load_splits(name: str, test_size: float = 0.2, seed: int = 42, text_column: str | None = None,
                label_column: str | None = None):
    """(train, test) for a classification dataset name: the official split where the source has one,
    else a stratified ``test_size`` split with ``seed``. Each part has ``inputs``, ``labels``, ``class_names``.
    ``text_column`` / ``label_column``: for csv:, jsonl: and hf: (default: found by name)."""
    spec = get_dataset(name, CLASSIFICATION)
    location = name.partition(":")[2]
    if spec.location and not location:
        raise ValueError(f"dataset {spec.name!r} needs a location: {spec.usage}")
    columns = {k: v for k, v in (("text_column", text_column), ("label_column", label_column)) if v is not None}
    if columns and spec.name not in COLUMN_SOURCES:
        raise ValueError(f"--text-column / --label-column apply to csv:, jsonl: and hf: data, not {spec.name}")
    return spec.load(location, test_size, seed, **columns)
