"""The one forget path: used by ``promptforget forget``, ``pfm.forget_run`` and the service's ``POST /forget``.

Two files change in a forget: the artefact (``model.safetensors``, the single source of truth for
which prompts exist) and the ledger (``forget_ledger.jsonl``). A crash can stop the process between
any two steps, so the two are kept consistent with an intent/commit protocol:

1. lock the run (a thread lock + ``flock`` on the run directory: one forget at a time, across processes);
2. recover (below), then answer a repeated request id from the ledger without changing anything;
3. validate the classes against the artefact (unknown / already forgotten / none left: nothing written);
4. build the new artefact bytes in memory (the old file minus the prompt tensors; every other byte
   kept) and hash them;
5. append ``pending`` (classes, reason, request id, removed-prompt hashes, artefact hash before and the
   exact hash after) and fsync it                                       -- crash point ``after_pending``
6. replace the artefact atomically: temp file, fsync, rename, fsync dir -- ``mid_artefact`` (a torn
   temp file), ``after_artefact``
7. call ``on_artefact`` (the service swaps its in-memory prompt bank and waits out in-flight
   predictions that still hold the old one)                              -- ``before_commit``
8. append ``commit`` and fsync it                                      -- ``mid_commit`` (a torn line),
   ``after_commit``; only now is the forget acknowledged.

Before step 3 the whole ledger is verified against the artefact (:func:`promptforget.store.ledger.check_run`:
schema, chain, HMACs when a ledger key is set, the artefact's state); any problem is a :class:`LedgerError`
and nothing is written. A disk error (full, read-only) is a :class:`StorageError`: nothing acknowledged,
and a pending whose artefact was never replaced is aborted (or left for recovery to abort).

Recovery (at service start, ``ledger verify``, and before every forget), under the lock: cut a torn
last ledger line (never acknowledged), delete leftover temp files (they may hold the old prompt's
bytes), and resolve a dangling ``pending`` by hashing the artefact: equal to the expected after-hash
-> append ``commit`` (roll forward, ``recovered: true``); equal to the before-hash -> append ``abort``
(nothing happened; the request id may be retried); anything else -> :class:`LedgerError`, no forget
proceeds until a person looks. Recovery appends only to a chain that checks out, and first checks it
against its anchor (:func:`promptforget.store.anchor.reconcile`): a ledger cut behind its anchored head is
refused, so an ``abort`` never undoes a commit that was cut away (a signed ledger with no anchor store gets
no ``abort`` at all). So after any crash the pair is either before or after, never half.

Exact forgetting (:func:`install_exact`, called by :mod:`promptforget.pfm.exact` once a retrain
without the forgotten classes' data is done): ``forget(..., exact=True)`` records the request in the
pending and commit (``exact_requested``). The retrain runs outside the lock; then, under it, the
artefact must still be the state the retrain started from (else the retrain is stale: another forget
came in, and the caller retrains again, covering it too). ``exact_pending`` (before- and after-hash)
-- ``after_exact_pending``; atomic replace -- ``mid_exact_artefact``, ``after_exact_artefact``;
``on_artefact`` -- ``before_exact_commit``; ``exact``. Recovery resolves a dangling ``exact_pending``
as a pending (roll forward to ``exact``, or ``exact_abort``: the instant state stays and the request
stays open for the next retrain).

Crash injection for tests: ``PROMPTFORGET_CRASH_AT=<point>`` makes the process ``os._exit(86)`` there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

from promptforget.store import anchor, layout
from promptforget.store.artefact import Safetensors, remove_unreferenced_files, write_referenced_files
from promptforget.store.layout import WEIGHTS_NAME
from promptforget.store.ledger import (EXACT_FIELDS, Ledger, LedgerError, LedgerKey, check_chain, check_run,
                                       check_signatures, committed, dangling_pending, forgotten_by_ledger,
                                       forgotten_prompt_problems, is_signed, load_key, open_exact_requests, utc_now)
from promptforget.utils.io import atomic_write_bytes, read_regular_file, remove_stale_temps

CRASH_ENV = "PROMPTFORGET_CRASH_AT"
CRASH_POINTS = ("after_pending", "mid_artefact", "after_artefact", "before_commit", "mid_commit", "after_commit")
EXACT_CRASH_POINTS = ("mid_exact_training", "after_exact_pending", "mid_exact_artefact", "after_exact_artefact",
                      "before_exact_commit")
CRASH_EXIT_CODE = 86
REQUEST_ID_CHARS = r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}"
REQUEST_ID_RE = re.compile(REQUEST_ID_CHARS)  # use fullmatch: "$" would also accept a trailing newline
MAX_REASON_CHARS = 2000


# ---------------------------------------------------------------------- errors (all ValueError: bad input)
class ForgetError(ValueError):
    status = 400  # HTTP status the service answers with


class UnknownClassNameError(ForgetError):
    status = 404


class AlreadyForgottenError(ForgetError):
    status = 409


class RequestIdConflictError(ForgetError):
    status = 409


class UnknownExampleError(ForgetError):
    status = 404


class ArtefactRewrite(Protocol):
    """How a model family rewrites its artefact for a forget (PFM needs none: its class tensors are dropped
    byte for byte). The analytic family's subtracts the rows and solves its head again."""

    exact: bool  # True: the rewritten artefact equals a retrain without the forgotten data

    def ledger_hashes(self, examples: list[str]) -> list[str]:
        """The keyed hashes the ledger records for example ids (never the ids themselves)."""

    def __call__(self, raw: bytes, classes: list[str], examples: list[str]):
        """The new artefact: ``.model``, the bytes of model.safetensors, and ``.shards``, the files it
        references by hash (relative path -> bytes) that may need writing first
        (:mod:`promptforget.store.artefact`); an :class:`UnknownExampleError` for an id not in the
        training set. Writes nothing."""


class StorageError(ForgetError):
    """The disk refused a write (full, read-only, no permission); nothing was acknowledged."""

    status = 503

    @classmethod
    def from_os(cls, e: OSError, doing: str, after: str = "nothing was forgotten") -> "StorageError":
        err = cls(f"disk error while {doing}: {e.strerror or e} ({errno.errorcode.get(e.errno, e.errno)}); {after}")
        err.status = 507 if e.errno in (errno.ENOSPC, errno.EDQUOT) else 503
        return err


# ---------------------------------------------------------------------- crash injection
def crash(point: str) -> None:
    """Crash injection: exit here when ``$PROMPTFORGET_CRASH_AT`` names ``point`` (tests only)."""
    _crash(point)


def _crash(point: str) -> None:
    if os.environ.get(CRASH_ENV) == point:
        os._exit(CRASH_EXIT_CODE)


def _crash_mid_write(fd: int, line: bytes) -> None:
    if os.environ.get(CRASH_ENV) == "mid_commit":
        os.write(fd, line[: len(line) // 2])
        os.fsync(fd)
        os._exit(CRASH_EXIT_CODE)


def _crash_mid_artefact(run_dir: Path, data: bytes, point: str = "mid_artefact") -> None:
    if os.environ.get(CRASH_ENV) == point:
        # What atomic_write_bytes leaves when killed while writing: a partial temp file, no rename.
        fd, _ = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", suffix=".tmp", dir=run_dir)
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        os._exit(CRASH_EXIT_CODE)


# ---------------------------------------------------------------------- locking
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextmanager
def run_lock(run_dir: str | os.PathLike, timeout: float = 60.0):
    """Exclusive lock on a run: a per-process thread lock plus ``flock`` on the directory itself
    (no lock file, so a refused forget leaves the directory byte-identical)."""
    key = os.path.realpath(run_dir)
    with _thread_locks_guard:
        tl = _thread_locks.setdefault(key, threading.Lock())
    if not tl.acquire(timeout=timeout):
        raise TimeoutError(f"{run_dir}: another forget holds the lock for over {timeout:.0f}s")
    try:
        fd = os.open(key, os.O_RDONLY)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{run_dir}: another process holds the forget lock") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # releases the flock
    finally:
        tl.release()


# ---------------------------------------------------------------------- state of a run
def artefact_state(run_dir: str | os.PathLike) -> dict:
    """Which classes the artefact still holds, and its hash."""
    run_dir = Path(run_dir)
    names = layout.class_names(run_dir)
    raw = read_regular_file(run_dir / WEIGHTS_NAME)
    active = layout.active_classes(names, Safetensors.parse(raw, str(run_dir / WEIGHTS_NAME)).names())
    return {
        "class_names": names,
        "active_classes": active,
        "forgotten_classes": [c for c in names if c not in active],
        "artefact_sha256": hashlib.sha256(raw).hexdigest(),
    }


# ---------------------------------------------------------------------- recovery
def recover(run_dir: str | os.PathLike, key: LedgerKey | None = None) -> dict:
    """Bring artefact and ledger to a consistent state after a crash (see the module docstring).
    ``key``: the ledger key (default: from the environment, see :func:`promptforget.store.ledger.load_key`)."""
    key = key if key is not None else load_key()
    with run_lock(run_dir):
        return _recover_locked(Path(run_dir), key)


def _recover_locked(run_dir: Path, key: LedgerKey | None) -> dict:
    if (run_dir / WEIGHTS_NAME).is_symlink():
        raise LedgerError(f"{run_dir / WEIGHTS_NAME}: is a symbolic link (not followed); nothing was written")
    ledger = Ledger(run_dir, key)
    report = {"torn_tail_bytes": ledger.repair_torn_tail() if ledger.exists() else 0,
              "stale_temps": remove_stale_temps(run_dir), "resolved": None}
    entries = ledger.read()
    entries, report["anchor_repaired"] = anchor.reconcile(ledger, entries)  # refuses a rolled-back ledger
    p = dangling_pending(entries)
    if p is None:
        return report
    problems = check_chain(entries) + check_signatures(entries, key)
    if key is None and is_signed(entries):
        problems.append("the ledger is signed and no ledger key was given")
    if problems:
        raise LedgerError(f"{run_dir}: cannot resolve the pending forget seq {p['seq']}: the ledger does not "
                          f"verify ({problems[0]}); nothing was written")
    sha = hashlib.sha256((run_dir / WEIGHTS_NAME).read_bytes()).hexdigest()
    if p["event"] == "exact_pending":
        return _recover_exact(run_dir, ledger, entries, p, sha, report)
    if sha == p["artefact_after_sha256"]:
        ledger.append(_commit_event(p, recovered=True), entries)
        report["resolved"] = {"pending_seq": p["seq"], "action": "commit", "request_id": p["request_id"]}
    elif sha == p["artefact_before_sha256"]:
        if ledger.anchors is None and is_signed(entries):  # a signed abort must not undo a commit cut from the ledger
            raise LedgerError(f"{run_dir}: the pending forget seq {p['seq']} of a signed ledger is only aborted against "
                              f"an anchor store ({anchor.ANCHOR_DIR_ENV}, or a key file beside which anchors are kept)")
        ledger.append({"event": "abort", "pending_seq": p["seq"], "request_id": p["request_id"],
                       "note": "crashed before the artefact was replaced; nothing was forgotten"}, entries)
        report["resolved"] = {"pending_seq": p["seq"], "action": "abort", "request_id": p["request_id"]}
    else:
        raise LedgerError(
            f"{run_dir}: pending forget seq {p['seq']} ({p['classes']}) is unresolved and the artefact "
            f"(sha256 {sha[:12]}...) is neither its before nor its after state; refusing to continue"
        )
    report["unreferenced_removed"] = _remove_unreferenced(run_dir)  # the new or the old files, whichever lost
    return report


def _recover_exact(run_dir: Path, ledger: Ledger, entries: list[dict], p: dict, sha: str, report: dict) -> dict:
    if sha == p["artefact_after_sha256"]:
        ledger.append(_exact_event(p, recovered=True), entries)
        report["resolved"] = {"pending_seq": p["seq"], "action": "exact", "request_ids": p["request_ids"]}
    elif sha == p["artefact_before_sha256"]:
        ledger.append({"event": "exact_abort", "pending_seq": p["seq"],
                       "note": "crashed before the retrained artefact was in place; the instant forget stands "
                               "and the exact retrain runs again"}, entries)
        report["resolved"] = {"pending_seq": p["seq"], "action": "exact_abort", "request_ids": p["request_ids"]}
    else:
        raise LedgerError(f"{run_dir}: exact retrain seq {p['seq']} is unresolved and the artefact (sha256 "
                          f"{sha[:12]}...) is neither its before nor its after state; refusing to continue")
    return report


def _commit_event(p: dict, recovered: bool = False) -> dict:
    keep = ("request_id", "classes", "reason", "source", "removed_prompt_sha256",
            "artefact_before_sha256", "artefact_after_sha256")
    extra = {k: p[k] for k in ("examples", "exact_requested", "exact_at_commit") if k in p}
    return {"event": "commit", "pending_seq": p["seq"], **{k: p[k] for k in keep}, **extra, "recovered": recovered}


def _exact_event(p: dict, recovered: bool = False) -> dict:
    return {"event": "exact", "pending_seq": p["seq"], **{k: p[k] for k in EXACT_FIELDS}, "recovered": recovered}


# ---------------------------------------------------------------------- the forget
@dataclass
class ForgetResult:
    request_id: str
    classes: list[str]
    reason: str
    replayed: bool  # True: the request id was already committed; nothing changed
    ledger_seq: int  # seq of the commit entry
    committed_at: str
    artefact_before_sha256: str
    artefact_after_sha256: str
    removed_prompt_sha256: dict[str, str]
    active_classes: list[str]
    forgotten_classes: list[str]
    recovery: dict | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    exact_requested: bool = False
    examples: list[str] = field(default_factory=list)  # keyed hashes of the forgotten examples' ids
    exact_at_commit: bool = False  # the committed artefact already equals a retrain without the data

    def to_dict(self) -> dict:
        return asdict(self)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry
        return False


MAX_EXAMPLES_PER_REQUEST = 50_000  # their hashes fit one ledger line (store.ledger.MAX_LINE_BYTES)


def validate_request(classes, reason: str, request_id: str | None, examples=()) -> tuple[list[str], str, str]:
    if isinstance(classes, str):
        classes = [classes]
    classes = list(classes) if isinstance(classes, Iterable) else classes
    examples = list(examples) if isinstance(examples, Iterable) and not isinstance(examples, str) else examples
    if not isinstance(examples, list) or not all(isinstance(x, str) and x and _utf8(x) for x in examples):
        raise ForgetError("forget: examples must be a list of example ids (non-empty UTF-8 strings)")
    if len(examples) > MAX_EXAMPLES_PER_REQUEST or len(set(examples)) != len(examples):
        raise ForgetError(f"forget: at most {MAX_EXAMPLES_PER_REQUEST:,} distinct example ids per request")
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes) or not (classes or examples):
        raise ForgetError("forget: give one or more class names or example ids (non-empty strings)")
    if len(set(classes)) != len(classes):
        raise ForgetError(f"forget: duplicate class names in {classes}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ForgetError(f"forget: reason must be a string of at most {MAX_REASON_CHARS} characters")
    if request_id is None:
        request_id = f"req-{uuid.uuid4()}"
    if not isinstance(request_id, str) or not REQUEST_ID_RE.fullmatch(request_id):
        raise ForgetError("forget: request_id must be 1-128 characters of letters, digits and ._:@/+=- "
                          "(starting with a letter or digit)")
    return classes, reason, request_id


def forget(
    run_dir: str | os.PathLike,
    classes: str | Iterable[str],
    reason: str = "",
    request_id: str | None = None,
    source: str = "cli",
    on_artefact: Callable[[list[str]], None] | None = None,
    key: LedgerKey | None = None,
    exact: bool = False,
    examples: Iterable[str] = (),
    rewrite: ArtefactRewrite | None = None,
) -> ForgetResult:
    """Forget ``classes`` durably (see the module docstring). Returns once artefact and ledger are on disk.

    ``on_artefact(active_classes)`` runs after the artefact is replaced and before the commit: a live
    model uses it to drop the prompts from memory. A repeated ``request_id`` with the same classes
    returns the recorded result (``replayed=True``); with other classes it is an error. ``key`` signs
    the new entries and checks the old ones (default: from the environment). ``exact=True`` records that
    an exact retrain is asked for (``exact_requested``); :mod:`promptforget.pfm.exact` runs it.

    ``examples`` (ids of training examples) and ``rewrite`` (the family's :class:`ArtefactRewrite`) come
    together: a family that can forget single examples rewrites its artefact; the ledger records only keyed
    hashes of the ids. An exact rewrite marks the commit ``exact_at_commit``: nothing is left to retrain.
    """
    t0 = time.perf_counter()
    classes, reason, request_id = validate_request(classes, reason, request_id, examples)
    examples = list(examples)
    if examples and rewrite is None:
        raise ForgetError("forget: this run forgets whole classes only (a PFM binds classes to prompts, not "
                          "examples); single examples need an analytic run (train --family analytic)")
    exact = exact and not (rewrite is not None and rewrite.exact)  # an exact rewrite needs no retrain
    run_dir = Path(run_dir)
    names = layout.class_names(run_dir)
    key = key if key is not None else load_key()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(1000 * (now - since), 3)
        return now

    with run_lock(run_dir):
        t = lap("lock", t0)
        recovery = _recover_locked(run_dir, key)
        ledger = Ledger(run_dir, key)
        entries = ledger.read()
        weights = run_dir / WEIGHTS_NAME
        raw = weights.read_bytes()
        problems, facts = check_run(entries, raw, names, key, str(weights))
        if problems:
            more = f" (and {len(problems) - 1} more: `promptforget ledger verify`)" if len(problems) > 1 else ""
            raise LedgerError(f"the ledger does not verify, nothing was written: {problems[0]}{more}")
        _remove_unreferenced(run_dir, raw)  # left by a crash after the last commit, if any
        hashes = rewrite.ledger_hashes(examples) if examples else []
        for e in committed(entries):
            if e["request_id"] == request_id:
                if sorted(e["classes"]) != sorted(classes) or sorted(e.get("examples", [])) != sorted(hashes):
                    raise RequestIdConflictError(
                        f"request_id {request_id!r} was already used for another forget (seq {e['seq']})")
                if exact and not e.get("exact_requested"):
                    raise RequestIdConflictError(f"request_id {request_id!r} was an instant forget (seq {e['seq']}); "
                                                 "ask for the exact one with a new request id")
                state = artefact_state(run_dir)
                if on_artefact is not None:
                    on_artefact(state["active_classes"])
                return _result(e, replayed=True, state=state, recovery=recovery, timings=timings)
        t = lap("recover", t)

        st = Safetensors.parse(raw, str(weights))
        active = layout.active_classes(names, st.names())
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise UnknownClassNameError(f"unknown class {unknown[0]!r}; classes are {names}")
        gone = [c for c in classes if c not in active]
        if gone:
            raise AlreadyForgottenError(f"class {gone[0]!r} is already forgotten")
        if len(active) - len(classes) < 1:
            raise ForgetError("forget: at least one class must remain (forgetting every class leaves no model)")
        if rewrite is None:
            new, side_files = st.without({n for c in classes for n in layout.class_tensor_names(c, st.names())}), {}
        else:
            rewritten = rewrite(raw, classes, examples)
            new, side_files = rewritten.model, rewritten.shards
            left = layout.active_classes(names, Safetensors.parse(new, "the rewritten artefact").names())
            if left != [c for c in active if c not in classes]:
                lost = [c for c in active if c not in classes and c not in left]
                if lost:
                    raise ForgetError(f"forget: these examples are every example left of {lost}: forget the class "
                                      "instead (--classes), so the ledger says so")
                raise ForgetError(f"forget: the rewritten artefact holds the classes {left}, not the remaining "
                                  f"{[c for c in active if c not in classes]}; nothing was written")
        pending = {
            "event": "pending", "request_id": request_id, "classes": classes, "reason": reason, "source": source,
            "removed_prompt_sha256": {c: st.tensor_sha256(layout.class_marker(c, st.names())) for c in classes},
            "artefact_before_sha256": facts["artefact_sha256"],
            "artefact_after_sha256": hashlib.sha256(new).hexdigest(),
            **({"examples": sorted(hashes)} if hashes else {}),
            **({"exact_requested": True} if exact else {}),
            **({"exact_at_commit": True} if rewrite is not None and rewrite.exact else {}),
        }
        del raw, st  # the old prompt bytes need not live longer than necessary
        t = lap("prepare", t)

        try:
            p = ledger.append(pending, entries)
        except OSError as e:  # a torn pending line is never acknowledged; recovery cuts it
            raise StorageError.from_os(e, "writing the ledger") from None
        entries.append(p)
        _crash("after_pending")
        t = lap("ledger_pending", t)

        _crash_mid_artefact(run_dir, new)
        try:
            write_referenced_files(run_dir, side_files)  # before the artefact that names them
            atomic_write_bytes(weights, new)
        except OSError as e:
            raise _artefact_write_failed(e, ledger, p, entries, weights) from None
        _crash("after_artefact")
        t = lap("artefact_write", t)

        remaining = [c for c in active if c not in classes]
        if on_artefact is not None:
            on_artefact(remaining)
        _crash("before_commit")
        t = lap("swap", t)

        try:
            c = ledger.append(_commit_event(p), entries, before_write=_crash_mid_write)
        except OSError as e:
            raise StorageError.from_os(e, "writing the ledger's commit", after="the artefact no longer holds the "
                                       "prompts; the next forget or start commits it (recovery)") from None
        _crash("after_commit")
        t = lap("ledger_commit", t)
        _remove_unreferenced(run_dir, new)
        lap("cleanup", t)
    timings["total"] = round(1000 * (time.perf_counter() - t0), 3)
    state = {"active_classes": remaining, "forgotten_classes": [n for n in names if n not in remaining]}
    return _result(c, replayed=False, state=state, recovery=recovery, timings=timings)


def _remove_unreferenced(run_dir: Path, raw: bytes | None = None) -> list[str]:
    """Files the committed artefact no longer references (a forgotten class's or example's features):
    deleted now; a failure is logged and left to the next forget or start, which try again."""
    try:
        return remove_unreferenced_files(run_dir, raw)
    except (OSError, ValueError) as e:
        import logging

        logging.getLogger("promptforget.store").warning("%s: could not delete unreferenced files yet (%s); the next "
                                                        "forget or start tries again", run_dir, e)
        return []


def _artefact_write_failed(e: OSError, ledger: Ledger, p: dict, entries: list[dict], weights: Path) -> StorageError:
    """The artefact write failed: if the old artefact is still in place, abort the pending (best effort;
    recovery aborts it anyway), so the request id may be retried."""
    try:
        if hashlib.sha256(weights.read_bytes()).hexdigest() == p["artefact_before_sha256"]:
            ledger.append({"event": "abort", "pending_seq": p["seq"], "request_id": p["request_id"],
                           "note": f"the artefact could not be written ({e.strerror or e}); nothing was forgotten"},
                          entries)
    except OSError:
        pass
    return StorageError.from_os(e, "writing the artefact")


# ---------------------------------------------------------------------- the exact retrain's artefact
def exact_start(run_dir: str | os.PathLike, key: LedgerKey | None = None) -> dict | None:
    """What an exact retrain must do now, under the lock after recovery: None when no request is open, else
    ``{"request_ids", "classes" (every forgotten class), "artefact_sha256" (the state it starts from)}``."""
    key = key if key is not None else load_key()
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        _recover_locked(run_dir, key)
        entries = _verified_entries(run_dir, key)
        requests = open_exact_requests(entries)
        if not requests:
            return None
        return {"request_ids": [e["request_id"] for e in requests], "classes": forgotten_by_ledger(entries),
                "artefact_sha256": hashlib.sha256((run_dir / WEIGHTS_NAME).read_bytes()).hexdigest()}


def _verified_entries(run_dir: Path, key: LedgerKey | None) -> list[dict]:
    entries = Ledger(run_dir, key).read()
    weights = run_dir / WEIGHTS_NAME
    problems, _ = check_run(entries, weights.read_bytes(), layout.class_names(run_dir), key, str(weights))
    if problems:
        raise LedgerError(f"the ledger does not verify, nothing was written: {problems[0]}")
    return entries


def install_exact(
    run_dir: str | os.PathLike,
    new: bytes,
    start: dict,
    config_sha256: str,
    train_manifest_sha256: str,
    n_train: int,
    on_artefact: Callable[[], None] | None = None,
    key: LedgerKey | None = None,
) -> dict | None:
    """Replace the artefact with the retrain's bytes ``new`` (trained from ``start``, :func:`exact_start`)
    and record it. Returns the ``exact`` entry, or None when the retrain is stale (a forget came in while it
    trained: the caller retrains again). ``on_artefact()`` runs after the replace, before the commit."""
    key = key if key is not None else load_key()
    run_dir = Path(run_dir)
    names = layout.class_names(run_dir)
    with run_lock(run_dir):
        _recover_locked(run_dir, key)
        entries = _verified_entries(run_dir, key)
        weights = run_dir / WEIGHTS_NAME
        before = hashlib.sha256(weights.read_bytes()).hexdigest()
        if before != start["artefact_sha256"] or forgotten_by_ledger(entries) != start["classes"]:
            return None
        st = Safetensors.parse(new, "the retrained artefact")
        problems = forgotten_prompt_problems(entries, st)
        kept = layout.active_classes(names, st.names())
        if kept != [c for c in names if c not in start["classes"]]:
            problems.append(f"it holds the prompts of {kept}, not of every class still known")
        if problems:
            raise ValueError(f"the retrained artefact is wrong, nothing was written: {problems[0]}")
        covered = [e["request_id"] for e in open_exact_requests(entries)]
        pending = {"event": "exact_pending", "request_ids": covered, "classes": list(start["classes"]),
                   "config_sha256": config_sha256, "train_manifest_sha256": train_manifest_sha256, "n_train": n_train,
                   "artefact_before_sha256": before, "artefact_after_sha256": hashlib.sha256(new).hexdigest()}
        try:
            p = Ledger(run_dir, key).append(pending, entries)
        except OSError as e:
            raise StorageError.from_os(e, "writing the ledger", after="the instant forget stands") from None
        entries.append(p)
        _crash("after_exact_pending")
        _crash_mid_artefact(run_dir, new, "mid_exact_artefact")
        try:
            atomic_write_bytes(weights, new)
        except OSError as e:
            raise StorageError.from_os(e, "writing the retrained artefact",
                                       after="the instant forget stands; recovery aborts the retrain") from None
        _crash("after_exact_artefact")
        if on_artefact is not None:
            on_artefact()
        _crash("before_exact_commit")
        try:
            return Ledger(run_dir, key).append(_exact_event(p), entries)
        except OSError as e:
            raise StorageError.from_os(e, "writing the ledger's exact entry", after="the retrained artefact is in "
                                       "place; the next start records it (recovery)") from None


def _result(e: dict, replayed: bool, state: dict, recovery: dict | None, timings: dict) -> ForgetResult:
    return ForgetResult(
        request_id=e["request_id"], classes=list(e["classes"]), reason=e.get("reason", ""), replayed=replayed,
        ledger_seq=e["seq"], committed_at=e["time"], artefact_before_sha256=e["artefact_before_sha256"],
        artefact_after_sha256=e["artefact_after_sha256"], removed_prompt_sha256=dict(e["removed_prompt_sha256"]),
        active_classes=list(state["active_classes"]), forgotten_classes=list(state["forgotten_classes"]),
        recovery=recovery if (recovery and (recovery["resolved"] or recovery["torn_tail_bytes"] or recovery["stale_temps"])) else None,
        timings_ms=timings, exact_requested=bool(e.get("exact_requested")), examples=list(e.get("examples", [])),
        exact_at_commit=bool(e.get("exact_at_commit")),
    )


__all__ = ["forget", "recover", "artefact_state", "run_lock", "ForgetResult", "ForgetError", "UnknownClassNameError",
           "AlreadyForgottenError", "RequestIdConflictError", "UnknownExampleError", "ArtefactRewrite", "StorageError", "LedgerError", "CRASH_ENV", "CRASH_POINTS", "utc_now",
           "exact_start", "install_exact", "crash", "EXACT_CRASH_POINTS"]
