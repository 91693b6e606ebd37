"""Datasets by name, so the CLI and run directories can refer to them reproducibly.

Names: ``bbc_news`` (offline, text), ``mnist5k`` / ``digits`` (offline, images),
``csv:PATH`` / ``jsonl:PATH`` (text,label columns), ``cifar10:DIR``, ``cifar100:DIR``,
``medmnist:FILE.npz`` (local files in the published formats; their official test split is used),
``hf:REPO_ID`` (Hugging Face image dataset, online).
"""

from __future__ import annotations

from pathlib import Path

DATASETS = ("bbc_news", "mnist5k", "digits", "csv:PATH", "jsonl:PATH", "cifar10:DIR", "cifar100:DIR",
            "medmnist:FILE.npz", "hf:REPO_ID")


def load_splits(name: str, test_size: float = 0.2, seed: int = 42):
    """(train, test) for a dataset name: the official split where the source has one, else a stratified
    ``test_size`` split with ``seed``. Each part has ``inputs``, ``labels``, ``class_names``."""
    kind, _, arg = name.partition(":")
    if kind == "bbc_news":
        from promptforget.data.text import load_bbc_news

        return load_bbc_news().train_test_split(test_size, seed)
    if kind in ("csv", "jsonl"):
        from promptforget.data.text import load_text_file

        return load_text_file(Path(arg), fmt=kind).train_test_split(test_size, seed)
    from promptforget.data import images

    if kind in ("mnist5k", "mnist-5k"):
        return images.load_mnist_5k().train_test_split(test_size, seed)
    if kind == "digits":
        return images.load_digits().train_test_split(test_size, seed)
    if kind in ("cifar10", "cifar100", "medmnist", "hf"):
        if not arg:
            raise ValueError(f"dataset {kind!r} needs a location: {kind}:PATH")
        spec, root = (f"hf:{arg}", None) if kind == "hf" else (kind, arg)
        return (images.load_image_dataset(spec, root, split="train"), images.load_image_dataset(spec, root, split="test"))
    raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
