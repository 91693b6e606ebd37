"""Image preprocessing for ViT backbones: channels, resize, crop, normalisation, settings from a model dir."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from promptforget.backbones.image_processing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    HFImagePreprocessor,
    ImagePreprocessor,
)
from promptforget.data.images import load_digits


def test_grey_to_three_channels_resize_and_normalise():
    x = np.zeros((2, 28, 28), np.uint8)
    x[0, 10:18, 10:18] = 255
    out = ImagePreprocessor(image_size=56)(x)
    assert out.shape == (2, 3, 56, 56) and out.dtype == torch.float32
    # identical grey content in every channel before normalising
    raw = out * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-6) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-6)
    assert torch.allclose(raw[1], torch.zeros(3, 56, 56), atol=1e-6)  # black stays black
    assert raw[0, 0, 28, 28] > 0.99 and raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6


def test_normalisation_uses_mean_and_std():
    mean, std = (0.5, 0.25, 0.75), (0.5, 0.25, 0.125)
    x = np.full((1, 14, 14, 3), 255, np.uint8)
    out = ImagePreprocessor(image_size=14, mean=mean, std=std)(x)
    for c in range(3):
        assert torch.allclose(out[0, c], torch.full((14, 14), (1 - mean[c]) / std[c]))


def test_nearest_resize_is_pixel_repetition():
    x = np.array([[[0, 255], [255, 0]]], np.uint8)
    out = ImagePreprocessor(image_size=4, mean=(0, 0, 0), std=(1, 1, 1), resample="nearest")(x)
    want = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
    assert torch.equal(out[0, 0], want)


def test_bilinear_and_bicubic_differ_and_stay_in_range():
    x = (np.random.default_rng(0).integers(0, 2, size=(3, 8, 8)) * 255).astype(np.uint8)
    a = ImagePreprocessor(28, (0, 0, 0), (1, 1, 1), resample="bilinear")(x)
    b = ImagePreprocessor(28, (0, 0, 0), (1, 1, 1), resample="bicubic")(x)
    assert not torch.allclose(a, b) and b.min() >= 0 and b.max() <= 1


def test_non_square_rgb_is_resized_on_short_side_and_centre_cropped():
    x = np.zeros((1, 20, 40, 3), np.uint8)
    x[:, :, 10:30] = 255  # the centre half is white
    out = ImagePreprocessor(10, (0, 0, 0), (1, 1, 1), resample="nearest")(x)
    assert out.shape == (1, 3, 10, 10) and torch.all(out == 1)  # the crop keeps only the centre


def test_crop_pct_mimics_resize_then_centre_crop():
    x = np.zeros((1, 16, 16), np.uint8)
    x[:, 0, :] = 255  # a white top row is cut off by a 0.5 crop
    full = ImagePreprocessor(16, (0, 0, 0), (1, 1, 1), resample="nearest")(x)
    crop = ImagePreprocessor(16, (0, 0, 0), (1, 1, 1), resample="nearest", crop_pct=0.5)(x)
    assert full[0, 0, 0].max() == 1 and crop.max() == 0 and crop.shape == (1, 3, 16, 16)


def test_lists_pil_and_floats():
    from PIL import Image

    p = ImagePreprocessor(14)
    mixed = [np.zeros((28, 28), np.uint8), np.zeros((10, 10, 3), np.uint8), Image.new("L", (7, 7))]
    assert p(mixed).shape == (3, 3, 14, 14)
    f = np.random.default_rng(0).random((2, 14, 14)).astype(np.float32)
    assert torch.allclose(p(f), p((f * 255).round().astype(np.uint8)), atol=0.02)


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda: ImagePreprocessor(30, patch_size=14), "multiple of the patch size 14 \\(try 28 or 42\\)"),
        (lambda: ImagePreprocessor(0), "positive"),
        (lambda: ImagePreprocessor(28, resample="lanczos"), "resample"),
        (lambda: ImagePreprocessor(28, std=(1, 0, 1)), "std"),
        (lambda: ImagePreprocessor(28)(np.zeros((2, 4, 4, 4), np.uint8)), r"\[N,H,W\]"),
        (lambda: ImagePreprocessor(28)(np.full((1, 4, 4), 2.0)), r"\[0, 1\]"),
        (lambda: ImagePreprocessor(28)(np.zeros((1, 4, 4), np.int32)), "uint8"),
    ],
)
def test_preprocessor_validates(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def _tiny_dinov2_dir(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, image_size=224, patch_size=14)
    torch.manual_seed(0)
    Dinov2Model(cfg).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BitImageProcessor", "crop_size": {"height": 224, "width": 224},
        "size": {"shortest_edge": 256}, "resample": 2, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6],
    }))
    return tmp_path


def test_for_backbone_reads_the_model_directory(tmp_path):
    d = _tiny_dinov2_dir(tmp_path)
    p = ImagePreprocessor.for_backbone(d)
    assert (p.image_size, p.patch_size, p.resample) == (224, 14, "bilinear")
    assert p.mean == (0.1, 0.2, 0.3) and p.std == (0.4, 0.5, 0.6)
    assert ImagePreprocessor.for_backbone(str(d), image_size=42).image_size == 42
    with pytest.raises(ValueError, match="patch size"):
        ImagePreprocessor.for_backbone(d, image_size=50)
    with pytest.raises(ValueError, match="cannot read the image settings"):
        ImagePreprocessor.for_backbone(tmp_path / "missing-model")


@pytest.mark.parametrize("size", [28, 42, 56])
def test_mnist_through_dinov2_at_small_resolutions(tmp_path, size):
    """Positions are interpolated by transformers: a 224-px model runs on 28..56 px MNIST."""
    from transformers import Dinov2Model

    d = _tiny_dinov2_dir(tmp_path)
    model = Dinov2Model.from_pretrained(d).eval()
    pixels = ImagePreprocessor.for_backbone(d, image_size=size)(load_digits().images[:4])
    with torch.no_grad():
        h = model(pixel_values=pixels).last_hidden_state
    assert h.shape == (4, 1 + (size // 14) ** 2, 32) and torch.isfinite(h).all()


# --------------------------------------------------------------------------- parity with AutoImageProcessor
# DINOv2-S/14's preprocessor_config.json, as resolve_backbone("dinov2-s14") writes it.
DINOV2_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 256},
}
# Today's numbers: 64 MNIST-5k digits through ImagePreprocessor.for_backbone(dinov2-s14, image_size=S), in float64:
# (sum, sum of |x|, sum of x^2, pixel [5, 1, S//2, S//3]).
MNIST_64_NUMBERS = {
    28: (-181563.67390825553, 289116.74059577053, 582019.8198581934, 1.0805323123931885),
    224: (-11570812.795775216, 18147606.02404107, 36161770.25015147, 1.874565839767456),
}


def _dinov2_settings_dir(tmp_path):
    from transformers import Dinov2Config

    Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR))
    return tmp_path


@pytest.mark.parametrize("size", [28, 224])
def test_mnist_5k_numbers_and_parity_with_the_backbone_processor(tmp_path, size):
    """Ours equals the backbone's AutoImageProcessor where no resize happens; resizing 28 -> 224 px, PIL's
    bicubic (a=-0.5, rounded to uint8) differs from torch's by < 0.6 (mean < 0.025), which is why the
    transform stays ours. Grey MNIST goes through ours as is; the processor needs it as RGB."""
    from transformers import AutoImageProcessor

    from promptforget.data.images import load_mnist_5k

    d = _dinov2_settings_dir(tmp_path)
    digits = load_mnist_5k().images[:64]
    ours = ImagePreprocessor.for_backbone(d, image_size=size)(digits)
    assert ours.shape == (64, 3, size, size)
    x = ours.double()
    got = (x.sum().item(), x.abs().sum().item(), (x**2).sum().item(), x[5, 1, size // 2, size // 3].item())
    assert got == pytest.approx(MNIST_64_NUMBERS[size], rel=1e-6)

    processor = AutoImageProcessor.from_pretrained(d, backend="pil")
    theirs = processor(list(np.repeat(digits[..., None], 3, axis=-1)), size={"height": size, "width": size},
                       do_center_crop=False, return_tensors="pt")["pixel_values"]
    diff = (theirs - ours).abs()
    if size == 28:
        assert diff.max().item() < 1e-6
    else:
        assert diff.max().item() < 0.6 and diff.mean().item() < 0.025


# --------------------------------------------------------------------------- image_processor="hf"
def test_hf_preprocessor_is_the_backbone_processor_sized_to_image_size(tmp_path):
    from transformers import AutoImageProcessor

    d = _tiny_dinov2_dir(tmp_path / "model")  # processor: resize short side to 256, crop 224, bilinear
    hf = HFImagePreprocessor.for_backbone(d, image_size=42)
    assert hf.processor.size.shortest_edge == 42 and (hf.processor.crop_size.height, hf.processor.crop_size.width) == (42, 42)
    grey = load_digits().images[:3]
    out = hf(grey)
    assert out.shape == (3, 3, 42, 42) and out.dtype == torch.float32
    # grey goes in as RGB; floats in [0, 1] as the uint8 they round to; lists image by image
    assert torch.equal(out, hf(np.repeat(grey[..., None], 3, axis=-1)))
    assert torch.equal(out, hf(grey.astype(np.float32) / 255))
    assert torch.equal(out, hf(list(grey)))
    # the processor's own normalisation (mean 0.1, std 0.4 on channel 0): black is (0 - 0.1) / 0.4
    assert out[:, 0].min().item() == pytest.approx(-0.25)
    # a non-square image: short side to 42, the long side's margins cropped, as the torch path does
    wide = np.zeros((1, 20, 40, 3), np.uint8)
    wide[:, :, 10:30] = 255
    assert hf(wide).shape == (1, 3, 42, 42) and hf(wide)[0, 0].min().item() > 0
    # the saved config loads as the same transform with plain transformers
    hf.save_pretrained(tmp_path / "export")
    reloaded = AutoImageProcessor.from_pretrained(tmp_path / "export")
    assert torch.equal(reloaded(list(np.repeat(grey[..., None], 3, axis=-1)), return_tensors="pt")["pixel_values"], out)


def test_hf_preprocessor_height_width_processor(tmp_path):
    from transformers import ViTConfig

    ViTConfig(image_size=16, patch_size=8).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 224}, "resample": 2,
        "do_resize": True, "do_rescale": True, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }))
    assert HFImagePreprocessor.for_backbone(tmp_path).image_size == 224  # by default, the processor's own size
    hf = HFImagePreprocessor.for_backbone(tmp_path, image_size=16)
    assert hf.image_size == 16 and (hf.processor.size.height, hf.processor.size.width) == (16, 16)
    out = hf(np.full((2, 16, 16), 255, np.uint8))
    assert out.shape == (2, 3, 16, 16) and torch.allclose(out, torch.ones_like(out))


def test_hf_preprocessor_bad_input(tmp_path):
    d = _tiny_dinov2_dir(tmp_path / "model")
    with pytest.raises(ValueError, match="patch size"):
        HFImagePreprocessor.for_backbone(d, image_size=50)
    with pytest.raises(ValueError, match="cannot read the image settings"):
        HFImagePreprocessor.for_backbone(tmp_path / "missing-model")
    with pytest.raises(ValueError, match=r"\[N,H,W\]"):
        HFImagePreprocessor.for_backbone(d, image_size=28)(np.zeros((2, 4, 4, 4), np.uint8))
    (d / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="no preprocessor_config.json.*image_processor='torch'"):
        HFImagePreprocessor.for_backbone(d, image_size=28)


# Measured on 64 MNIST-5k digits through the real DINOv2-S/14 processor: max |hf - torch|, mean |hf - torch|.
HF_VS_TORCH_AT_224 = (0.50696, 0.018854)


@pytest.mark.integration
@pytest.mark.parametrize("size", [28, 224])
def test_hf_and_torch_preprocessors_on_mnist_5k_with_dinov2(size):
    """image_processor="hf" equals "torch" at 28 px; at 28 -> 224 px only the resize differs (PIL vs torch
    bicubic), by the measured amount; "hf" is exactly the backbone's AutoImageProcessor."""
    from transformers import AutoImageProcessor

    from promptforget.backbones.encoder import resolve_backbone
    from promptforget.data.images import load_mnist_5k

    d = resolve_backbone("dinov2-s14")
    digits = load_mnist_5k().images[:64]
    hf = HFImagePreprocessor.for_backbone(d, image_size=size)(digits)
    ours = ImagePreprocessor.for_backbone(d, image_size=size)(digits)
    assert hf.shape == ours.shape == (64, 3, size, size)
    diff = (hf - ours).abs()
    if size == 28:
        assert diff.max().item() < 1e-6
    else:
        assert (diff.max().item(), diff.mean().item()) == pytest.approx(HF_VS_TORCH_AT_224, abs=1e-4)
    processor = AutoImageProcessor.from_pretrained(d)
    theirs = processor(list(np.repeat(digits[..., None], 3, axis=-1)), size={"height": size, "width": size},
                       do_center_crop=False, return_tensors="pt")["pixel_values"]
    assert torch.equal(hf, theirs)
