"""The one split module: the indices are pinned, because run directories are rebuilt from them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from promptforget.data.images import ImageDataset
from promptforget.data.splits import (
    balanced_subsample,
    shuffle_split,
    split_examples,
    stratified_split,
    subsample,
)
from promptforget.data.text import TextDataset


@pytest.mark.parametrize("test_size, seed", [(0.2, 42), (0.35, 0), (7, 3)])
def test_stratified_split_is_sklearns_stratified_split_sorted(test_size, seed):
    labels = np.repeat([0, 1, 2], [10, 15, 20])
    tr, te = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels)
    got_tr, got_te = stratified_split(labels, test_size, seed)
    np.testing.assert_array_equal(got_tr, np.sort(tr))
    np.testing.assert_array_equal(got_te, np.sort(te))


def test_stratified_split_pinned_indices():
    tr, te = stratified_split([0] * 6 + [1] * 4, 0.5, 0)
    assert tr.tolist() == [1, 2, 5, 6, 9] and te.tolist() == [0, 3, 4, 7, 8]


def test_text_and_image_datasets_split_through_the_same_function():
    labels = np.repeat([0, 1], [6, 4])
    text = TextDataset(list("abcdefghij"), labels, ["x", "y"], "t")
    images = ImageDataset(np.arange(10, dtype=np.uint8).reshape(10, 1, 1).repeat(2, 1), labels, ["x", "y"], "i")
    tr, te = stratified_split(labels, 0.5, 0)
    t_tr, t_te = text.train_test_split(0.5, 0)
    i_tr, i_te = images.train_test_split(0.5, 0)
    assert t_tr.texts == [text.texts[i] for i in tr] and t_te.texts == [text.texts[i] for i in te]
    assert i_tr.images[:, 0, 0].tolist() == tr.tolist() and i_te.images[:, 0, 0].tolist() == te.tolist()
    # the defaults differ (text 42, images 0) and stay that way: recorded runs rely on them
    assert text.train_test_split()[1].texts == [text.texts[i] for i in stratified_split(labels, 0.2, 42)[1]]


def test_test_size_zero_keeps_every_example_for_training():
    train, test = stratified_split([0, 1] * 5, 0)
    assert train.tolist() == list(range(10)) and len(test) == 0


@pytest.mark.parametrize("test_size", [-0.1, 1.0, 1.5])
def test_stratified_split_rejects_bad_sizes_in_one_line(test_size):
    with pytest.raises(ValueError, match="test_size"):
        stratified_split([0, 1] * 5, test_size)
    with pytest.raises(ValueError, match=r"^t: test_size"):
        TextDataset(list("abcdefghij"), [0, 1] * 5, ["x", "y"], "t").train_test_split(test_size)


def test_stratified_split_needs_two_of_each_class():
    with pytest.raises(ValueError, match="stratified"):
        stratified_split([0, 1, 1, 1, 1], 0.4)


def test_shuffle_split_and_subsample_pinned_indices():
    assert shuffle_split(10, 0.3, 0) == ([0, 2, 3, 4, 5, 6, 9], [1, 7, 8])
    assert shuffle_split(10, 3, 0) == shuffle_split(10, 0.3, 0)  # a count or a fraction
    assert balanced_subsample(list("aabbbbcccc"), 5, 1) == [0, 1, 2, 4, 9]
    assert balanced_subsample(list("aabbbbcccc"), 4, 2, stratify=False) == [0, 1, 2, 8]
    with pytest.raises(ValueError, match="empty split"):
        shuffle_split(10, 0.01)
    with pytest.raises(ValueError, match="positive"):
        balanced_subsample(list("ab"), 0)


def test_example_dicts_keep_their_order():
    examples = [{"id": i, "label": label} for i, label in enumerate("aabbbbcccc")]
    train, test = split_examples(examples, 0.3, 0)
    assert [e["id"] for e in train] == [0, 2, 3, 4, 5, 6, 9] and [e["id"] for e in test] == [1, 7, 8]
    assert [e["id"] for e in subsample(examples, 5, 1)] == [0, 1, 2, 4, 9]
    assert subsample(examples, None) == examples and subsample(examples, 99) == examples
