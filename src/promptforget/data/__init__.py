"""Datasets by name (:mod:`promptforget.data.registry`), so the CLI and run directories can refer to them
reproducibly. Names: see :func:`dataset_names` (``bbc_news``, ``mnist5k``, ``csv:PATH``, ``hf:REPO_ID``...).
"""

from __future__ import annotations

from promptforget.data.registry import (
    dataset_help,
    dataset_names,
    get_dataset,
    load_splits,
)

__all__ = ["dataset_help", "dataset_names", "get_dataset", "load_splits"]
