"""The deletion ledger: ``RUN_DIR/forget_ledger.jsonl``, append-only JSON lines, hash-chained and, with a
key, authenticated.

Every line is one event; ``entry_sha256`` is the SHA-256 of the event's canonical JSON (sorted keys,
no spaces, ASCII) without ``entry_sha256`` and ``hmac``, and ``prev_sha256`` is the previous line's
``entry_sha256`` (64 zeros for the first). Editing, inserting, deleting or reordering any line breaks the
chain -- unless whoever edits recomputes every hash, which needs nothing secret. Two things close that:

- a **ledger key** (``PROMPTFORGET_LEDGER_KEY``, or a key file made by ``promptforget ledger keygen`` and
  named by ``PROMPTFORGET_LEDGER_KEY_FILE``; never stored in the run): each entry then carries
  ``key_id`` and ``hmac`` = HMAC-SHA256(key, entry_sha256), so a rewritten or appended entry fails
  verification without the key;
- an **anchor** (:mod:`promptforget.store.anchor`): the head (seq, hash, key id) kept outside the run after
  every entry, by default beside the key file; every forget, start and ``ledger verify`` refuses a ledger
  that is shorter than, or diverges from, it. ``promptforget ledger head`` prints the head by hand, and
  ``ledger verify --expect-head SEQ:HASH`` checks one.

Every line must be the canonical JSON of its entry (the bytes :func:`canonical` writes; CRLF, spaces or a
duplicate key fail), within :data:`MAX_LINE_BYTES` and :data:`MAX_DEPTH`, with exactly the fields its event
allows (:data:`FIELDS`, :data:`OPTIONAL_FIELDS`). The ledger and the artefact are never read or written
through a symlink.

Events (written by :mod:`promptforget.store.durable`, the only writer):

``pending``  intent, written and fsynced *before* the artefact is replaced: request id, classes,
             reason, source (cli | service), time, SHA-256 of each removed prompt (its stored bytes),
             SHA-256 of the artefact before and of the exact bytes that will replace it.
``commit``   the forget is done (artefact replaced): repeats the pending's fields, points at it
             (``pending_seq``); ``recovered: true`` when a restart rolled a crashed forget forward.
``abort``    a crashed forget that never replaced the artefact (nothing was forgotten).

Exact forgetting (a retrain of the shared weights without the forgotten classes' data, see
:mod:`promptforget.pfm.exact`). The request for it is the instant forget's ``exact_requested: true``
(in its pending and commit): durable before any training starts, so a crash mid-retrain leaves an open
request that the next start retrains. Once the retrained bytes exist:

``exact_pending``  intent to replace the artefact with the retrain: the requests it covers
                   (``request_ids``), every forgotten class it was trained without (``classes``), the
                   retrain's ``config_sha256``, ``train_manifest_sha256`` of the training examples used,
                   ``n_train``, and the artefact's before and exact after hash.
``exact``          the retrain is in place (repeats the pending's fields, ``pending_seq``).
``exact_abort``    a crashed retrain that never replaced the artefact; its requests stay open.

A request is ``exact`` once an ``exact`` entry follows its commit: every retrain leaves out the data
of every class forgotten before it. ``commit`` and ``exact`` entries form one chain of artefact states.

A forgotten class is one with a ``commit``. :func:`check_run` checks the entries' schema, the chain, the
signatures, the events' logic, and the artefact: it must be the last commit's (or exact's) ``after``
state and hold no forgotten prompt (by name or bytes). :func:`verify` runs it on a run directory; every forget runs it first
and refuses on any problem.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from promptforget.store import layout
from promptforget.store.artefact import Safetensors, short
from promptforget.store.layout import LEDGER_NAME
from promptforget.utils import strictjson
from promptforget.utils.io import fsync_dir, read_regular_file

GENESIS = "0" * 64
EVENTS = ("pending", "commit", "abort", "exact_pending", "exact", "exact_abort")
PENDING_EVENTS = ("pending", "exact_pending")
ARTEFACT_EVENTS = ("commit", "exact")  # the entries that replace the artefact
KEY_ENV = "PROMPTFORGET_LEDGER_KEY"
KEY_FILE_ENV = "PROMPTFORGET_LEDGER_KEY_FILE"
MIN_KEY_BYTES = 16
MAX_LINE_BYTES = 4 * 1024 * 1024  # thousands of classes with their prompt hashes fit
MAX_DEPTH = 4  # an entry is an object of strings, lists and one map: depth 2
_HEX64 = re.compile(r"[0-9a-f]{64}")


class LedgerError(ValueError):
    """The ledger is unreadable, broken, or disagrees with the artefact: no forget proceeds on it."""


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k not in ("entry_sha256", "hmac")})).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------- the key
@dataclass(frozen=True)
class LedgerKey:
    secret: bytes = field(repr=False)
    path: Path | None = field(default=None, compare=False)  # the key file, if any: anchors live beside it

    @property
    def key_id(self) -> str:
        """A short public name of the key, so a wrong key is reported as such."""
        return hashlib.sha256(b"promptforget-ledger-key-id\0" + self.secret).hexdigest()[:16]

    def sign(self, entry_sha256: str) -> str:
        return hmac.new(self.secret, entry_sha256.encode("ascii"), hashlib.sha256).hexdigest()

    def signed_by_me(self, entry: dict) -> bool:
        given = entry.get("hmac")
        return isinstance(given, str) and hmac.compare_digest(given, self.sign(str(entry.get("entry_sha256"))))

    @classmethod
    def from_text(cls, text: str, where: str, path: Path | None = None) -> "LedgerKey":
        text = text.strip()
        secret = bytes.fromhex(text) if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text) else text.encode("utf-8")
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(f"{where}: a ledger key needs at least {MIN_KEY_BYTES} bytes "
                             "(make one with `promptforget ledger keygen --out FILE`)")
        return cls(secret, path)


def load_key(path: str | os.PathLike | None = None) -> LedgerKey | None:
    """The ledger key from ``path``, else ``$PROMPTFORGET_LEDGER_KEY_FILE``, else ``$PROMPTFORGET_LEDGER_KEY``;
    None when none is set."""
    path = path or os.environ.get(KEY_FILE_ENV) or None
    if path:
        p = Path(path)
        run = inside_run_dir(p)
        if run is not None:
            raise ValueError(f"ledger key file {p}: refusing a key inside the run directory {run} "
                             "(it would travel with the ledger it authenticates)")
        try:
            return LedgerKey.from_text(p.read_text(encoding="utf-8"), f"ledger key file {p}", Path(os.path.abspath(p)))
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the ledger key file {p}: {e.strerror if isinstance(e, OSError) else e}") from None
    text = os.environ.get(KEY_ENV)
    if text is None:
        return None
    return LedgerKey.from_text(text, f"${KEY_ENV}")


def inside_run_dir(path: Path) -> Path | None:
    """The run directory ``path`` lies in, if any (a key stored there would travel with the ledger)."""
    for d in Path(os.path.abspath(path)).parents:
        if any((d / n).exists() for n in (*layout.CONFIG_NAMES.values(), LEDGER_NAME)):
            return d
    return None


def keygen(out: str | os.PathLike) -> LedgerKey:
    """Write a new random key (hex, 0600) to ``out``; never overwrites, never inside a run directory."""
    out = Path(out)
    run = inside_run_dir(out)
    if run is not None:
        raise ValueError(f"{out}: refusing to store the ledger key inside the run directory {run} "
                         "(the key must live apart from the ledger it authenticates)")
    secret = secrets.token_bytes(32)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValueError(f"{out} already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return LedgerKey(secret)


# ---------------------------------------------------------------------- entry schema
_FIELDS = {  # event -> required field -> check
    "pending": ("request_id", "classes", "reason", "source", "removed_prompt_sha256",
                "artefact_before_sha256", "artefact_after_sha256"),
    "commit": ("pending_seq", "request_id", "classes", "removed_prompt_sha256",
               "artefact_before_sha256", "artefact_after_sha256"),
    "abort": ("pending_seq", "request_id"),
    "exact_pending": ("request_ids", "classes", "config_sha256", "train_manifest_sha256", "n_train",
                      "artefact_before_sha256", "artefact_after_sha256"),
    "exact": ("pending_seq", "request_ids", "classes", "config_sha256", "train_manifest_sha256", "n_train",
              "artefact_before_sha256", "artefact_after_sha256"),
    "exact_abort": ("pending_seq",),
}
EXACT_FIELDS = _FIELDS["exact"][1:]  # what an exact entry repeats from its exact_pending
FIELDS = _FIELDS
COMMON_FIELDS = ("event", "seq", "prev_sha256", "entry_sha256", "time", "key_id", "hmac")
OPTIONAL_FIELDS = {  # besides the required ones: nothing else may be in an entry
    "pending": ("exact_requested", "examples", "exact_at_commit"),
    "commit": ("reason", "source", "exact_requested", "recovered", "examples", "exact_at_commit"),
    "abort": ("note",),
    "exact_pending": (),
    "exact": ("recovered",),
    "exact_abort": ("note",),
}


def _field_problem(name: str, value) -> str | None:
    if name in ("seq", "pending_seq"):
        return None if type(value) is int and value >= 1 else "must be a positive integer"
    if name == "n_train":
        return None if type(value) is int and value >= 1 else "must be a positive integer"
    if name == "request_ids":
        ok = isinstance(value, list) and all(isinstance(r, str) and r for r in value)
        return None if ok else "must be a list of request ids"
    if name in ("exact_requested", "exact_at_commit"):
        return None if value is True else "must be true when present"
    if name == "examples":
        ok = isinstance(value, list) and value and all(isinstance(h, str) and _HEX64.fullmatch(h) for h in value)
        return None if ok else "must be a non-empty list of 64-hex keyed hashes"
    if name.endswith("sha256") and name != "removed_prompt_sha256":
        return None if isinstance(value, str) and _HEX64.fullmatch(value) else "must be 64 lowercase hex digits"
    if name == "classes":  # empty only when the entry forgets examples (checked in schema_problem)
        ok = isinstance(value, list) and all(isinstance(c, str) and c for c in value)
        return None if ok else "must be a list of class names"
    if name == "removed_prompt_sha256":
        ok = isinstance(value, dict) and all(isinstance(h, str) and _HEX64.fullmatch(h) for h in value.values())
        return None if ok else "must map class names to 64-hex hashes"
    if name in ("request_id", "reason", "source", "time", "note"):
        return None if isinstance(value, str) else "must be a string"
    if name == "hmac":
        return None if isinstance(value, str) and _HEX64.fullmatch(value) else "must be 64 lowercase hex digits"
    if name == "key_id":
        return None if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value) else "must be 16 hex digits"
    if name == "recovered":
        return None if type(value) is bool else "must be true or false"
    return None


def schema_problem(entry: dict) -> str | None:
    """What is wrong with one entry's shape (missing or mistyped field), or None."""
    kind = entry.get("event")
    if kind not in EVENTS:
        return f"unknown event {short(kind)}"
    for name in ("seq", "prev_sha256", "entry_sha256", "time", *_FIELDS[kind]):
        if name not in entry:
            return f"{kind} has no {name!r}"
        why = _field_problem(name, entry[name])
        if why:
            return f"{kind} field {name!r} {why}"
    allowed = {*COMMON_FIELDS, *_FIELDS[kind], *OPTIONAL_FIELDS[kind]}
    extra = sorted(k for k in entry if k not in allowed)
    if extra:
        return f"{kind} has unexpected field {short(extra[0])}"
    for name in ("hmac", "key_id", *OPTIONAL_FIELDS[kind]):
        if name in entry:
            why = _field_problem(name, entry[name])
            if why:
                return f"{kind} field {name!r} {why}"
    if kind in ("pending", "commit") and not entry["classes"] and not entry.get("examples"):
        return f"{kind} forgets nothing: it names no class and no example"
    return None


def parse_line(line: bytes, where: str) -> dict:
    """One ledger line (without its newline) as an entry: bounded, strict JSON, an object of the schema,
    and byte for byte the canonical form. Raises :class:`LedgerError` naming ``where`` and the problem."""
    try:
        e = strictjson.loads(line, MAX_LINE_BYTES, MAX_DEPTH)
    except ValueError as exc:
        raise LedgerError(f"{where}: {exc}") from None
    if not isinstance(e, dict):
        raise LedgerError(f"{where}: not a JSON object")
    why = schema_problem(e)
    if why:
        raise LedgerError(f"{where}: {why}")
    if canonical(e) != line:
        raise LedgerError(f"{where}: not in canonical form (sorted keys, no spaces, ASCII, LF): the line was "
                          "rewritten outside the ledger")
    return e


# ---------------------------------------------------------------------- the file
_FROM_ENV = object()


class Ledger:
    """``anchors``: the :class:`promptforget.store.anchor.AnchorStore` every appended entry is anchored in
    before it is written (default: the one the key and the environment name, or None)."""

    def __init__(self, run_dir: str | os.PathLike, key: LedgerKey | None = None, anchors=_FROM_ENV):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LEDGER_NAME
        self.key = key
        if anchors is _FROM_ENV:
            from promptforget.store.anchor import store_for

            anchors = store_for(key)
        self.anchors = anchors

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    # ------------------------------------------------------------------ reading
    def _raw(self) -> bytes:
        if not os.path.lexists(self.path):
            return b""
        try:
            return read_regular_file(self.path)
        except OSError as e:
            raise LedgerError(f"{self.path}: {e.strerror}") from None

    def read(self) -> list[dict]:
        """All complete entries, each checked for shape. A torn last line (a crash mid-append, never
        acknowledged) is skipped; anything else that does not parse is corruption: :class:`LedgerError`
        naming the line and the field."""
        raw = self._raw()
        body = raw[: raw.rfind(b"\n") + 1]  # drop a torn tail
        entries = []
        for i, line in enumerate(body.split(b"\n")[:-1], 1):
            entries.append(parse_line(line, f"{LEDGER_NAME} line {i}"))
        return entries

    def torn_tail(self) -> int:
        raw = self._raw()
        return len(raw) - (raw.rfind(b"\n") + 1)

    # ------------------------------------------------------------------ writing (caller holds the run lock)
    def repair_torn_tail(self) -> int:
        """Cut a half-written last line (crash mid-append). Returns the number of bytes removed."""
        n = self.torn_tail()
        if n:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
            try:
                os.ftruncate(fd, os.fstat(fd).st_size - n)
                os.fsync(fd)
            finally:
                os.close(fd)
        return n

    def append(self, event: dict, entries: list[dict] | None = None, before_write=None) -> dict:
        """Chain ``event`` to the last entry (signed when the ledger has a key), write it as one line,
        fsync. Returns the stored entry. ``before_write(fd, line)`` is a test hook (crash injection)."""
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
        if self.key is not None:
            entry["key_id"] = self.key.key_id
        entry["entry_sha256"] = entry_hash(entry)
        if self.key is not None:
            entry["hmac"] = self.key.sign(entry["entry_sha256"])
        line = canonical(entry) + b"\n"
        if self.anchors is not None:  # anchored first: a committed entry is never missing from its anchor
            self.anchors.record(self.run_dir, entries, entry, self.key)
        self.append_line(line, before_write)
        return entry

    def append_line(self, line: bytes, before_write=None) -> None:
        """Write one complete line (never through a symlink) and fsync."""
        created = not os.path.lexists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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


# ---------------------------------------------------------------------- state and verification
def committed(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e.get("event") == "commit"]


def forgotten_by_ledger(entries: list[dict]) -> list[str]:
    return [c for e in committed(entries) for c in e["classes"]]


def dangling_pending(entries: list[dict]) -> dict | None:
    """The last entry, if it is a pending or exact_pending without its resolution (a crash)."""
    return entries[-1] if entries and entries[-1].get("event") in PENDING_EVENTS else None


def artefact_changes(entries: list[dict]) -> list[dict]:
    """The ``commit`` and ``exact`` entries: each replaced the artefact, in order."""
    return [e for e in entries if e.get("event") in ARTEFACT_EVENTS]


def open_exact_requests(entries: list[dict]) -> list[dict]:
    """Commits that asked for an exact forget and are not yet covered by an ``exact`` entry."""
    last_exact = max((e["seq"] for e in entries if e.get("event") == "exact"), default=0)
    return [e for e in committed(entries) if e.get("exact_requested") and e["seq"] > last_exact]


def request_state(entries: list[dict], request_id: str) -> dict | None:
    """Where a committed forget stands: ``instant`` (prompt deleted), ``retraining`` (an exact forget was
    asked for and is not done) or ``exact`` (a retrain without the class's data replaced the artefact).
    None when no commit has that request id."""
    c = next((e for e in committed(entries) if e["request_id"] == request_id), None)
    if c is None:
        return None
    exact = next((e for e in entries if e.get("event") == "exact" and e["seq"] > c["seq"]), None)
    state = "exact" if exact or c.get("exact_at_commit") else "retraining" if c.get("exact_requested") else "instant"
    return {"request_id": request_id, "classes": list(c["classes"]), "examples": len(c.get("examples", [])), "state": state,
            "exact_requested": bool(c.get("exact_requested")), "commit_seq": c["seq"],
            "exact_seq": exact["seq"] if exact else None}


def head(entries: list[dict]) -> dict:
    """The anchor an operator keeps elsewhere: the last entry's seq and hash."""
    return {"seq": entries[-1]["seq"] if entries else 0,
            "entry_sha256": entries[-1]["entry_sha256"] if entries else GENESIS}


def is_signed(entries: list[dict]) -> bool:
    return any("hmac" in e or "key_id" in e for e in entries)


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
        if kind in PENDING_EVENTS:
            if pending:
                problems.append(f"{where}: a second pending while seq {next(iter(pending))} is unresolved")
            pending = {e.get("seq"): e}
        elif kind in _RESOLVES:
            p = pending.pop(e.get("pending_seq"), None)
            if p is None or p.get("event") != _RESOLVES[kind]:
                problems.append(f"{where}: {kind} for pending seq {e.get('pending_seq')}, which is not the open "
                                f"{_RESOLVES[kind]}")
            elif kind in ("commit", "exact"):
                for k in _REPEATED[kind]:
                    if e.get(k) != p.get(k):
                        problems.append(f"{where}: {kind} field {k!r} differs from its pending")
        else:
            problems.append(f"{where}: unknown event {kind!r}")
        if kind == "exact":
            forgotten = sorted({c for x in committed(entries[: i - 1]) for c in x["classes"]})
            if sorted(e.get("classes", [])) != forgotten:
                problems.append(f"{where}: the retrain left out {sorted(e.get('classes', []))}, but the classes "
                                f"forgotten before it are {forgotten}")
    # Consecutive artefact states: each starts from the artefact the previous one left.
    changes = artefact_changes(entries)
    for a, b in zip(changes, changes[1:]):
        if b.get("artefact_before_sha256") != a.get("artefact_after_sha256"):
            problems.append(f"seq {b.get('seq')}: artefact before-hash is not seq {a.get('seq')}'s after-hash "
                            f"(the artefact changed outside the ledger in between)")
    return problems


_RESOLVES = {"commit": "pending", "abort": "pending", "exact": "exact_pending", "exact_abort": "exact_pending"}
_REPEATED = {"commit": ("request_id", "classes", "artefact_before_sha256", "artefact_after_sha256",
                        "removed_prompt_sha256", "exact_requested", "examples", "exact_at_commit"),
             "exact": EXACT_FIELDS}


def check_signatures(entries: list[dict], key: LedgerKey | None) -> list[str]:
    """With a key, every entry must carry its HMAC. Without one, nothing can be checked here; a signed
    ledger then only verifies as a chain (see :func:`verify`'s ``authenticated``)."""
    if key is None:
        return []
    problems = []
    for i, e in enumerate(entries, 1):
        where = f"entry {i} (seq {e.get('seq')})"
        if "hmac" not in e:
            problems.append(f"{where}: not signed (a ledger key is set, so every entry must carry its hmac)")
        elif e.get("key_id") != key.key_id:
            problems.append(f"{where}: signed with another key (key_id {e.get('key_id')!r}, this key is {key.key_id!r})")
        elif not key.signed_by_me(e):
            problems.append(f"{where}: hmac does not match (entry forged or rewritten without the key)")
    return problems


def check_anchor(entries: list[dict], expect_head: str) -> list[str]:
    """``expect_head`` is ``SEQ:HASH`` (that entry must still be at that seq) or ``HASH`` (anywhere)."""
    seq_text, _, want = expect_head.strip().rpartition(":")
    if not _HEX64.fullmatch(want) or (seq_text and not seq_text.isdigit()):
        raise ValueError(f"--expect-head: expected SEQ:HASH or HASH (64 hex digits), got {expect_head!r}")
    if seq_text:
        seq = int(seq_text)
        if seq == 0 and want == GENESIS:
            return []
        if not (1 <= seq <= len(entries)) or entries[seq - 1].get("entry_sha256") != want:
            return [(f"anchor seq {seq} ({want[:12]}...) is not in the ledger any more (history was rewritten "
                     "or truncated behind the anchor)")]
        return []
    if not any(e.get("entry_sha256") == want for e in entries):
        return [f"anchor {want[:12]}... is not in the ledger any more (history was rewritten or truncated)"]
    return []


def forgotten_prompt_problems(entries: list[dict], st: Safetensors) -> list[str]:
    """A forgotten class's prompt still in the artefact ``st``: by name, or by the exact bytes removed."""
    names = set(st.names())
    problems = [f"class {c!r} is forgotten in the ledger but its prompt is in the artefact"
                for c in forgotten_by_ledger(entries) if layout.prompt_tensor_name(c) in names]
    problems += [f"class {c!r} is forgotten in the ledger but its adapter or statistics are in the artefact"
                 for c in forgotten_by_ledger(entries)
                 if any(n != layout.prompt_tensor_name(c) for n in layout.class_tensor_names(c, names))]
    removed = {h: (e["seq"], c) for e in committed(entries) for c, h in e["removed_prompt_sha256"].items()}
    if removed:
        # Every prompt has the same size, so only tensors of a prompt's size can hold a removed one's exact bytes.
        prompt_sizes = {st.nbytes(n) for n in st.names() if n.startswith(layout.PROMPT_PREFIX)}
        for n in st.names():
            if prompt_sizes and st.nbytes(n) not in prompt_sizes:
                continue
            h = st.tensor_sha256(n)
            if h in removed:
                seq, c = removed[h]
                problems.append(f"tensor {n!r} has the exact bytes of the prompt of {c!r} removed at seq {seq}")
    return problems


def check_run(entries: list[dict], raw_artefact: bytes, class_names: list[str], key: LedgerKey | None = None,
              where: str = layout.WEIGHTS_NAME) -> tuple[list[str], dict]:
    """Chain, signatures, and the artefact against the ledger. Returns (problems, facts about the run)."""
    problems = check_chain(entries) + check_signatures(entries, key)
    if key is None and is_signed(entries):
        problems.append("the ledger is signed but no ledger key was given "
                        f"(set {KEY_ENV} or {KEY_FILE_ENV}); nothing may be appended without it")
    try:
        st = Safetensors.parse(raw_artefact, where)
    except ValueError as e:
        return problems + [str(e)], {"active_classes": [], "forgotten_classes": forgotten_by_ledger(entries),
                                     "artefact_sha256": hashlib.sha256(raw_artefact).hexdigest()}
    names = set(st.names())
    sha = hashlib.sha256(raw_artefact).hexdigest()
    forgotten = forgotten_by_ledger(entries)
    problems += forgotten_prompt_problems(entries, st)
    active = layout.active_classes(class_names, names)
    unrecorded = sorted({c for c in class_names if c not in active} - set(forgotten))
    if unrecorded:
        problems.append(f"classes missing from the artefact without a ledger commit: {unrecorded} "
                        "(the ledger was deleted or truncated, or the artefact replaced)")
    changes = artefact_changes(entries)
    if changes and changes[-1]["artefact_after_sha256"] != sha:
        problems.append(f"the artefact is not the one the last {changes[-1]['event']} produced "
                        f"(seq {changes[-1]['seq']}; changed outside the ledger)")
    return problems, {"forgotten_classes": forgotten, "active_classes": active, "artefact_sha256": sha}


def verify(run_dir: str | os.PathLike, key: LedgerKey | None = None, expect_head: str | None = None,
           anchor_dir: str | os.PathLike | None = None) -> dict:
    """Check the ledger and the artefact, and the ledger against its anchor (``anchor_dir``, else the store
    :func:`promptforget.store.anchor.store_for` finds). Read-only, never raises on a broken run; returns a
    JSON-able report with ``ok``, ``problems``, ``authenticated`` (every entry's HMAC checked with the key)
    and ``anchor`` (the anchored head, None when the run has none)."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    ledger = Ledger(run_dir)
    report: dict = {"run_dir": str(run_dir), "ledger": str(ledger.path), "problems": []}
    problems = report["problems"]
    entries = []
    try:
        entries = ledger.read()
        if ledger.torn_tail():
            problems.append(f"ledger ends with a torn line of {ledger.torn_tail()} bytes (a crashed append; recovery cuts it)")
    except LedgerError as e:
        problems.append(str(e))
    if dangling_pending(entries):
        problems.append(f"seq {entries[-1]['seq']}: {entries[-1]['event']} without its commit/abort "
                        "(a crash; recovery resolves it)")
    weights = run_dir / layout.WEIGHTS_NAME
    try:
        raw = read_regular_file(weights)
        class_names = layout.class_names(run_dir)
    except OSError as e:
        problems.append(f"cannot read the run: {e.filename}: {e.strerror}")
        raw, class_names = b"", []
    except (ValueError, KeyError, TypeError) as e:
        problems.append(f"cannot read the run: {e}")
        raw, class_names = b"", []
    found, facts = check_run(entries, raw, class_names, key, str(weights))
    problems += found
    if expect_head:
        problems += check_anchor(entries, expect_head)
    from promptforget.store.anchor import store_for

    anchored = None
    try:
        store = store_for(key, anchor_dir)
        if store is not None:
            found, anchored = store.check(run_dir, entries, key, lambda: raw)
            problems[:0] = found  # first: a rollback explains the other problems it causes
    except ValueError as e:
        store = None
        problems.append(str(e))
    # Only the artefact's temp files can hold prompt bytes; other files (the model card) are rewritten
    # atomically too, and their temp files are no evidence of a crashed forget.
    leftovers = sorted(p.name for p in run_dir.glob(f".{layout.WEIGHTS_NAME}.*.tmp"))
    if leftovers:
        problems.append(f"leftover temp files may hold old bytes: {leftovers} (recovery removes them)")
    report.update(
        ok=not problems,
        authenticated=key is not None and not check_signatures(entries, key),
        signed=is_signed(entries),
        key_id=key.key_id if key is not None else None,
        entries=len(entries),
        commits=len(committed(entries)),
        **facts,
        head_sha256=head(entries)["entry_sha256"],
        head_seq=head(entries)["seq"],
        anchor_dir=str(store.dir) if store is not None else None,
        anchor=({"seq": anchored["seq"], "entry_sha256": anchored["entry_sha256"], "key_id": anchored["key_id"]}
                if anchored else None),
        seconds=time.perf_counter() - t0,
    )
    return report
