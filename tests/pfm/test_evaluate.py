import math

import pytest
import torch

from promptforget.pfm.config import PFMConfig
from promptforget.pfm.evaluate import (PROBES, default_ks, evaluate_probes, evaluate_protocol, evaluate_state,
                                       forgetting_combinations)
from promptforget.pfm.model import PFMModel


def test_combinations_all_or_sampled():
    assert len(forgetting_combinations(list(range(5)), 2, 50, 0)) == 10
    assert forgetting_combinations([0, 1, 2], 1, 50, 0) == [(0,), (1,), (2,)]
    sampled = forgetting_combinations(list(range(10)), 5, 20, 0)
    assert len(sampled) == 20 and len(set(sampled)) == 20 and all(len(c) == 5 for c in sampled)
    assert sampled == forgetting_combinations(list(range(10)), 5, 20, 0)


def test_default_ks():
    assert default_ks(10) == [1, 5, 9]
    assert default_ks(5) == [1, 2, 4]
    assert default_ks(2) == [1]


@pytest.fixture(scope="module")
def model_and_data(tiny_vit_dir):
    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=["a", "b", "c", "d"])).eval()
    g = torch.Generator().manual_seed(0)
    x = {"pixel_values": torch.randn(24, 3, 16, 16, generator=g)}
    y = torch.arange(24) % 4
    return m, x, y


def test_protocol_structure_and_head_mask(model_and_data):
    m, x, y = model_and_data
    r = evaluate_protocol(m, x, y, ks=None, max_combinations=50, progress=False)
    assert r["ks"] == [1, 2, 3]
    for k in (1, 2, 3):
        s = r["by_k"][str(k)]
        assert s["combinations"] == math.comb(4, k) == len(s["runs"])
        # masking forgotten classes in the head makes their accuracy exactly 0
        assert s["forgotten_acc_head_masked"]["mean"] == 0.0
        for run in s["runs"]:
            assert 0 <= run["retained_acc"] <= 1 and len(run["forgotten"]) == k
    with pytest.raises(ValueError, match="out of range"):
        evaluate_protocol(m, x, y, ks=[4], progress=False)


def test_protocol_matches_really_forgetting(model_and_data):
    """Simulating the removal via the prompt bank must equal calling forget() on a copy."""
    import copy

    m, x, y = model_and_data
    r = evaluate_protocol(m, x, y, ks=[1], progress=False)
    run = next(rr for rr in r["by_k"]["1"]["runs"] if rr["forgotten"] == ["c"])
    m2 = copy.deepcopy(m)
    m2.forget(["c"])
    st = evaluate_state(m2, x, y)
    assert st["no_mask"]["retained_acc"] == pytest.approx(run["retained_acc"])
    assert st["no_mask"]["forgotten_acc"] == pytest.approx(run["forgotten_acc"])


def test_probes(model_and_data):
    m, x, y = model_and_data
    p = evaluate_probes(m, x, y)
    assert set(PROBES) <= set(p)
    assert p["best_single"]["prompt"] in m.active_classes
    assert p["best_single"]["acc"] == max(p["best_single"]["per_prompt"].values())
    assert p["n_samples"] == 24


class AntiPredictor(torch.nn.Module):
    """Knows every class: with its own prompt it answers it, without, it puts that class *last*."""

    class_names = ["a", "b", "c", "d"]
    active_classes = class_names
    num_classes = 4

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def class_index(self, name):
        return self.class_names.index(name)

    def forward(self, inputs, prompt_ids=None, prompt_mask=None, mask_forgotten=False):
        y = inputs["label"]
        onehot = torch.nn.functional.one_hot(y, 4).float()
        has_own = ((prompt_ids == y[:, None]) & prompt_mask).any(1, keepdim=True)
        return torch.where(has_own, onehot, -onehot)


def test_protocol_reports_anti_prediction():
    """Forgotten top-1 accuracy 0 is not forgetting when the class is reliably the least likely."""
    y = torch.arange(20) % 4
    r = evaluate_protocol(AntiPredictor(), {"label": y}, y, ks=[1, 3], progress=False)
    for k in ("1", "3"):
        s = r["by_k"][k]
        assert s["retained_acc"]["mean"] == 1.0
        assert s["forgotten_acc"]["mean"] == 0.0
        assert s["forgotten_argmin_acc"]["mean"] == 1.0
    p = evaluate_probes(AntiPredictor(), {"label": y}, y)
    assert p["own"] == {"acc": 1.0, "argmin_acc": 0.0}
    assert p["none"] == p["all_wrong"] == {"acc": 0.0, "argmin_acc": 1.0}
