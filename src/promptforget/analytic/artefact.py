"""An analytic run's artefact: ``model.safetensors`` (the head and the exact statistics) and one file of
fixed-point features per class under ``examples/``: everything a forget needs, and nothing of a
forgotten example.

    model.safetensors
      examples.id_sha256   uint8 [N, 32]  SHA-256 of (the run's id salt, the example's id), training order
      examples.label       int64 [N]      index into the config's class names
      stats.gram           int64 [D, D]   sum of q q^T over every example
      classes.<key>.count  int64 [1]      per class with examples: count,
      classes.<key>.sum    int64 [D]      sum of q,
      classes.<key>.examples_sha256 uint8 [32]  the SHA-256 of its features file,
      classes.<key>.weight float64 [D]    and its row of the solved head
      classes.<key>.bias   float64 [1]
    examples/<sha256>.safetensors
      features             int32 [n_c, D] the class's fixed-point features (analytic.stats), training order

Built only from the rows (:func:`build`, :func:`head_file`), so an artefact is a pure function of (config,
rows): the train and the forget paths write the same bytes for the same remaining examples. A features
file is named by its own hash and referenced by it, so ``model.safetensors``'s hash commits to every
file, and a forget rewrites only the classes it touches: forgetting one example rewrites its class's
file (N / C rows), not every example's features. A forget (:func:`without`) writes the new class files,
the durable path then replaces ``model.safetensors`` (the commit), and files no longer referenced are
deleted (``store.artefact.remove_unreferenced_files``; after a crash, by the recovery).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from promptforget.analytic.head import solve
from promptforget.analytic.stats import ExactStats
from promptforget.store.artefact import REFERENCE_SUFFIX, REFERENCED_DIR, write_referenced_files
from promptforget.store.durable import UnknownExampleError
from promptforget.store.layout import CLASS_STATS_PREFIX, class_key

FORMAT = "promptforget-analytic"
FORMAT_VERSION = "2"
EXAMPLES_FORMAT = "promptforget-analytic-examples"
EXAMPLES_DIR = REFERENCED_DIR


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


@dataclass
class Built:
    """An artefact's files: ``model`` (the bytes of ``model.safetensors``) and ``shards`` (path relative to
    the run directory -> bytes) for the features files it references that a write may need to create."""

    model: bytes
    shards: dict[str, bytes] = field(default_factory=dict)

    def write(self, run_dir) -> None:
        """The features files, durably, before ``model.safetensors`` refers to them (the caller writes it)."""
        write_referenced_files(run_dir, self.shards)


def shard_bytes(features: np.ndarray, class_name: str) -> bytes:
    """A class's features file (its class in the metadata, so no two classes share a file)."""
    return serialize({"features": np.ascontiguousarray(features, dtype=np.int32)},
                     {"format": EXAMPLES_FORMAT, "class": class_key(class_name)})


def shard_path(digest: bytes | np.ndarray) -> str:
    return f"{EXAMPLES_DIR}/{bytes(digest).hex()}.safetensors"


def build(rows: Rows, class_names: list[str], head: dict) -> Built:
    """The artefact of ``rows``. ``head``: ``{"head", "scale_bits", "shrinkage", "ridge_lambda"}`` and the
    metadata to record."""
    stats = ExactStats.of_rows(rows.features, rows.labels, len(class_names))
    shards = {int(c): shard_bytes(rows.features[rows.labels == c], class_names[c]) for c in np.flatnonzero(stats.counts > 0)}
    digests = {c: hashlib.sha256(b).digest() for c, b in shards.items()}
    model = head_file(rows.id_sha256, rows.labels, stats, digests, class_names, head)
    return Built(model, {shard_path(digests[c]): b for c, b in shards.items()})


def head_file(id_sha256: np.ndarray, labels: np.ndarray, stats: ExactStats, digests: dict[int, bytes],
              class_names: list[str], head: dict) -> bytes:
    """``model.safetensors``'s bytes: the statistics, the head solved from them, and each class's features
    file by hash (``digests``: class index -> SHA-256)."""
    weight, bias, info = solve(stats, head["head"], head["scale_bits"], head.get("shrinkage"), head.get("ridge_lambda"))
    tensors = {
        "examples.id_sha256": np.ascontiguousarray(id_sha256, dtype=np.uint8),
        "examples.label": np.ascontiguousarray(labels, dtype=np.int64),
        "stats.gram": stats.gram,
    }
    for row, c in enumerate(np.flatnonzero(stats.counts > 0)):
        p = CLASS_STATS_PREFIX + class_key(class_names[c]) + "."
        tensors[p + "count"] = stats.counts[c : c + 1].copy()
        tensors[p + "sum"] = stats.sums[c].copy()
        tensors[p + REFERENCE_SUFFIX[1:]] = np.frombuffer(digests[int(c)], dtype=np.uint8)
        tensors[p + "weight"] = weight[row].astype(np.float64)
        tensors[p + "bias"] = bias[row : row + 1].astype(np.float64)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "head": info["head"],
            "backbone_sha256": head["backbone_sha256"], "n_examples": str(len(labels)),
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
    id_sha256: np.ndarray  # uint8 [N, 32]
    labels: np.ndarray  # int64 [N]
    stats: ExactStats
    weight: np.ndarray  # [K, D] for the active classes
    bias: np.ndarray  # [K]
    active: list[int]  # class indices with a head row, in config order
    shards: dict[int, bytes]  # class index -> SHA-256 of its features file
    metadata: dict


_NUMPY = {v: k for k, v in _DTYPES.items()}


def _tensors(raw: bytes, fmt: str, what: str) -> tuple[dict[str, np.ndarray], dict]:
    from promptforget.store.artefact import Safetensors

    st = Safetensors.parse(raw)
    meta = st.metadata or {}
    if meta.get("format") != fmt:
        raise ValueError(f"not {what} (format {meta.get('format')!r})")
    t = {}
    for name, info in st.header.items():
        b, e = info["data_offsets"]
        if info["dtype"] not in _NUMPY:
            raise ValueError(f"not {what}: tensor {name!r} has dtype {info['dtype']}")
        dtype = np.dtype(_NUMPY[info["dtype"]]).newbyteorder("<")
        t[name] = np.frombuffer(st.data[b:e], dtype=dtype).reshape(info["shape"])
    return t, meta


def parse(raw: bytes, class_names: list[str]) -> Parsed:
    """``model.safetensors``'s tensors as read-only views of ``raw`` (no copy: a forget reads them once)."""
    t, meta = _tensors(raw, FORMAT, "an analytic artefact")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"analytic artefact format_version {meta.get('format_version')!r} is not {FORMAT_VERSION!r}: "
                         "train the run again with this version")
    c, d = len(class_names), t["stats.gram"].shape[0]
    counts, sums = np.zeros(c, np.int64), np.zeros((c, d), np.int64)
    weight, bias, active, shards = [], [], [], {}
    for i, name in enumerate(class_names):
        p = CLASS_STATS_PREFIX + class_key(name) + "."
        if p + "count" in t:
            counts[i], sums[i] = t[p + "count"][0], t[p + "sum"]
            weight.append(t[p + "weight"])
            bias.append(t[p + "bias"][0])
            active.append(i)
            shards[i] = bytes(t[p + REFERENCE_SUFFIX[1:]])
    return Parsed(t["examples.id_sha256"], t["examples.label"], ExactStats(counts, sums, t["stats.gram"]),
                  np.array(weight), np.array(bias), active, shards, meta)


def class_features(read, parsed: Parsed, c: int, check_count: bool = True) -> np.ndarray:
    """The fixed-point features of class ``c``'s examples, training order, from its file as ``read(path)``
    returns it (a run directory's or a :class:`Built`'s); checked against the hash the model holds and
    (``check_count``) against the class's count in the statistics."""
    name = shard_path(parsed.shards[c])
    try:
        raw = read(name)
    except (OSError, KeyError):
        raise ValueError(f"the features file of class index {c} ({name}) is missing: the run is incomplete") from None
    if hashlib.sha256(raw).digest() != parsed.shards[c]:
        raise ValueError(f"{name} does not match the hash model.safetensors holds for it (changed on disk?)")
    q = _tensors(raw, EXAMPLES_FORMAT, "an analytic features file")[0]["features"]
    if q.shape[1:] != parsed.stats.gram.shape[:1] or (check_count and q.shape[0] != int(parsed.stats.counts[c])):
        raise ValueError(f"{name} holds {q.shape[0]} rows; the statistics count {int(parsed.stats.counts[c])}")
    return q


def run_reader(run_dir):
    """``read(path)`` for :func:`class_features` over a run directory (never through a symlink)."""
    from promptforget.utils.io import read_regular_file

    return lambda name: read_regular_file(Path(run_dir) / name)


def all_features(read, parsed: Parsed) -> np.ndarray:
    """Every example's features, in the model's row order."""
    out = np.zeros((len(parsed.labels), parsed.stats.gram.shape[0]), dtype=np.int32)
    for c in parsed.active:
        out[parsed.labels == c] = class_features(read, parsed, c)
    return out


def stored_rows(read, parsed: Parsed) -> np.ndarray:
    """Every row the features files hold, class by class, whether or not the statistics agree with them
    (what an auditor looks through for a forgotten example, in a run that may be broken)."""
    return np.concatenate([class_features(read, parsed, c, check_count=False) for c in parsed.active])


def without(run_dir, raw: bytes, class_names: list[str], classes: list[str], id_hashes: list[bytes], head: dict,
            example_ids: list[str] | None = None) -> Built:
    """The artefact minus every example of ``classes`` and the examples whose row keys are ``id_hashes``
    (``example_ids``: their ids, for the error message): exact subtraction of their rows from the
    statistics, then the head solved again. Reads the features files of the touched classes only."""
    p = parse(raw, class_names)
    where = {bytes(r): i for i, r in enumerate(p.id_sha256)} if id_hashes else {}
    drop = np.zeros(len(p.labels), dtype=bool)
    for j, h in enumerate(id_hashes):
        if h not in where:
            what = repr(example_ids[j]) if example_ids else "an example id"
            raise UnknownExampleError(f"example {what} is not in the training set (never was, or already forgotten); "
                                      "nothing was changed")
        drop[where[h]] = True
    gone_classes = {class_names.index(c) for c in classes}
    for c in gone_classes:
        drop |= p.labels == c
    read = run_reader(run_dir)
    gone_q, gone_y, digests, shards = [], [], dict(p.shards), {}
    for c in sorted(set(p.labels[drop].tolist())):
        q = class_features(read, p, c)
        in_class = drop[p.labels == c]
        gone_q.append(q[in_class])
        gone_y.append(np.full(int(in_class.sum()), c, dtype=np.int64))
        del digests[c]
        if not in_class.all():
            data = shard_bytes(q[~in_class], class_names[c])
            digests[c] = hashlib.sha256(data).digest()
            shards[shard_path(digests[c])] = data
    stats = p.stats.minus(np.concatenate(gone_q), np.concatenate(gone_y)) if gone_q else p.stats
    return Built(head_file(p.id_sha256[~drop], p.labels[~drop], stats, digests, class_names, head), shards)
