"""Seeded train/test splits and subsamples, as index arrays every dataset type can apply.

Two algorithms, because recorded run directories are rebuilt from (dataset, test_size, seed) and must
get the same examples back:

* :func:`stratified_split` (sklearn's ``train_test_split(stratify=labels)``): the classification sets
  (``TextDataset``, ``ImageDataset``) that PFM trains on;
* :func:`shuffle_split` and :func:`balanced_subsample` (Python's ``random``): the example dicts SPUL
  prompts with (:func:`split_examples`, :func:`subsample`).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

import numpy as np


def stratified_split(labels, test_size: float | int = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)``, each sorted, with every class keeping its share in both parts.

    ``test_size``: a fraction in (0, 1) or a number of examples; 0 keeps every example for training.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if test_size == 0:
        return np.arange(len(labels)), np.arange(0)
    if isinstance(test_size, float) and not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in [0, 1) or a count, got {test_size}")
    try:
        train, test = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels)
    except ValueError as e:  # e.g. a class with a single example
        raise ValueError(f"cannot make a stratified split with test_size={test_size}: {e}") from e
    return np.sort(train), np.sort(test)


def shuffle_split(n: int, test_size: float | int, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train_idx, test_idx)`` of ``range(n)``, each sorted, from one seeded shuffle (not stratified).

    ``test_size``: a fraction in (0, 1) or a number of examples.
    """
    n_test = int(round(test_size * n)) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size} leaves an empty split for {n} examples")
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return sorted(idx[n_test:]), sorted(idx[:n_test])


def balanced_subsample(labels: Sequence[Hashable], n: int, seed: int = 0, stratify: bool = True) -> list[int]:
    """Sorted indices of ``n`` of the examples: the same number per label (the first ``n % classes``
    labels in sorted order get one more) when ``stratify``, a plain seeded sample otherwise."""
    if n <= 0:
        raise ValueError(f"subsample size must be positive, got {n}")
    rng = random.Random(seed)
    if not stratify:
        return sorted(rng.sample(range(len(labels)), n))
    by_label: dict = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep: list[int] = []
    names = sorted(by_label)
    for j, label in enumerate(names):
        share = n // len(names) + (1 if j < n % len(names) else 0)
        keep += rng.sample(by_label[label], min(share, len(by_label[label])))
    return sorted(keep)


def split_examples(examples: list[dict], test_size: float | int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Example dicts split by :func:`shuffle_split`, original order kept in each part."""
    train, test = shuffle_split(len(examples), test_size, seed)
    return [examples[i] for i in train], [examples[i] for i in test]


def subsample(examples: list[dict], n: int | None, seed: int = 0, stratify: bool = True) -> list[dict]:
    """``n`` of the example dicts (all when ``n`` is None or too large), label-balanced when ``stratify``;
    original order kept."""
    if n is None or n >= len(examples):
        return list(examples)
    labels = [ex["label"] for ex in examples] if stratify else [None] * len(examples)
    return [examples[i] for i in balanced_subsample(labels, n, seed, stratify)]
