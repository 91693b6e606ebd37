"""Prefix-style prompts: the shared-bank and gathered key layouts and the reused bank projections are
exact rewrites of one sample attending to its own prompts."""

import pytest
import torch

from promptforget.pfm import prefix
from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel

CLASSES = [f"c{i}" for i in range(6)]


@pytest.fixture()
def model(tiny_vit_dir):
    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, prompt_style="prefix", lora_dropout=0.0))
    with torch.no_grad():  # LoRA B starts at zero: make the adapted key/value projections matter
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(n)))
    return m


def pixels(n, seed=0):
    return {"pixel_values": torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))}


def one_by_one(m, x, ids, mask):
    """Each sample alone with only its real prompts: no padding, no other sample's keys."""
    return torch.cat([m({"pixel_values": x["pixel_values"][i : i + 1]}, ids[i : i + 1, mask[i]], mask[i : i + 1, mask[i]])
                      for i in range(len(ids))])


def check_layout(m, x, ids, mask):
    w = torch.randn(len(ids), m.num_classes, generator=torch.Generator().manual_seed(1))
    for grad in (True, False):  # with gradients: the bank-sharing attention; without: SDPA over the keys
        with torch.set_grad_enabled(grad):
            batched, alone = m(x, ids, mask), one_by_one(m, x, ids, mask)
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    params = [p for p in m.parameters() if p.requires_grad]
    g_batched = torch.autograd.grad((m(x, ids, mask) * w).sum(), params, allow_unused=True)
    g_alone = torch.autograd.grad((one_by_one(m, x, ids, mask) * w).sum(), params, allow_unused=True)
    for a, b in zip(g_batched, g_alone):
        if a is None or b is None:
            assert a is None or not a.any()
            assert b is None or not b.any()
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shared_bank_layout_is_exact(model):
    # sets of every size, padded to the largest: the batch uses about as many bank rows as its largest set
    ids = torch.tensor([[0, 3, 5, 1, 2], [4, 0, 0, 0, 0], [2, 1, 0, 0, 0], [5, 4, 3, 2, 0], [1, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]]).bool()
    check_layout(model, pixels(5), ids, mask)


def test_gathered_layout_is_exact(model):
    # one prompt each out of six distinct rows (the own/random_wrong probes): each sample gets only its own keys
    ids = torch.tensor([[0], [1], [2], [3], [4], [5]])
    check_layout(model, pixels(6), ids, torch.ones(6, 1, dtype=torch.bool))
    # a set naming one prompt twice attends to it twice, in either layout's place
    twice = model.eval()(pixels(1), torch.tensor([[2, 2]]), torch.ones(1, 2, dtype=torch.bool))
    once = model(pixels(1), torch.tensor([[2]]), torch.ones(1, 1, dtype=torch.bool))
    assert not torch.allclose(twice, once, atol=1e-5)


def test_reused_bank_projections_are_exact_and_follow_forgets(model, monkeypatch):
    model.eval()
    x = pixels(4)
    sets = [(torch.tensor([[0, 1, 2]] * 4), torch.ones(4, 3, dtype=torch.bool)), (None, None),
            (torch.tensor([[5], [4], [3], [2]]), torch.ones(4, 1, dtype=torch.bool))]
    with torch.no_grad():
        fresh = [model(x, ids, mask) for ids, mask in sets]
    calls = []
    project = prefix.project_bank
    monkeypatch.setattr(prefix, "project_bank", lambda *a: calls.append(1) or project(*a))
    with torch.no_grad(), prefix.reuse_bank_projections():
        reused = [model(x, ids, mask) for ids, mask in sets]
        assert len(calls) == 1  # one bank, three forwards
        model.forget(["c5"])
        after_forget = model(x, None, None)
        assert len(calls) == 2  # a new bank: projected again
    for a, b in zip(fresh, reused):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(after_forget, model(x), atol=1e-6, rtol=1e-6)
    with prefix.reuse_bank_projections():  # with gradients on, nothing is reused (training changes the weights)
        model(x)
        model(x)
    assert len(calls) == 5
