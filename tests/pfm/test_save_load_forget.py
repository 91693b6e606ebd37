import json

import pytest
import torch
from safetensors.torch import load_file

from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import CONFIG_NAME, WEIGHTS_NAME, PFMModel, forget_run

CLASSES = ["cat", "dog", "emu"]


def run_files(d):
    return {p.name: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def trained_run(tiny_vit_dir, tmp_path):
    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES))
    with torch.no_grad():  # make head and LoRA non-trivial so the round trip tests something
        for n, p in m.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    m.save_pretrained(tmp_path / "run")
    return m, tmp_path / "run"


def test_round_trip_is_exact(trained_run):
    m, run = trained_run
    x = {"pixel_values": torch.randn(2, 3, 16, 16)}
    loaded = PFMModel.from_pretrained(run)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), loaded(x), rtol=0, atol=0)
    rec = json.loads((run / CONFIG_NAME).read_text())
    assert rec["config"]["class_names"] == CLASSES and rec["backbone"]["sha256"] == m.backbone_sha256
    sd = load_file(str(run / WEIGHTS_NAME))
    # the frozen backbone is referenced, not copied: only LoRA, prompts and head are stored
    assert all(k.startswith(("prompts.", "head.")) or "lora_" in k for k in sd)


def test_forget_run_removes_prompt_bytes_everywhere(trained_run):
    m, run = trained_run
    secret = m.prompt_of("dog").numpy().tobytes()
    assert any(secret in b for b in run_files(run).values())
    forget_run(run, ["dog"])
    assert not any(secret in b for b in run_files(run).values())
    assert not list(run.glob(".*.tmp"))
    loaded = PFMModel.from_pretrained(run)
    assert loaded.forgotten_classes == ["dog"] and loaded.active_classes == ["cat", "emu"]


@pytest.mark.parametrize("bad", [["wolf"], ["cat", "wolf"], ["cat", "dog", "emu"]])
def test_bad_forget_leaves_files_byte_identical(trained_run, bad):
    _, run = trained_run
    before = run_files(run)
    with pytest.raises(ValueError):
        forget_run(run, bad)
    assert run_files(run) == before


def test_forgetting_an_already_forgotten_class_is_an_error(trained_run):
    _, run = trained_run
    forget_run(run, ["emu"])
    before = run_files(run)
    with pytest.raises(ValueError, match="already forgotten"):
        forget_run(run, ["emu"])
    assert run_files(run) == before


def test_backbone_mismatch_is_refused(trained_run, tiny_dinov2_dir, tmp_path):
    _, run = trained_run
    from transformers import ViTConfig, ViTModel

    other = tmp_path / "other-vit"
    torch.manual_seed(123)
    ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(other)
    with pytest.raises(ValueError, match="backbone mismatch"):
        PFMModel.from_pretrained(run, backbone=str(other))


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a PFM run directory"):
        PFMModel.from_pretrained(tmp_path)
