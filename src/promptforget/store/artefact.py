"""Byte-level access to a run's ``model.safetensors``: list tensors, hash one, drop some.

The forget path works on the file's bytes, not on torch tensors: it needs no backbone, no torch import,
keeps every other tensor bit-identical, and hashes a prompt exactly as it is stored (any dtype).

safetensors layout: 8-byte little-endian header length N, N bytes of JSON header
(``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}``, offsets relative to
the data block), then the data block.
"""

from __future__ import annotations

import errno
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


# ---------------------------------------------------------------------- files an artefact references
REFERENCED_DIR = "examples"  # files a model.safetensors names by content: <REFERENCED_DIR>/<sha256>.safetensors
REFERENCE_SUFFIX = ".examples_sha256"  # a uint8 [32] tensor holding such a file's SHA-256


def referenced_files(raw: bytes) -> set[str]:
    """The paths (relative to the run directory) of the files ``raw`` references by hash."""
    st = Safetensors.parse(raw)
    return {f"{REFERENCED_DIR}/{st.tensor_bytes(n).hex()}.safetensors" for n in st.names() if n.endswith(REFERENCE_SUFFIX)}


def referenced_files_of(path) -> set[str]:
    """:func:`referenced_files` of the file at ``path``, reading its header and those tensors only."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        header, _, n = parse_header(f.read(8), f.read, os.fstat(fd).st_size, str(path))
        out = set()
        for name, info in header.items():
            if name.endswith(REFERENCE_SUFFIX) and info["dtype"] == "U8" and info["shape"] == [32]:
                f.seek(8 + n + info["data_offsets"][0])
                out.add(f"{REFERENCED_DIR}/{f.read(32).hex()}.safetensors")
    return out


def write_referenced_files(run_dir, files: dict[str, bytes]) -> None:
    """Write ``files`` (relative path -> bytes) durably before a model.safetensors that references them.
    Content-addressed: a file already there whole is left as it is."""
    from pathlib import Path

    from promptforget.utils.io import atomic_write_bytes

    for name, data in files.items():
        path = Path(run_dir) / name
        if path.parent.is_symlink():
            raise OSError(errno.ELOOP, f"{path.parent} is a symbolic link (not followed)")
        if path.is_file() and not path.is_symlink() and hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest():
            continue
        atomic_write_bytes(path, data)


def remove_unreferenced_files(run_dir, raw: bytes | None = None) -> list[str]:
    """Delete what ``<run_dir>/examples/`` holds that the committed model.safetensors (``raw``, else read
    from disk) does not reference, leftovers of interrupted writes included: a forgotten example's file
    must not outlive its forget. Returns the names removed."""
    from pathlib import Path

    from promptforget.store.layout import WEIGHTS_NAME
    from promptforget.utils.io import fsync_dir, remove_stale_temps

    d = Path(run_dir) / REFERENCED_DIR
    if not d.is_dir() or d.is_symlink():
        return []
    refs = referenced_files(raw) if raw is not None else referenced_files_of(Path(run_dir) / WEIGHTS_NAME)
    keep = {p.split("/", 1)[1] for p in refs}
    removed = remove_stale_temps(d)
    for f in sorted(d.iterdir()):
        if f.name not in keep and not f.name.startswith("."):
            f.unlink()
            removed.append(f.name)
    if removed:
        fsync_dir(d)
    return removed
