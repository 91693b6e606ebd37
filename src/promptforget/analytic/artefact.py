"""An analytic run's ``model.safetensors``: everything a forget needs, and nothing of a forgotten example.

    examples.id_sha256   uint8 [N, 32]  SHA-256 of (the run's id salt, the example's id), training order
    examples.label       int64 [N]      index into the config's class names
    examples.features    int32 [N, D]   the example's fixed-point features (analytic.stats)
    stats.gram           int64 [D, D]   sum of q q^T over every example
    classes.<key>.count  int64 [1]      per class with examples: count,
    classes.<key>.sum    int64 [D]      sum of q,
    classes.<key>.weight float64 [D]    and its row of the solved head
    classes.<key>.bias   float64 [1]

Built only by :func:`build` from the rows, so an artefact is a pure function of (config, rows): the train
and the forget paths write the same bytes for the same remaining examples. A forget (:func:`without`)
drops rows and subtracts them from the integer statistics exactly, then solves the head again; a
class with no example left has no tensors at all. Keeping each example's features (4 D bytes each) is
what lets a forget run without the raw data or the backbone.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np

from promptforget.analytic.head import solve
from promptforget.analytic.stats import ExactStats
from promptforget.store.durable import UnknownExampleError
from promptforget.store.layout import CLASS_STATS_PREFIX, class_key

FORMAT = "promptforget-analytic"
FORMAT_VERSION = "1"


def example_id_sha256(salt: str, example_id: str) -> bytes:
    """The row key of an example in the artefact: SHA-256 over the run's salt and the example's id."""
    return hashlib.sha256(b"promptforget-example-id\0" + salt.encode("utf-8") + b"\0" + example_id.encode("utf-8")).digest()


@dataclass
class Rows:
    """The examples an artefact is built from, in training order."""

    id_sha256: np.ndarray  # uint8 [N, 32]
    labels: np.ndarray  # int64 [N]
    features: np.ndarray  # int32 [N, D]

    def keep(self, mask: np.ndarray) -> "Rows":
        return Rows(self.id_sha256[mask], self.labels[mask], self.features[mask])


def build(rows: Rows, class_names: list[str], head: dict, stats: ExactStats | None = None) -> bytes:
    """The artefact's bytes. ``head``: ``{"head", "scale_bits", "shrinkage", "ridge_lambda"}`` and the
    metadata to record. ``stats`` may be passed when already known (a forget subtracts instead of summing)."""
    stats = stats if stats is not None else ExactStats.of_rows(rows.features, rows.labels, len(class_names))
    weight, bias, info = solve(stats, head["head"], head["scale_bits"], head.get("shrinkage"), head.get("ridge_lambda"))
    tensors = {
        "examples.id_sha256": np.ascontiguousarray(rows.id_sha256, dtype=np.uint8),
        "examples.label": np.ascontiguousarray(rows.labels, dtype=np.int64),
        "examples.features": np.ascontiguousarray(rows.features, dtype=np.int32),
        "stats.gram": stats.gram,
    }
    for row, c in enumerate(np.flatnonzero(stats.counts > 0)):
        p = CLASS_STATS_PREFIX + class_key(class_names[c]) + "."
        tensors[p + "count"] = stats.counts[c : c + 1].copy()
        tensors[p + "sum"] = stats.sums[c].copy()
        tensors[p + "weight"] = weight[row].astype(np.float64)
        tensors[p + "bias"] = bias[row : row + 1].astype(np.float64)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "head": info["head"],
            "backbone_sha256": head["backbone_sha256"], "n_examples": str(len(rows.labels)),
            **{k: repr(float(v)) for k, v in info.items() if k != "head"}}
    return serialize(tensors, meta)


_DTYPES = {"int64": "I64", "float64": "F64", "int32": "I32", "uint8": "U8"}


def serialize(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file whose bytes depend on the tensors and metadata alone. (``safetensors.numpy.save``
    orders the metadata as a Rust hash map does, which differs between processes.) Widest dtypes first,
    then by name, so every tensor starts aligned to its item size."""
    order = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header: dict = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}
    blobs, offset = [], 0
    for name in order:
        a = tensors[name]
        blob = memoryview(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))).cast("B")  # no copy yet
        header[name] = {"dtype": _DTYPES[a.dtype.name], "shape": list(a.shape), "data_offsets": [offset, offset + blob.nbytes]}
        blobs.append(blob)
        offset += blob.nbytes
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


@dataclass
class Parsed:
    rows: Rows
    stats: ExactStats
    weight: np.ndarray  # [K, D] for the active classes
    bias: np.ndarray  # [K]
    active: list[int]  # class indices with a head row, in config order
    metadata: dict


_NUMPY = {v: k for k, v in _DTYPES.items()}


def parse(raw: bytes, class_names: list[str]) -> Parsed:
    """The artefact's tensors as read-only views of ``raw`` (no copy: a forget reads them once)."""
    from promptforget.store.artefact import Safetensors

    st = Safetensors.parse(raw)
    meta = st.metadata or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"not an analytic artefact (format {meta.get('format')!r})")
    t = {}
    for name, info in st.header.items():
        b, e = info["data_offsets"]
        if info["dtype"] not in _NUMPY:
            raise ValueError(f"not an analytic artefact: tensor {name!r} has dtype {info['dtype']}")
        dtype = np.dtype(_NUMPY[info["dtype"]]).newbyteorder("<")
        t[name] = np.frombuffer(st.data[b:e], dtype=dtype).reshape(info["shape"])
    rows = Rows(t["examples.id_sha256"], t["examples.label"], t["examples.features"])
    c, d = len(class_names), rows.features.shape[1]
    counts, sums = np.zeros(c, np.int64), np.zeros((c, d), np.int64)
    weight, bias, active = [], [], []
    for i, name in enumerate(class_names):
        p = CLASS_STATS_PREFIX + class_key(name) + "."
        if p + "count" in t:
            counts[i], sums[i] = t[p + "count"][0], t[p + "sum"]
            weight.append(t[p + "weight"])
            bias.append(t[p + "bias"][0])
            active.append(i)
    return Parsed(rows, ExactStats(counts, sums, t["stats.gram"]), np.array(weight), np.array(bias), active, meta)


def without(raw: bytes, class_names: list[str], classes: list[str], id_hashes: list[bytes], head: dict,
            example_ids: list[str] | None = None) -> bytes:
    """The artefact minus every example of ``classes`` and the examples whose row keys are ``id_hashes``
    (``example_ids``: their ids, for the error message): exact subtraction of their rows from the
    statistics, then the head solved again."""
    p = parse(raw, class_names)
    where = {bytes(r): i for i, r in enumerate(p.rows.id_sha256)}
    drop = np.zeros(len(where), dtype=bool)
    for j, h in enumerate(id_hashes):
        if h not in where:
            what = repr(example_ids[j]) if example_ids else "an example id"
            raise UnknownExampleError(f"example {what} is not in the training set (never was, or already forgotten); "
                                      "nothing was changed")
        drop[where[h]] = True
    for c in classes:
        drop |= p.rows.labels == class_names.index(c)
    gone = p.rows.keep(drop)
    stats = p.stats.minus(gone.features, gone.labels)
    return build(p.rows.keep(~drop), class_names, head, stats)
