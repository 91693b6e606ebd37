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
import struct
from dataclasses import dataclass


@dataclass
class Safetensors:
    header: dict  # tensor name -> {dtype, shape, data_offsets}; "__metadata__" kept apart
    metadata: dict | None
    data: memoryview  # the data block

    @classmethod
    def parse(cls, raw: bytes, where: str = "model.safetensors") -> "Safetensors":
        if len(raw) < 8:
            raise ValueError(f"{where}: not a safetensors file (only {len(raw)} bytes)")
        (n,) = struct.unpack("<Q", raw[:8])
        if n > len(raw) - 8:
            raise ValueError(f"{where}: header length {n} exceeds the file size {len(raw)}")
        try:
            header = json.loads(raw[8 : 8 + n].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where}: unreadable safetensors header ({e})") from None
        meta = header.pop("__metadata__", None)
        data = memoryview(raw)[8 + n :]
        for name, info in header.items():
            try:
                b, e = info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{where}: tensor {name!r} has no valid data_offsets") from None
            if not 0 <= b <= e <= len(data):
                raise ValueError(f"{where}: tensor {name!r} has offsets {b}..{e} outside the data block")
        return cls(header, meta, data)

    @staticmethod
    def read_names(path) -> list[str]:
        """The tensor names of a file, from its header alone (no data read): a cheap look at which
        prompts an artefact holds."""
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: not a safetensors file (only {len(head)} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise ValueError(f"{path}: implausible header length {n}")
            try:
                header = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: unreadable safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{path}: safetensors header is not an object")
        return [k for k in header if k != "__metadata__"]

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
