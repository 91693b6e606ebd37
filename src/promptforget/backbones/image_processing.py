"""Image preprocessing for ViT-style backbones: uint8 images -> normalised ``[N, 3, S, S]`` floats.

:class:`ImagePreprocessor` repeats grey to 3 channels, resizes (torch ``interpolate``) and normalises with
the backbone's mean/std. Any ``S`` that is a multiple of the patch size works with DINOv2: transformers
5.x interpolates the position embeddings (bicubic) for sizes other than the pretraining one.

The settings come from the backbone's own ``AutoImageProcessor`` config; the transform is ours, not that
processor's: on MNIST-5k it gives the same numbers where no resize happens (28 px: max |diff| 0), but its
resize (PIL bicubic, a=-0.5, rounded back to uint8 before normalising; its torchvision backend does not
install beside the pinned torch) differs from ``torch.nn.functional.interpolate`` by up to 0.51 (mean 0.019)
after normalisation at 28 -> 224 px. ``tests/backbones/test_image_processing.py`` pins both facts.

:class:`HFImagePreprocessor` (``PFMConfig.image_processor="hf"``) runs that processor itself, sized to
the run's ``image_size``, for runs that must match what a user of the exported model feeds it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ImageNet statistics, which DINOv2 and most ViTs normalise with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bicubic", 4: "bilinear", 5: "bicubic"}  # PIL codes


@dataclass
class ImagePreprocessor:
    """uint8 images -> normalised float tensor ``[N, 3, S, S]``.

    Grey images are repeated to 3 channels, then resized to ``image_size`` with torch ``interpolate``
    (``resample``: bilinear, bicubic, nearest or area; antialiased when shrinking) and normalised with
    ``mean``/``std``. Non-square images are resized on their short side and centre-cropped. With
    ``crop_pct < 1`` the short side goes to ``image_size / crop_pct`` first, like DINOv2's 256 -> 224
    evaluation crop; the default 1.0 keeps the whole image, which suits small centred benchmark images
    (cropping 12.5% of a 28-px digit cuts strokes).
    """

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: str = "bicubic"
    crop_pct: float = 1.0
    patch_size: int | None = None  # when set, image_size must be a multiple of it

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if self.patch_size is not None and self.image_size % self.patch_size:
            lo = max(self.patch_size, self.image_size // self.patch_size * self.patch_size)
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of the patch size {self.patch_size} "
                f"(try {lo} or {lo + self.patch_size})"
            )
        if self.resample not in ("bilinear", "bicubic", "nearest", "area"):
            raise ValueError(f"resample must be bilinear, bicubic, nearest or area, got {self.resample!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")

    @classmethod
    def for_backbone(cls, name_or_path: str | os.PathLike, image_size: int | None = None, **overrides) -> "ImagePreprocessor":
        """Settings from a model directory's ``preprocessor_config.json`` / ``config.json`` (or a hub name,
        when it is cached or online). ``image_size=None`` keeps the backbone's own crop size."""
        proc, cfg = _read_backbone_configs(name_or_path)
        mean = tuple(proc.get("image_mean", IMAGENET_MEAN))
        std = tuple(proc.get("image_std", IMAGENET_STD))
        resample = _RESAMPLE.get(proc.get("resample", 3), "bicubic")
        if image_size is None:
            crop = proc.get("crop_size") or proc.get("size") or {}
            image_size = int(crop.get("height") or crop.get("shortest_edge") or cfg.get("image_size") or 224)
        patch = cfg.get("patch_size")
        kw = dict(image_size=int(image_size), mean=mean, std=std, resample=resample,
                  patch_size=int(patch) if isinstance(patch, int) else None)
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "resample": self.resample, "crop_pct": self.crop_pct, "patch_size": self.patch_size}

    def __call__(self, images) -> "torch.Tensor":  # noqa: F821
        import torch

        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("no images given")
            return torch.cat([self(_as_batch(np.asarray(im))) for im in images])
        x = _to_nchw_float(images)
        return self._transform(x)

    def _transform(self, x):
        import torch
        from torch.nn import functional as F

        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        s = self.image_size
        short = round(s / self.crop_pct)
        if (h, w) != (s, s) or self.crop_pct < 1.0:
            scale = short / min(h, w)
            size = (max(s, round(h * scale)), max(s, round(w * scale)))
            if (h, w) != size:
                kw = {"align_corners": False} if self.resample in ("bilinear", "bicubic") else {}
                if self.resample in ("bilinear", "bicubic") and (size[0] < h or size[1] < w):
                    kw["antialias"] = True  # shrinking without it aliases badly
                x = F.interpolate(x, size=size, mode=self.resample, **kw)
                if self.resample == "bicubic":
                    x = x.clamp_(0.0, 1.0)  # bicubic overshoots; keep pixels in range like PIL does
            top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
            x = x[..., top : top + s, left : left + s]
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


class HFImagePreprocessor:
    """The backbone's own ``AutoImageProcessor``, sized to ``image_size``: uint8 images -> ``[N, 3, S, S]``.

    Its resize target is ``image_size`` (the short side, where the processor resizes by short side) and
    its crop size too, so a square image is resized whole: DINOv2's 256 -> 224 evaluation crop would cut
    strokes off small centred digits; only a non-square image loses its long side's margins, as in
    :class:`ImagePreprocessor`. Images reach it as uint8 RGB (grey is repeated to 3 channels; floats in
    [0, 1] are rounded to uint8, which its PIL resize needs anyway).
    """

    def __init__(self, processor, image_size: int):
        self.processor = processor
        self.image_size = image_size

    @classmethod
    def for_backbone(cls, name_or_path: str | os.PathLike, image_size: int | None = None) -> HFImagePreprocessor:
        """The processor of a model directory (or hub name); ``image_size=None``: the backbone's crop size."""
        # Same checks and default size as the torch path (a patch-size multiple, a readable model dir).
        image_size = ImagePreprocessor.for_backbone(name_or_path, image_size=image_size).image_size
        path = Path(str(name_or_path)).expanduser()
        if path.is_dir() and not (path / "preprocessor_config.json").is_file():
            raise ValueError(f"{path} has no preprocessor_config.json, so no image processor of its own; "
                             "use image_processor='torch'")
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(str(name_or_path))
            sized = {"size": {"shortest_edge": image_size} if processor.size.get("shortest_edge")
                     else {"height": image_size, "width": image_size}}
            if getattr(processor, "crop_size", None) is not None:
                sized["crop_size"] = {"height": image_size, "width": image_size}
            processor = AutoImageProcessor.from_pretrained(str(name_or_path), **sized)
        except Exception as e:  # any loading failure is bad input here
            raise ValueError(f"cannot load the image processor of backbone {str(name_or_path)!r} "
                             f"({type(e).__name__}: {e})") from e
        return cls(processor, image_size)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Write the sized ``preprocessor_config.json``: ``AutoImageProcessor`` loads this exact transform."""
        self.processor.save_pretrained(str(out_dir))

    def __call__(self, images) -> "torch.Tensor":  # noqa: F821
        import torch

        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("no images given")
            return torch.cat([self(_as_batch(np.asarray(im))) for im in images])
        x = _to_nchw_float(images)  # validates shape, dtype and range
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        rgb = rgb.mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = self.processor(list(rgb), return_tensors="pt")["pixel_values"]
        if out.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"the backbone's image processor gave {tuple(out.shape[-2:])} images, "
                             f"not {self.image_size}x{self.image_size}")
        return out.float().contiguous()


def _as_batch(im: np.ndarray) -> np.ndarray:
    if im.ndim == 2 or (im.ndim == 3 and im.shape[-1] in (1, 3)):
        return im[None]
    raise ValueError(f"each image in a list must be [H,W] or [H,W,3], got {im.shape}")


def _to_nchw_float(images):
    """uint8 [N,H,W] / [N,H,W,1|3] (or float in [0,1]) -> float32 tensor [N,C,H,W] in [0,1]."""
    import torch

    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if hasattr(images, "convert") and hasattr(images, "size"):  # a single PIL image
        images = np.asarray(images.convert("RGB"))[None]
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N,H,W] (grey) or [N,H,W,3] (RGB), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("no images given")
    if not x.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        x = x.copy()
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    elif np.issubdtype(x.dtype, np.floating):
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(f"float images must be in [0, 1], got range [{x.min():.3g}, {x.max():.3g}]; pass uint8 0..255 instead")
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        raise ValueError(f"images must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    return t.permute(0, 3, 1, 2)


def _read_backbone_configs(name_or_path) -> tuple[dict, dict]:
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        proc = path / "preprocessor_config.json"
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ValueError(f"{path} has no config.json; is it a model directory?")
        return (json.loads(proc.read_text()) if proc.is_file() else {}), json.loads(cfg.read_text())
    if path.is_absolute() or str(name_or_path).startswith((".", "~")) or path.exists():
        # a filesystem path, not a hub name: don't wait on the network to say it is missing
        raise ValueError(f"cannot read the image settings of backbone {str(name_or_path)!r}: no such model directory")
    try:
        from transformers import AutoConfig, AutoImageProcessor

        cfg = AutoConfig.from_pretrained(str(name_or_path)).to_dict()
        try:
            proc = AutoImageProcessor.from_pretrained(str(name_or_path)).to_dict()
        except Exception:  # noqa: BLE001 - a model without a processor config: ImageNet defaults
            proc = {}
    except Exception as e:
        raise ValueError(
            f"cannot read the image settings of backbone {str(name_or_path)!r}: not a local model directory and "
            f"not loadable from the hub/cache ({type(e).__name__}: {e})"
        ) from e
    return proc, cfg
