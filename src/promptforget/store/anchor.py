"""Anchors: each run's ledger head, kept outside the run, so a forget cannot be rolled back.

A hash chain with HMACs stops forged entries, not removed ones: cutting the ledger's tail (and copying an
older ``model.safetensors`` back) leaves a shorter chain that still verifies. Certificate Transparency's
answer is a signed tree head kept by someone else; here it is an **anchor store**, a directory the run
cannot rewrite (default: ``promptforget-anchors/`` beside the key file; ``$PROMPTFORGET_ANCHOR_DIR`` or
``--anchor-dir``), holding one file per run:

    <run_id>.json   run_id = the first ledger entry's hash (a copy of the run has the same one)
                    seq, entry_sha256, entry (the head line itself), key_id, signed, the run's path, every
                    artefact state it passed through, the removed prompts' hashes, the forgotten classes,
                    and, with a key, an HMAC over all of it

The anchor is written (atomically) *before* each entry is appended (:meth:`Ledger.append`), so no entry
is ever in the ledger without its anchor; a crash between the two leaves the anchor one entry ahead, and
:func:`reconcile` appends that exact line. Then every check (:func:`reconcile` before each forget and at
start, :meth:`AnchorStore.check` in ``ledger verify``) refuses a ledger that is shorter than its anchor or
holds another entry at the anchored seq, a signed run checked without its key or with another key, and a
run whose ledger is gone while its artefact is one the anchored run passed through (the ledger deleted).
A ledger longer than its anchor is fine (entries appended by a process without the store; the next
append anchors them). So recovery never aborts a pending that was committed past the anchor: that commit
would be anchored, and the shorter ledger is refused first.

``$PROMPTFORGET_ANCHOR_HOOK``: a command that gets each new head as one JSON line on stdin (run id, seq,
hash, key id, HMAC) to publish it to an append-only log elsewhere; a non-zero exit fails the append.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Callable

from promptforget.store import layout
from promptforget.store.artefact import Safetensors
from promptforget.store.ledger import (ARTEFACT_EVENTS, GENESIS, KEY_FILE_ENV, LedgerError, LedgerKey, canonical,
                                       committed, forgotten_by_ledger, inside_run_dir, parse_line, utc_now)
from promptforget.utils import strictjson
from promptforget.utils.io import atomic_write_bytes, read_regular_file

ANCHOR_DIR_ENV = "PROMPTFORGET_ANCHOR_DIR"
ANCHOR_HOOK_ENV = "PROMPTFORGET_ANCHOR_HOOK"
DEFAULT_DIR_NAME = "promptforget-anchors"
FORMAT = "promptforget-anchor/1"
MAX_ANCHOR_BYTES = 64 * 1024 * 1024
HOOK_TIMEOUT_S = 30.0
_HEX64 = re.compile(r"[0-9a-f]{64}")


def store_for(key: LedgerKey | None = None, anchor_dir: str | os.PathLike | None = None) -> "AnchorStore | None":
    """The anchor store: ``anchor_dir``, else ``$PROMPTFORGET_ANCHOR_DIR``, else ``promptforget-anchors/``
    beside the key file (the key's, or ``$PROMPTFORGET_LEDGER_KEY_FILE``'s); None when there is none."""
    d = anchor_dir or os.environ.get(ANCHOR_DIR_ENV) or None
    if d is None:
        key_file = key.path if key is not None and key.path is not None else os.environ.get(KEY_FILE_ENV) or None
        if key_file is None:
            return None
        d = Path(os.path.abspath(key_file)).parent / DEFAULT_DIR_NAME
    return AnchorStore(d, os.environ.get(ANCHOR_HOOK_ENV) or None)


def _anchor_problem(a) -> str | None:
    if not isinstance(a, dict) or a.get("format") != FORMAT:
        return f"not a {FORMAT} record"
    checks = {
        "run_id": lambda v: isinstance(v, str) and _HEX64.fullmatch(v),
        "seq": lambda v: type(v) is int and v >= 1,
        "entry_sha256": lambda v: isinstance(v, str) and _HEX64.fullmatch(v),
        "entry": lambda v: isinstance(v, str),
        "key_id": lambda v: v is None or isinstance(v, str),
        "signed": lambda v: type(v) is bool,
        "run_dir": lambda v: isinstance(v, str),
        "artefacts": lambda v: isinstance(v, list) and all(isinstance(h, str) for h in v),
        "removed_prompt_sha256": lambda v: isinstance(v, list) and all(isinstance(h, str) for h in v),
        "forgotten_classes": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
    }
    for name, ok in checks.items():
        if name not in a or not ok(a[name]):
            return f"field {name!r} is missing or mistyped"
    return None


def _prompt_sized_hashes(raw: bytes) -> set[str]:
    """SHA-256 of every tensor of a prompt's size (only those can hold a removed prompt's exact bytes)."""
    try:
        st = Safetensors.parse(raw)
    except ValueError:
        return set()
    sizes = {st.nbytes(n) for n in st.names() if n.startswith(layout.PROMPT_PREFIX)}
    return {st.tensor_sha256(n) for n in st.names() if st.nbytes(n) in sizes}


class AnchorStore:
    def __init__(self, directory: str | os.PathLike, hook: str | None = None):
        self.dir = Path(os.path.abspath(directory))
        run = inside_run_dir(self.dir / "anchor")
        if run is not None:
            raise ValueError(f"anchor directory {self.dir}: refusing an anchor store inside the run directory {run} "
                             "(whoever can rewrite the run could rewrite its anchors)")
        self.hook = hook

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    # ------------------------------------------------------------------ reading
    def load(self, run_id: str) -> dict | None:
        p = self.path(run_id)
        if not os.path.lexists(p):
            return None
        try:
            a = strictjson.loads(read_regular_file(p), MAX_ANCHOR_BYTES, 4)
        except (OSError, ValueError) as e:
            raise LedgerError(f"anchor {p}: {e.strerror if isinstance(e, OSError) else e}") from None
        why = _anchor_problem(a)
        if why is None and a["run_id"] != run_id:
            why = f"holds run {a['run_id'][:12]}..., not {run_id[:12]}..."
        if why:
            raise LedgerError(f"anchor {p}: {why}")
        return a

    def all(self) -> list[dict]:
        """Every readable anchor in the store (for finding a run whose ledger is gone)."""
        out = []
        if self.dir.is_dir():
            for p in sorted(self.dir.glob("*.json")):
                try:
                    a = self.load(p.stem) if _HEX64.fullmatch(p.stem) else None
                except LedgerError:
                    a = None
                if a is not None:
                    out.append(a)
        return out

    def find(self, run_dir: str | os.PathLike, entries: list[dict], artefact: Callable[[], bytes]) -> tuple[dict | None, bool]:
        """This run's anchor: by its first entry, else (its ledger gone or replaced) the anchor of a run at the
        same path whose artefact states or removed prompts the artefact holds. Returns (anchor, found by id)."""
        if entries:
            a = self.load(entries[0]["entry_sha256"])
            if a is not None:
                return a, True
        real = os.path.realpath(run_dir)
        candidates = [a for a in self.all() if a["run_dir"] == real]
        if candidates:
            raw = artefact()
            sha, prompts = hashlib.sha256(raw).hexdigest(), _prompt_sized_hashes(raw)
            for a in candidates:
                if sha in a["artefacts"] or prompts & set(a["removed_prompt_sha256"]):
                    return a, False
        return None, False

    def check(self, run_dir: str | os.PathLike, entries: list[dict], key: LedgerKey | None,
              artefact: Callable[[], bytes]) -> tuple[list[str], dict | None]:
        """What is wrong with ``entries`` against the run's anchor (read-only). Returns (problems, anchor)."""
        try:
            a, by_id = self.find(run_dir, entries, artefact)
        except LedgerError as e:
            return [str(e)], None
        if a is None:
            return [], None
        where = f"anchor {self.path(a['run_id'])}"
        if not by_id:
            state = "is empty" if not entries else "does not start with that run's first entry"
            return [f"the artefact is a state of the anchored run {a['run_id'][:12]}... (head seq {a['seq']}, {where}), "
                    f"but the ledger {state}: the ledger was deleted or replaced"], a
        problems = []
        if a["seq"] > len(entries):
            crash = " (or, one entry short, a crash between anchoring and appending: recovery appends it)"
            problems.append(f"the ledger has {len(entries)} entries, but its anchor holds seq {a['seq']} "
                            f"({a['entry_sha256'][:12]}...): entries were removed behind the anchor (rollback; {where})"
                            + (crash if a["seq"] == len(entries) + 1 else ""))
        elif entries[a["seq"] - 1]["entry_sha256"] != a["entry_sha256"]:
            problems.append(f"the ledger holds another entry at the anchored seq {a['seq']}: history was rewritten "
                            f"({where})")
        if a["signed"] and key is None:
            problems.append(f"the anchor records that the run is signed (key_id {a['key_id']}), and no ledger key "
                            "was given")
        elif a["signed"] and key.key_id != a["key_id"]:
            problems.append(f"the anchor records key_id {a['key_id']}, this key is {key.key_id}")
        elif key is not None and a["signed"] and not key.signed_by_me(
                {"entry_sha256": _record_sha256(a), "hmac": a.get("hmac")}):
            problems.append(f"{where}: its hmac does not match (the anchor was written without the key)")
        return problems, a

    # ------------------------------------------------------------------ writing (caller holds the run lock)
    def record(self, run_dir: str | os.PathLike, entries: list[dict], entry: dict, key: LedgerKey | None) -> dict:
        """Anchor ``entry``, about to be appended after ``entries``; then run the hook. Refuses to move an
        anchor back or onto another branch."""
        chain = [*entries, entry]
        run_id = chain[0]["entry_sha256"]
        old = self.load(run_id)
        if old is not None and (old["seq"] >= entry["seq"] or chain[old["seq"] - 1]["entry_sha256"] != old["entry_sha256"]):
            raise LedgerError(f"anchor {self.path(run_id)} holds seq {old['seq']}; refusing to anchor seq "
                              f"{entry['seq']} on another branch")
        changes = [e for e in chain if e.get("event") in ARTEFACT_EVENTS]
        first = next((e for e in chain if "artefact_before_sha256" in e), None)
        states = ([first["artefact_before_sha256"]] if first else []) + [e["artefact_after_sha256"] for e in changes]
        rec = {
            "format": FORMAT, "run_id": run_id, "run_dir": os.path.realpath(run_dir), "seq": entry["seq"],
            "entry_sha256": entry["entry_sha256"], "entry": canonical(entry).decode("ascii"),
            "key_id": entry.get("key_id"), "signed": "hmac" in entry, "time": utc_now(),
            "artefacts": list(dict.fromkeys(states)),
            "removed_prompt_sha256": sorted({h for e in committed(chain) for h in e["removed_prompt_sha256"].values()}),
            "forgotten_classes": forgotten_by_ledger(chain),
        }
        if key is not None:
            rec["hmac"] = key.sign(_record_sha256(rec))
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(self.path(run_id), canonical(rec) + b"\n")
        self.publish(rec)
        return rec

    def publish(self, rec: dict) -> None:
        """Give the head to ``$PROMPTFORGET_ANCHOR_HOOK`` (one JSON line on stdin); a failure is an OSError."""
        if not self.hook:
            return
        entry = strictjson.loads(rec["entry"], MAX_ANCHOR_BYTES, 4)
        head = {"run_id": rec["run_id"], "seq": rec["seq"], "entry_sha256": rec["entry_sha256"],
                "key_id": rec["key_id"], "entry_hmac": entry.get("hmac"), "time": rec["time"]}
        try:
            r = subprocess.run(shlex.split(self.hook), input=canonical(head) + b"\n", capture_output=True,
                               timeout=HOOK_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as e:
            raise OSError(errno.EIO, f"the anchor hook {self.hook!r} did not run ({e})") from None
        if r.returncode != 0:
            raise OSError(errno.EIO, f"the anchor hook {self.hook!r} exited {r.returncode}")


def _record_sha256(rec: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in rec.items() if k != "hmac"})).hexdigest()


def reconcile(ledger, entries: list[dict]) -> tuple[list[dict], dict | None]:
    """Under the run lock, before anything is resolved or written: append the entry the anchor holds one
    ahead of the ledger (a crash between anchoring and appending), then refuse (:class:`LedgerError`) a
    ledger the anchor does not allow. Returns (entries, what was repaired or None)."""
    store = ledger.anchors
    if store is None:
        return entries, None
    weights = ledger.run_dir / layout.WEIGHTS_NAME

    def artefact() -> bytes:
        try:
            return read_regular_file(weights)
        except OSError:
            return b""

    repaired = None
    a, by_id = store.find(ledger.run_dir, entries, artefact)
    if a is not None and a["seq"] == len(entries) + 1 and (by_id or not entries):
        e = parse_line(a["entry"].encode("ascii"), f"anchor {store.path(a['run_id'])}'s entry")
        # Only what a crash leaves: the entry chains on, and the artefact is in the state the entry leaves it
        # (a ledger cut behind an older artefact is tampering, refused below, not repaired).
        if (e["entry_sha256"] == a["entry_sha256"] and e["seq"] == a["seq"]
                and e["prev_sha256"] == (entries[-1]["entry_sha256"] if entries else GENESIS)
                and hashlib.sha256(artefact()).hexdigest() == _artefact_after(entries, e)):
            ledger.append_line(a["entry"].encode("ascii") + b"\n")
            entries = [*entries, e]
            repaired = {"seq": e["seq"], "event": e["event"]}
            store.publish(a)
    problems, _ = store.check(ledger.run_dir, entries, ledger.key, artefact)
    if problems:
        raise LedgerError(f"the ledger does not match its anchor, nothing was written: {problems[0]}")
    return entries, repaired


def _artefact_after(entries: list[dict], e: dict) -> str | None:
    """The artefact's hash once ``e`` is written: a commit's after-state, a pending's before-state, and an
    abort's pending's before-state."""
    if e["event"] in ARTEFACT_EVENTS:
        return e["artefact_after_sha256"]
    if "artefact_before_sha256" in e:
        return e["artefact_before_sha256"]
    p = entries[e["pending_seq"] - 1] if 1 <= e["pending_seq"] <= len(entries) else {}
    return p.get("artefact_before_sha256")


def claimed_forgotten(run_dir: str | os.PathLike, key: LedgerKey | None = None) -> list[str]:
    """Every class the run's ledger or its anchor says is forgotten, read leniently (a malformed or cut
    ledger still masks what it or the anchor names): what a loader must never serve."""
    run_dir = Path(run_dir)
    claimed: dict[str, None] = {}
    entries = []
    try:
        raw = read_regular_file(run_dir / layout.LEDGER_NAME)
    except OSError:
        raw = b""
    for line in raw.split(b"\n"):
        try:
            e = strictjson.loads(line, 4 * 1024 * 1024, 4)
        except ValueError:
            continue
        if isinstance(e, dict):
            entries.append(e)
            if e.get("event") == "commit" and isinstance(e.get("classes"), list):
                claimed.update((c, None) for c in e["classes"] if isinstance(c, str))
    try:
        store = store_for(key)
        if store is not None:
            ok = [e for e in entries[:1] if isinstance(e.get("entry_sha256"), str) and _HEX64.fullmatch(e["entry_sha256"])]
            a, _ = store.find(run_dir, ok, lambda: read_regular_file(run_dir / layout.WEIGHTS_NAME))
            if a is not None:
                claimed.update((c, None) for c in a["forgotten_classes"])
    except (OSError, ValueError):
        pass
    return list(claimed)
