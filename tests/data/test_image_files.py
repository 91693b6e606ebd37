"""Image datasets read from files. Local-format loaders are tested on small files written here in the
exact published layouts (CIFAR python pickles with bytes keys, MedMNIST .npz)."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest

from promptforget.data import image_files

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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
        ds = image_files.load_cifar10(root, "train")
        assert ds.images.shape == (15, 32, 32, 3) and ds.class_names == CIFAR10_NAMES
        train_rows = np.concatenate([rows[f"data_batch_{k}"] for k in range(1, 6)])
        _check_layout(ds.images, train_rows)
        assert ds.labels.tolist() == sum((labels[f"data_batch_{k}"] for k in range(1, 6)), [])
    te = image_files.load_cifar10(tmp_path, "test")
    _check_layout(te.images, rows["test_batch"])
    assert te.labels.tolist() == labels["test_batch"]
    assert len(image_files.load_cifar10(tmp_path, "all")) == 18

    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(d, arcname="cifar-10-batches-py")
    from_tar = image_files.load_cifar10(tar, "test")
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
    ds = image_files.load_cifar100(tmp_path, "train")
    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.class_names[7] == "fine7"
    assert ds.labels.tolist() == data["train"][1]
    _check_layout(ds.images, data["train"][0])
    co = image_files.load_cifar100(d, "test", label_mode="coarse")
    assert co.num_classes == 20 and co.labels.tolist() == data["test"][2]
    assert len(image_files.load_cifar100(d, "all")) == 10
    with pytest.raises(ValueError, match="label_mode"):
        image_files.load_cifar100(d, label_mode="medium")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path, capsys):
    d, _, _ = _write_cifar10(tmp_path)
    _dump(d / "test_batch", {b"labels": [0], b"data": _Evil()})
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        image_files.load_cifar10(d, "test")
    assert "pwned" not in capsys.readouterr().out


def test_cifar_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        image_files.load_cifar10(tmp_path)
    d, _, _ = _write_cifar10(tmp_path)
    _dump(d / "test_batch", {b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)})
    with pytest.raises(ValueError, match=r"test_batch.*\[N, 3072\]"):
        image_files.load_cifar10(d, "test")
    with pytest.raises(ValueError, match="split"):
        image_files.load_cifar10(d, "validation")


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
    ds = image_files.load_medmnist(path, "val")
    assert ds.name == "bloodmnist" and ds.images.shape == (3, 28, 28, 3)
    np.testing.assert_array_equal(ds.images, arrays["val_images"])
    np.testing.assert_array_equal(ds.labels, arrays["val_labels"].ravel())
    assert ds.labels.dtype == np.int64
    every = image_files.load_medmnist(path, "all", class_names=["a", "b", "c", "d"])
    assert len(every) == 15 and every.class_names == ["a", "b", "c", "d"]

    grey = tmp_path / "pneumoniamnist.npz"
    _write_medmnist(grey, classes=2)
    g = image_files.load_medmnist(grey, "train")
    assert g.images.shape == (8, 28, 28) and g.num_classes == 2


def test_medmnist_refuses_multilabel_and_missing_keys(tmp_path):
    multi = tmp_path / "chestmnist.npz"
    _write_medmnist(multi, label_cols=14)
    with pytest.raises(ValueError, match="multi-label"):
        image_files.load_medmnist(multi)
    partial = tmp_path / "x.npz"
    np.savez(partial, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="train_labels"):
        image_files.load_medmnist(partial)
    with pytest.raises(FileNotFoundError):
        image_files.load_medmnist(tmp_path / "nope.npz")


# --------------------------------------------------------------------------- dispatcher / online paths
def test_load_image_dataset_dispatch(tmp_path):
    assert image_files.load_image_dataset("digits").name == "digits"
    _write_cifar10(tmp_path)
    assert image_files.load_image_dataset("cifar10", tmp_path, split="test").images.shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="local copy"):
        image_files.load_image_dataset("cifar10")
    with pytest.raises(ValueError, match="unknown image dataset"):
        image_files.load_image_dataset("imagenet")


def test_online_paths_fail_clearly_without_their_packages_or_network(tmp_path, monkeypatch):
    # offline machines either lack the optional package or cannot reach the hub: both must say so
    # (hub offline mode: the same error at once, instead of after ~25 s of retries)
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises((ImportError, ConnectionError), match="datasets|hub"):
        image_files.load_image_dataset("hf:uoft-cs/cifar10")
    with pytest.raises((ImportError, ConnectionError), match="torchvision"):
        image_files.load_image_dataset("torchvision:CIFAR10", tmp_path / "tv")

