"""GA, RL, GA+KL, GA+GD on a tiny random Llama: objectives, KL reference without a model copy, unload."""

import math

import pytest
import torch

from promptforget.baselines import METHODS, BaselineConfig
from promptforget.baselines.model import Baseline
from promptforget.spul import ops
from promptforget.spul.tasks import SentimentTask, collate, encode_examples
from promptforget.spul.testing import tiny_llama, tiny_tokenizer

EXS = [
    {"id": f"x{i}", "text": t, "label": y}
    for i, (t, y) in enumerate(
        [("good film", "positive"), ("great movie", "positive"), ("bad film", "negative"),
         ("awful movie", "negative"), ("fine plot", "positive"), ("dull plot", "negative")]
    )
]


@pytest.fixture()
def tiny():
    tok = tiny_tokenizer(["good great fine bad awful dull film movie plot"])
    return tiny_llama(len(tok)), tok


def _ce(model, tok, exs, words=None):
    b = collate(encode_examples(tok, SentimentTask(), exs, 40, label_words=words), tok.pad_token_id)
    with torch.no_grad():
        return ops.label_ce(ops.label_logits(model, b), b["label_ids"]).item()


def _cfg(method, **kw):
    base = dict(method=method, lr=5e-2, epochs=5, batch_size=2, max_length=40, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    base.update(kw)
    return BaselineConfig(**base)


def test_ga_raises_forget_loss(tiny):
    model, tok = tiny
    forget = EXS[:2]
    before = _ce(model, tok, forget)
    bl = Baseline(model, tok, SentimentTask(), _cfg("ga"))
    hist = bl.forget(forget, EXS[2:])
    assert all(s["loss"] == pytest.approx(-s["l_forget"]) for s in hist["steps"])  # pure ascent
    assert [s["lr"] for s in hist["steps"]] == pytest.approx([5e-2 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(1, 6)])
    assert _ce(bl.peft_model, tok, forget) > before + 0.5


def test_rl_moves_towards_generic_labels(tiny):
    model, tok = tiny
    forget = EXS[:2]
    bl = Baseline(model, tok, SentimentTask(), _cfg("rl", seed=2))
    out = bl.forget(forget, EXS[2:])
    assert out["generic_labels"] == ops.draw_generic_labels(2, ["neutral", "unknown"], 2)
    with bl.peft_model.disable_adapter():
        before = _ce(bl.peft_model, tok, forget, out["generic_labels"])
    assert _ce(bl.peft_model, tok, forget, out["generic_labels"]) < before - 0.5


def test_ga_kl_reference_is_stage1_without_copy(tiny):
    model, tok = tiny
    forget, retain = EXS[:2], EXS[2:]
    bl = Baseline(model, tok, SentimentTask(), _cfg("ga_kl", epochs=1, batch_size=8, retain_weight=2.0))
    assert bl.peft_model.get_base_model() is model
    hist = bl.forget(forget, retain)["steps"]
    # First step: the LoRA B matrices start at zero, so the adapted model equals stage 1 and KL = 0.
    assert hist[0]["l_retain"] == pytest.approx(0.0, abs=1e-6)
    assert hist[0]["loss"] == pytest.approx(-hist[0]["l_forget"], abs=1e-6)


def test_ga_gd_adds_retain_ce(tiny):
    model, tok = tiny
    forget, retain = EXS[:2], EXS[2:]
    r_ce = _ce(model, tok, retain)
    bl = Baseline(model, tok, SentimentTask(), _cfg("ga_gd", epochs=1, batch_size=8, retain_weight=0.5))
    s0 = bl.forget(forget, retain)["steps"][0]
    assert s0["l_retain"] == pytest.approx(r_ce, rel=1e-4)
    assert s0["loss"] == pytest.approx(-s0["l_forget"] + 0.5 * r_ce, rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_unload_restores_stage1_and_adapter_saves(tiny, tmp_path, method):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bl = Baseline(model, tok, SentimentTask(), _cfg(method, epochs=1))
    bl.forget(EXS[:2], EXS[2:])
    bl.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    restored = bl.unload()
    assert restored is model
    after = restored.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_config_and_input_validation(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="unknown baseline"):
        BaselineConfig(method="npo")
    with pytest.raises(ValueError, match="lr"):
        BaselineConfig(lr=0)
    bl = Baseline(model, tok, SentimentTask(), _cfg("ga_gd"))
    with pytest.raises(ValueError, match="needs retain"):
        bl.forget(EXS[:2], [])
    with pytest.raises(ValueError, match="forget set is empty"):
        bl.forget([], EXS)
