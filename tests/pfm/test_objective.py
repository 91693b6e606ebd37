import math

import pytest
import torch

from promptforget.pfm.objective import kl_uniform_to_softmax, sample_prompt_sets


@pytest.mark.parametrize("c", [2, 5, 10])
def test_view_a_always_contains_own_prompt_once(c):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, c, (500,), generator=g)
    ids, mask = sample_prompt_sets(labels, c, own=True, generator=g)
    assert ids.shape == mask.shape
    assert torch.equal(ids[:, 0], labels) and mask[:, 0].all()
    own_count = ((ids == labels[:, None]) & mask).sum(1)
    assert torch.equal(own_count, torch.ones_like(own_count))


@pytest.mark.parametrize("c", [2, 5, 10])
def test_view_b_never_contains_own_prompt(c):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, c, (500,), generator=g)
    ids, mask = sample_prompt_sets(labels, c, own=False, generator=g)
    assert not ((ids == labels[:, None]) & mask).any()


def test_subset_sizes_vary_over_full_range_without_duplicates():
    c = 6
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, c, (3000,), generator=g)
    for own in (True, False):
        ids, mask = sample_prompt_sets(labels, c, own=own, generator=g)
        sizes = mask.sum(1)
        wrong = sizes - 1 if own else sizes
        # k ~ U{0..C-1}: every size occurs, roughly uniformly.
        counts = torch.bincount(wrong, minlength=c)
        assert (counts > 3000 / c * 0.7).all(), counts
        assert len(counts) == c
        # masked slots form a prefix, and the prompts of a set are distinct classes
        assert torch.equal(mask, torch.arange(mask.shape[1])[None] < sizes[:, None])
        for row, m in zip(ids[:50], mask[:50]):
            chosen = row[m].tolist()
            assert len(set(chosen)) == len(chosen)


def test_sampling_is_seeded():
    labels = torch.tensor([0, 1, 2, 3])
    a = sample_prompt_sets(labels, 4, True, torch.Generator().manual_seed(5))
    b = sample_prompt_sets(labels, 4, True, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_kl_to_uniform():
    assert kl_uniform_to_softmax(torch.zeros(3, 5)).item() == pytest.approx(0.0, abs=1e-6)
    # one-hot-ish logits: KL(U||p) = -log C - mean log p, computed by hand
    logits = torch.tensor([[2.0, 0.0]])
    p = torch.softmax(logits, -1)
    expected = -math.log(2) - torch.log(p).mean().item()
    assert kl_uniform_to_softmax(logits).item() == pytest.approx(expected, rel=1e-6)
    assert kl_uniform_to_softmax(logits).item() > 0


def test_harmonic_view_b_sizes_weight_small_sets():
    c = 10
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, c, (20000,), generator=g)
    ids, mask = sample_prompt_sets(labels, c, own=False, generator=g, sizes="harmonic")
    counts = torch.bincount(mask.sum(1), minlength=c).float() / len(labels)
    expected = 1.0 / torch.arange(1, c + 1) / (1.0 / torch.arange(1, c + 1)).sum()  # P(k) ~ 1/(k+1)
    assert torch.allclose(counts, expected, atol=0.01), counts
    assert not ((ids == labels[:, None]) & mask).any()  # still never the own prompt
    with pytest.raises(ValueError, match="sizes"):
        sample_prompt_sets(labels, c, own=False, generator=g, sizes="geometric")
