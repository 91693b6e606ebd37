"""Byte-level access to a run's ``model.safetensors``: list tensors, hash one, drop some.

The forget path works on the file's bytes, not on torch tensors: it needs no backbone, no torch import,
keeps every other tensor bit-identical, and hashes a prompt exactly as it is stored (any dtype).

safetensors layout: 8-byte little-endian header length N, N bytes of JSON header
(``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}``, offsets relative to
the data block), then the data block.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass

from promptforget.utils import strictjson

MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
MAX_HEADER_DEPTH = 4  # {name: {"shape": [..]}}: depth 3
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to one short line (a tensor name read from a file may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_header(first8: bytes, read, file_size: int, where: str) -> tuple[dict, dict | None, int]:
    """A safetensors header, checked: ``{name: {dtype, shape, data_offsets}}`` plus an optional
    ``__metadata__`` of strings, each tensor's byte size matching its dtype and shape. ``read(n)`` returns
    the n header bytes. Returns (tensors, metadata, header length); any problem is one ValueError line."""
    if len(first8) < 8:
        raise ValueError(f"{where}: not a safetensors file (only {len(first8)} bytes)")
    (n,) = struct.unpack("<Q", first8)
    if n > MAX_HEADER_BYTES or n > file_size - 8:
        raise ValueError(f"{where}: header length {n} exceeds the file size {file_size} or the format's limit")
    try:
        header = strictjson.loads(read(n), MAX_HEADER_BYTES, MAX_HEADER_DEPTH)
    except ValueError as e:
        raise ValueError(f"{where}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise ValueError(f"{where}: __metadata__ must map names to strings")
    for name, info in header.items():
        ok = (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}
              and isinstance(info["dtype"], str) and info["dtype"] in DTYPE_BYTES and isinstance(info["shape"], list)
              and all(type(d) is int and d >= 0 for d in info["shape"]) and isinstance(info["data_offsets"], list)
              and len(info["data_offsets"]) == 2 and all(type(o) is int for o in info["data_offsets"]))
        if not ok:
            raise ValueError(f"{where}: tensor {short(name)} needs a known dtype, a shape of sizes and two data_offsets")
        b, e = info["data_offsets"]
        count = 1
        for d in info["shape"]:
            count *= d
        if not 0 <= b <= e or e - b != count * DTYPE_BYTES[info["dtype"]]:
            raise ValueError(f"{where}: tensor {short(name)} has offsets {b}..{e}, which do not fit its dtype and shape")
    return header, meta, n


@dataclass
class Safetensors:
    header: dict  # tensor name -> {dtype, shape, data_offsets}; "__metadata__" kept apart
    metadata: dict | None
    data: memoryview  # the data block

    @classmethod
    def parse(cls, raw: bytes, where: str = "model.safetensors") -> "Safetensors":
        """Parse a whole file: the header (see :func:`parse_header`) and every tensor's offsets inside the data."""
        header, meta, n = parse_header(raw[:8], lambda size: raw[8 : 8 + size], len(raw), where)
        data = memoryview(raw)[8 + n :]
        for name, info in header.items():
            b, e = info["data_offsets"]
            if e > len(data):
                raise ValueError(f"{where}: tensor {short(name)} has offsets {b}..{e} outside the data block")
        return cls(header, meta, data)

    @staticmethod
    def read_names(path) -> list[str]:
        """The tensor names of a file, from its header alone (no data read, never through a symlink): a
        cheap look at which prompts an artefact holds."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(fd).st_size
            header, _, _ = parse_header(f.read(8), f.read, size, str(path))
        return list(header)

    def names(self) -> list[str]:
        return list(self.header)

    def nbytes(self, name: str) -> int:
        b, e = self.header[name]["data_offsets"]
        return e - b

    def tensor_bytes(self, name: str) -> bytes:
        b, e = self.header[name]["data_offsets"]
        return bytes(self.data[b:e])

    def tensor_sha256(self, name: str) -> str:
        return hashlib.sha256(self.tensor_bytes(name)).hexdigest()

    def without(self, names: set[str]) -> bytes:
        """A new file with ``names`` left out; every other tensor's bytes and the metadata unchanged."""
        keep = sorted(n for n in self.header if n not in names)
        header: dict = {}
        if self.metadata is not None:
            header["__metadata__"] = self.metadata
        chunks, off = [], 0
        for n in keep:
            blob = self.tensor_bytes(n)
            info = self.header[n]
            header[n] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [off, off + len(blob)]}
            chunks.append(blob)
            off += len(blob)
        h = json.dumps(header, separators=(",", ":")).encode("utf-8")
        h += b" " * (-len(h) % 8)  # the reference writer pads the header to 8 bytes; keep data aligned
        return struct.pack("<Q", len(h)) + h + b"".join(chunks)
