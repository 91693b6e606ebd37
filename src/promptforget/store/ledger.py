"""The deletion ledger: ``RUN_DIR/forget_ledger.jsonl``, append-only JSON lines, hash-chained.

Every line is one event; ``entry_sha256`` is the SHA-256 of the event's canonical JSON (sorted keys,
no spaces, ASCII) without that field, and ``prev_sha256`` is the previous line's ``entry_sha256``
(64 zeros for the first). Editing, inserting, deleting or reordering any line breaks the chain.

Events (written by :mod:`promptforget.store.durable`, the only writer):

``pending``  intent, written and fsynced *before* the artefact is replaced: request id, classes,
             reason, source (cli | service), time, SHA-256 of each removed prompt (its stored bytes),
             SHA-256 of the artefact before and of the exact bytes that will replace it.
``commit``   the forget is done (artefact replaced): repeats the pending's fields, points at it
             (``pending_seq``); ``recovered: true`` when a restart rolled a crashed forget forward.
``abort``    a crashed forget that never replaced the artefact (nothing was forgotten).

A forgotten class is one with a ``commit``. :func:`verify` checks the chain, the events' logic, and the
artefact: it must be the last commit's ``after`` state and hold no forgotten prompt (by name or bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from promptforget.store import layout
from promptforget.store.artefact import Safetensors
from promptforget.store.layout import LEDGER_NAME
from promptforget.utils.io import fsync_dir

GENESIS = "0" * 64
EVENTS = ("pending", "commit", "abort")


class LedgerError(ValueError):
    """The ledger is unreadable, broken, or disagrees with the artefact: no forget proceeds on it."""


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "entry_sha256"})).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Ledger:
    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LEDGER_NAME

    def exists(self) -> bool:
        return self.path.is_file()

    # ------------------------------------------------------------------ reading
    def _raw(self) -> bytes:
        return self.path.read_bytes() if self.path.is_file() else b""

    def read(self) -> list[dict]:
        """All complete entries. A torn last line (a crash mid-append, never acknowledged) is skipped;
        a line that does not parse anywhere else is corruption and raises :class:`LedgerError`."""
        raw = self._raw()
        body = raw[: raw.rfind(b"\n") + 1]  # drop a torn tail
        entries = []
        for i, line in enumerate(body.splitlines(), 1):
            try:
                e = json.loads(line)
                if not isinstance(e, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise LedgerError(f"{self.path}: line {i} is not a JSON object ({exc})") from None
            entries.append(e)
        return entries

    def torn_tail(self) -> int:
        raw = self._raw()
        return len(raw) - (raw.rfind(b"\n") + 1)

    # ------------------------------------------------------------------ writing (caller holds the run lock)
    def repair_torn_tail(self) -> int:
        """Cut a half-written last line (crash mid-append). Returns the number of bytes removed."""
        n = self.torn_tail()
        if n:
            size = self.path.stat().st_size
            with open(self.path, "r+b") as f:
                f.truncate(size - n)
                f.flush()
                os.fsync(f.fileno())
        return n

    def append(self, event: dict, entries: list[dict] | None = None, before_write=None) -> dict:
        """Chain ``event`` to the last entry, write it as one line, fsync. Returns the stored entry.
        ``before_write(fd, line)`` is a test hook (crash injection)."""
        if event.get("event") not in EVENTS:
            raise ValueError(f"unknown ledger event {event.get('event')!r}")
        entries = self.read() if entries is None else entries
        last = entries[-1] if entries else None
        entry = {
            **event,
            "seq": (last["seq"] + 1) if last else 1,
            "prev_sha256": last["entry_sha256"] if last else GENESIS,
            "time": event.get("time") or utc_now(),
        }
        entry["entry_sha256"] = entry_hash(entry)
        line = canonical(entry) + b"\n"
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if before_write is not None:
                before_write(fd, line)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.run_dir)  # the new file's directory entry must survive too
        return entry


# ---------------------------------------------------------------------- state and verification
def committed(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e.get("event") == "commit"]


def forgotten_by_ledger(entries: list[dict]) -> list[str]:
    return [c for e in committed(entries) for c in e["classes"]]


def dangling_pending(entries: list[dict]) -> dict | None:
    """The last entry, if it is a pending without a commit/abort (a forget that crashed)."""
    return entries[-1] if entries and entries[-1].get("event") == "pending" else None


def check_chain(entries: list[dict]) -> list[str]:
    problems = []
    prev, pending = GENESIS, {}
    for i, e in enumerate(entries, 1):
        where = f"entry {i} (seq {e.get('seq')})"
        if e.get("seq") != i:
            problems.append(f"{where}: expected seq {i} (an entry was removed, inserted or reordered)")
        if e.get("prev_sha256") != prev:
            problems.append(f"{where}: prev_sha256 does not match the previous entry (chain broken)")
        if e.get("entry_sha256") != entry_hash(e):
            problems.append(f"{where}: entry_sha256 does not match its content (entry was modified)")
        prev = e.get("entry_sha256")
        kind = e.get("event")
        if kind == "pending":
            if pending:
                problems.append(f"{where}: a second pending while seq {next(iter(pending))} is unresolved")
            pending = {e.get("seq"): e}
        elif kind in ("commit", "abort"):
            p = pending.pop(e.get("pending_seq"), None)
            if p is None:
                problems.append(f"{where}: {kind} for pending seq {e.get('pending_seq')}, which is not the open pending")
            elif kind == "commit":
                for k in ("request_id", "classes", "artefact_before_sha256", "artefact_after_sha256", "removed_prompt_sha256"):
                    if e.get(k) != p.get(k):
                        problems.append(f"{where}: commit field {k!r} differs from its pending")
        else:
            problems.append(f"{where}: unknown event {kind!r}")
    # Consecutive commits: each starts from the artefact the previous one left.
    commits = committed(entries)
    for a, b in zip(commits, commits[1:]):
        if b.get("artefact_before_sha256") != a.get("artefact_after_sha256"):
            problems.append(f"seq {b.get('seq')}: artefact before-hash is not seq {a.get('seq')}'s after-hash "
                            f"(the artefact changed outside the ledger in between)")
    return problems


def verify(run_dir: str | os.PathLike) -> dict:
    """Check the chain and the artefact. Read-only; returns a JSON-able report with ``ok``."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    ledger = Ledger(run_dir)
    report: dict = {"run_dir": str(run_dir), "ledger": str(ledger.path), "problems": []}
    problems = report["problems"]
    try:
        entries = ledger.read()
    except LedgerError as e:
        problems.append(str(e))
        entries = []
    if ledger.torn_tail():
        problems.append(f"ledger ends with a torn line of {ledger.torn_tail()} bytes (a crashed append; recovery cuts it)")
    problems += check_chain(entries)
    if dangling_pending(entries):
        problems.append(f"seq {entries[-1]['seq']}: pending forget without commit/abort (a crash; recovery resolves it)")

    weights = run_dir / layout.WEIGHTS_NAME
    class_names = layout.class_names(run_dir)
    raw = weights.read_bytes()
    st = Safetensors.parse(raw, str(weights))
    names = set(st.names())
    sha = hashlib.sha256(raw).hexdigest()
    forgotten = forgotten_by_ledger(entries)
    for c in forgotten:
        if layout.prompt_tensor_name(c) in names:
            problems.append(f"class {c!r} is forgotten in the ledger but its prompt is in the artefact")
    removed = {h: (e["seq"], c) for e in committed(entries) for c, h in e.get("removed_prompt_sha256", {}).items()}
    for n in st.names():
        h = st.tensor_sha256(n)
        if h in removed:
            seq, c = removed[h]
            problems.append(f"tensor {n!r} has the exact bytes of the prompt of {c!r} removed at seq {seq}")
    active = layout.active_classes(class_names, names)
    on_disk_forgotten = [c for c in class_names if c not in active]
    unrecorded = sorted(set(on_disk_forgotten) - set(forgotten))
    if unrecorded:
        problems.append(f"classes missing from the artefact without a ledger commit: {unrecorded}")
    commits = committed(entries)
    if commits and commits[-1]["artefact_after_sha256"] != sha:
        problems.append("the artefact is not the one the last commit produced (changed outside the ledger)")
    leftovers = sorted(p.name for p in run_dir.glob(".*.tmp"))
    if leftovers:
        problems.append(f"leftover temp files may hold old bytes: {leftovers} (recovery removes them)")
    report.update(
        ok=not problems,
        entries=len(entries),
        commits=len(commits),
        forgotten_classes=forgotten,
        active_classes=active,
        artefact_sha256=sha,
        head_sha256=entries[-1]["entry_sha256"] if entries else GENESIS,
        seconds=time.perf_counter() - t0,
    )
    return report
