"""Datasets by name, so the CLI and run directories can refer to them reproducibly.

Names: ``bbc_news`` (offline, text), ``mnist5k`` / ``digits`` (offline, images),
``csv:PATH`` / ``jsonl:PATH`` (text,label columns), ``cifar10:DIR``, ``cifar100:DIR``,
``medmnist:FILE.npz`` (local files in the published formats).
"""

from __future__ import annotations

from pathlib import Path


def load_dataset(name: str):
    """Return a dataset object with ``inputs``, ``labels`` (int64), ``class_names`` and ``train_test_split``."""
    kind, _, arg = name.partition(":")
    if kind == "bbc_news":
        from promptforget.data.text import load_bbc_news

        return load_bbc_news()
    if kind in ("csv", "jsonl"):
        from promptforget.data.text import load_text_file

        return load_text_file(Path(arg), fmt=kind)
    if kind in ("mnist5k", "digits", "cifar10", "cifar100", "medmnist"):
        from promptforget.data import images

        if kind == "mnist5k":
            return images.load_mnist5k()
        if kind == "digits":
            return images.load_sklearn_digits()
        if not arg:
            raise ValueError(f"dataset {kind!r} needs a local path: {kind}:PATH")
        if kind == "cifar10":
            return images.load_cifar10(arg)
        if kind == "cifar100":
            return images.load_cifar100(arg)
        return images.load_medmnist(arg)
    raise ValueError(
        f"unknown dataset {name!r}; use bbc_news, mnist5k, digits, csv:PATH, jsonl:PATH, cifar10:DIR, "
        "cifar100:DIR or medmnist:FILE.npz"
    )
