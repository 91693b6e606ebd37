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


def test_shared_passes_run_each_prompt_set_once_and_match_direct_passes(model_and_data, monkeypatch):
    import promptforget.pfm.evaluate as ev

    m, x, y = model_and_data
    runs = []
    direct = ev.batched_logits
    monkeypatch.setattr(ev, "batched_logits", lambda *a, **k: runs.append(1) or direct(*a, **k))
    passes = ev.SharedPasses(m, x)
    evaluate_state(m, x, y, passes=passes)
    evaluate_protocol(m, x, y, progress=False, passes=passes)
    assert len(runs) == 1 + 4 + 6 + 4  # full bank, then every k = 1, 2, 3 combination
    probes = evaluate_probes(m, x, y, passes=passes)
    assert len(runs) == 16  # only `none` is new: full, k=1 (all_wrong) and k=3 (one prompt) are shared
    ones = lambda ids: torch.ones_like(ids, dtype=torch.bool)  # noqa: E731
    bank = torch.arange(4).expand(24, -1)
    own = y.unsqueeze(1)
    expected = {"full": direct(m, x, bank, ones(bank)), "own": direct(m, x, own, ones(own)),
                "all_wrong": direct(m, x, bank, bank != own), "none": direct(m, x, bank[:, :0], ones(bank[:, :0]))}
    for probe, logits in expected.items():
        assert probes[probe]["acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
        assert probes[probe]["argmin_acc"] == pytest.approx(float((logits.argmin(1) == y).float().mean()))
    for j, name in enumerate(m.class_names):
        single = direct(m, x, torch.full((24, 1), j), torch.ones(24, 1, dtype=torch.bool))
        assert probes["best_single"]["per_prompt"][name] == pytest.approx(float((single.argmax(1) == y).float().mean()))
    # the same report without sharing: every probe on its own passes
    assert evaluate_probes(m, x, y) == probes


class ForgottenAntiPredictor(AntiPredictor):
    """The anti-predictor after really forgetting "d": its prompt is gone, its samples rank it last."""

    active_classes = ["a", "b", "c"]
    forgotten_classes = ["d"]

    class config:
        objective = "pfm"


def test_state_of_a_really_forgotten_run_reports_argmin_and_the_worst_class():
    from promptforget.pfm.cli import format_report
    from promptforget.pfm.evaluate import evaluate_state

    y = torch.arange(20) % 4
    s = evaluate_state(ForgottenAntiPredictor(), {"label": y}, y)
    assert s["no_mask"]["forgotten_acc"] == 0.0
    assert s["no_mask"]["forgotten_argmin_acc"] == 1.0  # recognised, not forgotten
    assert s["worst_forgotten_class"]["argmin_acc"]["class"] == "d"
    assert s["worst_forgotten_class"]["argmin_acc"]["value"] == 1.0
    assert "forgotten_argmin_acc" not in s["head_masked"]  # last by construction there: not reported
    text = format_report({"state": s})
    assert "0 by design" in text and "most often last): d 1.000" in text
