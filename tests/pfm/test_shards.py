"""Class-sharded PFM: shards see only their classes, and an exact forget retrains only the affected shard,
giving what a retrain from scratch without the class gives."""

import numpy as np
import pytest
import torch

from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel, UnknownClassError
from promptforget.pfm.shards import ShardedPFM, ShardRouter, combine_scores, shard_classes
from promptforget.pfm.train import fit

CLASSES = ["a", "b", "c", "d", "e"]


def config(backbone_dir, **kw):
    return PFMConfig(**{"backbone": backbone_dir, "class_names": CLASSES, "epochs": 1, "batch_size": 8,
                        "lora_dropout": 0.0, "prompt_layer": 1, **kw})


def data(n_per_class=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    # each class its own mean image, so the classes are learnable
    means = torch.randn(len(CLASSES), 3, 16, 16, generator=g)
    x = means[torch.as_tensor(labels)] + 0.3 * torch.randn(len(labels), 3, 16, 16, generator=g)
    return {"pixel_values": x}, labels


def encoded(model, x):
    return {k: v for k, v in zip(("hidden_states", "key_mask"), model.shards[0].features(x))}


def states(m):
    return {k: v.clone() for k, v in m.trainable_state_dict().items()}


def test_classes_are_dealt_round_robin_and_each_shard_needs_two():
    assert shard_classes(CLASSES, 2) == [["a", "c", "e"], ["b", "d"]]
    assert shard_classes(CLASSES, 1) == [CLASSES]
    with pytest.raises(ValueError, match="too many for 5 classes"):
        shard_classes(CLASSES, 3)
    with pytest.raises(ValueError, match="positive integer"):
        shard_classes(CLASSES, 0)


def test_combine_rules_put_each_shard_in_its_columns():
    parts = [([0, 2], torch.tensor([[2.0, 0.0]])), ([1, 3], torch.tensor([[0.0, 5.0]]))]
    logits = combine_scores(parts, 5, "logits")
    assert logits[0, 4] == 0 and logits.sum().item() == pytest.approx(1.0) and logits.argmax().item() == 3
    # per-shard softmax: shard 1's 5.0 margin beats shard 0's 2.0 margin
    assert combine_scores(parts, 5, "prob").argmax().item() == 3
    # both shards equally sure: the larger logits win under "logits" but not under "prob"
    even = [([0, 2], torch.tensor([[1.0, 0.0]])), ([1, 3], torch.tensor([[11.0, 10.0]]))]
    assert combine_scores(even, 5, "logits").argmax().item() == 1
    p = combine_scores(even, 5, "prob")
    assert p[0, 0].item() == pytest.approx(p[0, 1].item())
    # routed_soft: the router's shard probabilities weigh each shard's softmax
    routes = torch.log(torch.tensor([[0.52, 0.48]]))
    p = combine_scores(parts, 5, "routed_soft", routes)
    assert p[0, [0, 2]].sum().item() == pytest.approx(0.52) and p.argmax().item() == 3  # 0.48 * 0.99 > 0.52 * 0.88
    # routed: the router's pick alone
    p = combine_scores(parts, 5, "routed", routes)
    assert p[0, [0, 2]].sum().item() == pytest.approx(1.0) and p.argmax().item() == 0
    with pytest.raises(ValueError, match="needs the router"):
        combine_scores(parts, 5, "routed")
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_scores(parts, 5, "vote")


def test_each_shard_trains_on_its_classes_only_and_predicts_over_all(tiny_vit_dir):
    model = ShardedPFM(config(tiny_vit_dir), n_shards=2)
    assert [s.class_names for s in model.shards] == [["a", "c", "e"], ["b", "d"]]
    x, labels = data()
    inputs = encoded(model, x)
    seconds = model.fit(inputs, labels)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)  # two shards, then the router
    # shard 0 equals a PFM of its 3 classes trained on their 18 examples alone
    alone = PFMModel(config(tiny_vit_dir, class_names=["a", "c", "e"]))
    rows = np.flatnonzero(np.isin(labels, [0, 2, 4]))
    fit(alone, {k: v[torch.as_tensor(rows)] for k, v in inputs.items()},
        torch.as_tensor([[0, 2, 4].index(int(y)) for y in labels[rows]]), progress=False)
    for k, v in states(alone).items():
        torch.testing.assert_close(model.shards[0].trainable_state_dict()[k], v, rtol=0, atol=0)
    for rule in ("routed", "routed_soft", "logits", "prob", "excess"):
        p = model.predict_proba(inputs, combine=rule)
        assert p.shape == (30, 5) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_exact_forget_retrains_only_the_affected_shard_as_from_scratch(tiny_vit_dir):
    model = ShardedPFM(config(tiny_vit_dir), n_shards=2)
    x, labels = data()
    inputs = encoded(model, x)
    model.fit(inputs, labels)
    untouched = states(model.shards[1])
    seconds = model.exact_forget(["c"], inputs, labels)
    assert list(seconds) == [0, "router"] and model.retrained == ["c"]
    assert model.shards[0].class_names == ["a", "e"]
    for k, v in untouched.items():  # the other shard never saw "c": it is not retrained
        torch.testing.assert_close(model.shards[1].trainable_state_dict()[k], v, rtol=0, atol=0)
    # the retrained shard is the recipe trained from scratch on "a" and "e" alone
    scratch = PFMModel(config(tiny_vit_dir, class_names=["a", "e"]))
    rows = np.flatnonzero(np.isin(labels, [0, 4]))
    fit(scratch, {k: v[torch.as_tensor(rows)] for k, v in inputs.items()},
        torch.as_tensor([[0, 4].index(int(y)) for y in labels[rows]]), progress=False)
    for k, v in states(scratch).items():
        torch.testing.assert_close(model.shards[0].trainable_state_dict()[k], v, rtol=0, atol=0)
    # the router too is refitted from scratch on the examples of the classes left
    rows = np.flatnonzero(labels != 2)
    features = model.frozen_features({k: v[torch.as_tensor(rows)] for k, v in inputs.items()})
    router = ShardRouter(2).fit(features, torch.as_tensor([int(y) % 2 for y in labels[rows]]))
    torch.testing.assert_close(model.router.linear.weight, router.linear.weight, rtol=0, atol=0)
    p = model.predict_proba(inputs)
    assert np.all(p[:, 2] == 0) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(UnknownClassError, match="forgotten exactly"):
        model.exact_forget(["c"], inputs, labels)


def test_shard_epochs_sets_every_shards_epochs(tiny_vit_dir):
    model = ShardedPFM(config(tiny_vit_dir), n_shards=2, shard_epochs=3)
    assert [s.config.epochs for s in model.shards] == [3, 3] and model.config.epochs == 3
    with pytest.raises(ValueError, match="shard_epochs must be a positive integer"):
        ShardedPFM(config(tiny_vit_dir), n_shards=2, shard_epochs=0)


def test_a_shard_left_with_one_class_or_a_bad_name_changes_nothing(tiny_vit_dir):
    model = ShardedPFM(config(tiny_vit_dir), n_shards=2)
    x, labels = data()
    inputs = encoded(model, x)
    model.fit(inputs, labels)
    before = [states(s) for s in model.shards]
    with pytest.raises(ValueError, match="shard 1 would keep 1 class"):
        model.exact_forget(["b"], inputs, labels)
    with pytest.raises(UnknownClassError, match="unknown class 'z'"):
        model.exact_forget(["a", "z"], inputs, labels)
    for shard, sd in zip(model.shards, before):
        for k, v in sd.items():
            torch.testing.assert_close(shard.trainable_state_dict()[k], v, rtol=0, atol=0)
    # the instant forget deletes the prompt only
    model.forget("b")
    assert model.shards[1].active_classes == ["d"] and model.shards[1].class_names == ["b", "d"]
    with pytest.raises(ValueError, match="would keep no class"):
        model.forget("d")
