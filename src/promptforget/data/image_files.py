"""Image datasets read from files in their published formats, or downloaded when online.

Every loader returns an :class:`~promptforget.data.images.ImageDataset`::

    load_cifar10(root, split)                CIFAR-10, python pickle batches (dir or .tar.gz)
    load_cifar100(root, split, label_mode)   CIFAR-100, python pickle (fine or coarse labels)
    load_medmnist(path, split)               a MedMNIST ``.npz`` (e.g. pathmnist.npz)
    load_hf_image_dataset(repo_id, split)    Hugging Face ``datasets`` (hub id, online or cached)
    load_torchvision_dataset(name, root)     torchvision download (online, optional dependency)
    load_image_dataset(spec, ...)            one entry point by name ("mnist-5k", "cifar10", "hf:...")

The CIFAR files are pickles; they are read with an unpickler that only rebuilds numpy arrays. Not
torchvision's ``CIFAR10(download=False)``: no torchvision release imports beside the pinned CPU
``torch==2.13.0`` ("operator torchvision::nms does not exist"), the pair that does is a 5.5 GB CUDA
build, and torchvision unpickles the files unrestricted.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np

from promptforget.data.hub import fetch_hub_dataset, image_column_of
from promptforget.data.images import ImageDataset, load_digits, load_mnist_5k


# --------------------------------------------------------------------------- CIFAR (python pickle format)
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: the CIFAR files are pickles, and an arbitrary pickle can
    run code, so everything except array reconstruction is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core.") :]  # avoid numpy 2's deprecation shim
        return super().find_class(module, name)


def _unpickle(data: bytes, what: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise ValueError(f"{what}: not a readable CIFAR python pickle ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a pickled dict, got {type(obj).__name__}")
    # files written by Python 2 have bytes keys; accept str keys too
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


class _Source:
    """Files of a CIFAR release, from the extracted directory or straight from the .tar.gz."""

    def __init__(self, root: str | os.PathLike, folder: str, probe: str):
        root = Path(root).expanduser()
        self.tar = None
        if root.is_file() and tarfile.is_tarfile(root):
            self.tar = tarfile.open(root)
            self.members = {Path(m.name).name: m for m in self.tar.getmembers() if m.isfile()}
            self.where = str(root)
        elif (root / probe).is_file():
            self.dir, self.where = root, str(root)
        elif (root / folder / probe).is_file():
            self.dir, self.where = root / folder, str(root / folder)
        else:
            raise FileNotFoundError(
                f"no {probe!r} under {root} or {root / folder}; point to the extracted '{folder}' directory "
                f"or the release .tar.gz"
            )

    def read(self, name: str) -> bytes:
        if self.tar is not None:
            if name not in self.members:
                raise FileNotFoundError(f"{self.where} has no member {name!r}")
            return self.tar.extractfile(self.members[name]).read()
        path = self.dir / name
        if not path.is_file():
            raise FileNotFoundError(f"missing CIFAR file {path}")
        return path.read_bytes()


def _cifar_images(d: dict, what: str) -> np.ndarray:
    data = np.asarray(d.get("data"))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{what}: 'data' must be [N, 3072] (32x32 RGB, channel-major), got {data.shape}")
    # rows are R(1024) G(1024) B(1024), each plane row-major -> NHWC
    return np.ascontiguousarray(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def load_cifar10(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """CIFAR-10 from ``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``).

    ``root``: that directory, its parent, or ``cifar-10-python.tar.gz``. ``split``: train, test or all.
    """
    _check_split(split, ("train", "test", "all"))
    src = _Source(root, "cifar-10-batches-py", "batches.meta")
    meta = _unpickle(src.read("batches.meta"), f"{src.where}/batches.meta")
    if "label_names" not in meta:
        raise ValueError(f"{src.where}/batches.meta has no 'label_names'")
    classes = _names(meta["label_names"])
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    files["all"] = files["train"] + files["test"]
    images, labels = [], []
    for f in files[split]:
        d = _unpickle(src.read(f), f"{src.where}/{f}")
        if "labels" not in d:
            raise ValueError(f"{src.where}/{f} has no 'labels'")
        images.append(_cifar_images(d, f"{src.where}/{f}"))
        labels.append(np.asarray(d["labels"], dtype=np.int64))
        if len(labels[-1]) != len(images[-1]):
            raise ValueError(f"{src.where}/{f}: {len(images[-1])} images but {len(labels[-1])} labels")
    return ImageDataset(np.concatenate(images), np.concatenate(labels), classes, "cifar10", {"source": src.where, "split": split})


def load_cifar100(root: str | os.PathLike, split: str = "train", label_mode: str = "fine") -> ImageDataset:
    """CIFAR-100 from ``cifar-100-python`` (``train``, ``test``, ``meta``); 100 fine or 20 coarse classes."""
    _check_split(split, ("train", "test", "all"))
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    src = _Source(root, "cifar-100-python", "meta")
    meta = _unpickle(src.read("meta"), f"{src.where}/meta")
    key = f"{label_mode}_label_names"
    if key not in meta:
        raise ValueError(f"{src.where}/meta has no {key!r}")
    classes = _names(meta[key])
    images, labels = [], []
    for f in (["train", "test"] if split == "all" else [split]):
        d = _unpickle(src.read(f), f"{src.where}/{f}")
        if f"{label_mode}_labels" not in d:
            raise ValueError(f"{src.where}/{f} has no '{label_mode}_labels'")
        images.append(_cifar_images(d, f"{src.where}/{f}"))
        labels.append(np.asarray(d[f"{label_mode}_labels"], dtype=np.int64))
        if len(labels[-1]) != len(images[-1]):
            raise ValueError(f"{src.where}/{f}: {len(images[-1])} images but {len(labels[-1])} labels")
    name = "cifar100" if label_mode == "fine" else "cifar100-coarse"
    return ImageDataset(np.concatenate(images), np.concatenate(labels), classes, name, {"source": src.where, "split": split})


# --------------------------------------------------------------------------- MedMNIST (.npz)
def load_medmnist(path: str | os.PathLike, split: str = "train", class_names: Sequence[str] | None = None) -> ImageDataset:
    """A MedMNIST 2-D file (``pathmnist.npz`` ...): keys ``{train,val,test}_{images,labels}``, labels ``[N,1]``.

    Class names come from ``class_names``, else from the ``medmnist`` package's INFO when installed,
    else ``"0".."K-1"``. Multi-label (ChestMNIST) and 3-D volumes are refused with a clear error.
    """
    _check_split(split, ("train", "val", "test", "all"))
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file not found: {path}")
    flag = path.stem.split("_")[0].lower()  # "pathmnist_224.npz" -> "pathmnist"
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        parts = []
        for s in (["train", "val", "test"] if split == "all" else [split]):
            if f"{s}_images" not in keys or f"{s}_labels" not in keys:
                raise ValueError(f"{path}: missing {s}_images/{s}_labels (keys: {sorted(keys)})")
            x, y = z[f"{s}_images"], z[f"{s}_labels"]
            if y.ndim == 2 and y.shape[1] != 1:
                raise ValueError(f"{path}: labels are [N,{y.shape[1]}] (multi-label, e.g. ChestMNIST); only single-label sets are supported")
            if x.ndim == 4 and x.shape[-1] not in (1, 3):
                raise ValueError(f"{path}: images {x.shape} look like 3-D volumes; only 2-D MedMNIST is supported")
            if x.ndim == 4 and x.shape[-1] == 1:
                x = x[..., 0]
            if x.dtype != np.uint8:
                raise ValueError(f"{path}: {s}_images must be uint8, got {x.dtype}")
            parts.append((x, y.reshape(-1).astype(np.int64), s))
    n_cls = int(max(p[1].max() for p in parts if p[1].size) + 1)
    names = list(class_names) if class_names is not None else _medmnist_names(flag, n_cls)
    if len(names) < n_cls:
        raise ValueError(f"{path}: labels go up to {n_cls - 1} but {len(names)} class names were given")
    sets = [ImageDataset(x, y, names, flag, {"source": str(path), "split": s}) for x, y, s in parts]
    return sets[0] if len(sets) == 1 else _concat_splits(sets, flag)


def _medmnist_names(flag: str, n: int) -> list[str]:
    try:
        from medmnist import INFO  # optional; holds the official label names

        labels = INFO[flag]["label"]
        return [labels[str(i)] for i in range(len(labels))]
    except Exception:  # noqa: BLE001 - not installed / unknown flag: numbered classes
        return [str(i) for i in range(n)]


def _concat_splits(parts: list[ImageDataset], name: str) -> ImageDataset:
    return ImageDataset(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        parts[0].class_names,
        name,
        {**parts[0].meta, "split": "all"},
    )


# --------------------------------------------------------------------------- online paths
def load_hf_image_dataset(
    repo_id: str,
    split: str = "train",
    image_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
) -> ImageDataset:
    """One split through Hugging Face ``datasets`` (e.g. ``uoft-cs/cifar10``, ``ylecun/mnist``; online or cached)."""
    ds = fetch_hub_dataset(repo_id, split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return image_dataset_from_table(ds, repo_id, split, image_column, label_column)


def image_dataset_from_table(ds, repo_id: str, split: str, image_column: str | None = None,
                             label_column: str | None = None) -> ImageDataset:
    """A ``datasets.Dataset`` of images and integer labels as an :class:`ImageDataset`."""
    cols = ds.column_names
    image_column = image_column or image_column_of(ds) or next((c for c in ("image", "img", "pixel_values") if c in cols), None)
    label_column = label_column or next((c for c in ("label", "fine_label", "labels") if c in cols), None)
    if image_column is None or label_column is None:
        raise ValueError(f"{repo_id}: cannot tell the image/label columns from {cols}; pass image_column/label_column")
    feature = ds.features[label_column]
    classes = list(feature.names) if hasattr(feature, "names") else None
    images = _stack_images([np.asarray(im) for im in ds[image_column]], repo_id)
    labels = np.asarray(ds[label_column], dtype=np.int64)
    classes = classes or [str(i) for i in range(int(labels.max()) + 1)]
    return ImageDataset(images, labels, classes, f"hf:{repo_id}", {"source": repo_id, "split": split})


def load_torchvision_dataset(name: str, root: str | os.PathLike, split: str = "train", download: bool = True) -> ImageDataset:
    """``torchvision.datasets.<name>`` (MNIST, FashionMNIST, CIFAR10, CIFAR100, ...). Downloads when online."""
    _check_split(split, ("train", "test"))
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise ImportError("loading through torchvision needs `pip install torchvision`") from e
    cls = getattr(tvd, name, None)
    if cls is None:
        raise ValueError(f"torchvision.datasets has no {name!r}")
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except RuntimeError as e:  # torchvision raises RuntimeError when files are missing and cannot be fetched
        raise ConnectionError(f"torchvision could not find or download {name} under {root}: {e}") from e
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    targets = np.asarray(ds.targets.numpy() if hasattr(ds.targets, "numpy") else ds.targets, dtype=np.int64)
    classes = list(getattr(ds, "classes", [])) or [str(i) for i in range(int(targets.max()) + 1)]
    return ImageDataset(_stack_images(list(data), name), targets, classes, f"torchvision:{name}", {"source": str(root), "split": split})


def _stack_images(images: list[np.ndarray], what: str) -> np.ndarray:
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"{what}: images have different sizes {sorted(shapes)[:3]}...; resize them first")
    x = np.stack(images)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 4 and x.shape[-1] == 4:  # RGBA -> RGB
        x = x[..., :3]
    return x.astype(np.uint8, copy=False)


# --------------------------------------------------------------------------- one entry point
def load_image_dataset(spec: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs) -> ImageDataset:
    """Load by name. ``root`` is the local copy for cifar10/cifar100 (dir or tar.gz) and the .npz for medmnist."""
    key = spec.lower()
    if key in ("mnist-5k", "mnist5k"):
        return load_mnist_5k()
    if key in ("digits", "sklearn-digits"):
        return load_digits()
    if key in ("cifar10", "cifar-10", "cifar100", "cifar-100", "medmnist"):
        if root is None:
            raise ValueError(
                f"{spec} is read from a local copy: pass its path (CIFAR: the extracted *-python directory or the "
                f".tar.gz; MedMNIST: the .npz), or use hf:<repo_id> when online"
            )
        if key.startswith("cifar") and key.replace("-", "") == "cifar10":
            return load_cifar10(root, split)
        if key.startswith("cifar"):
            return load_cifar100(root, split, **kwargs)
        return load_medmnist(root, split, **kwargs)
    if spec.startswith("hf:"):
        return load_hf_image_dataset(spec[3:], split, **kwargs)
    if spec.startswith("torchvision:"):
        if root is None:
            raise ValueError("torchvision datasets need a root directory to download into")
        return load_torchvision_dataset(spec[len("torchvision:") :], root, split, **kwargs)
    from promptforget.data.registry import (
        dataset_names,  # the registry loads through this module
    )

    known = ", ".join([*dataset_names(kind="image"), "torchvision:NAME"])
    raise ValueError(f"unknown image dataset {spec!r}; known: {known}")

