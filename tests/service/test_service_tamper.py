"""A ledger that does not verify stops every forget (library, CLI, HTTP) and is reported, never a traceback.

Each tampering below is applied to a run with two committed forgets (four entries). Then: the library's
forget raises LedgerError, the CLI's exits 2 with one line, `ledger verify` exits 1 or 2 with one line,
and the run directory is byte-identical afterwards.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from promptforget.cli import main
from promptforget.store import durable
from promptforget.store.layout import LEDGER_NAME
from promptforget.store.ledger import KEY_ENV, Ledger, LedgerError, LedgerKey, canonical, entry_hash, verify

KEY_HEX = "5e" * 8 + "a1b2c3d4e5f60718293a4b5c6d7e8f90" + "17" * 8
OTHER_KEY_HEX = "c0ffee" * 10 + "0123"


def snapshot(d):
    """Every path under ``d`` with its bytes (None for a directory)."""
    out = {}
    for root, dirs, names in os.walk(d):
        for n in dirs:
            out[os.path.relpath(os.path.join(root, n), d)] = None
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = f.read()
    return out


def lines(run):
    return (run / LEDGER_NAME).read_bytes().splitlines(keepends=True)


def write_lines(run, ls):
    (run / LEDGER_NAME).write_bytes(b"".join(ls))


def write_entries(run, entries):
    write_lines(run, [canonical(e) + b"\n" for e in entries])


def rehash_chain(entries, key: LedgerKey | None = None, strip_hmac=False):
    """What a forger does: fix every seq, prev_sha256 and entry_sha256 (and sign, if they have a key)."""
    prev = "0" * 64
    for i, e in enumerate(entries, 1):
        e["seq"], e["prev_sha256"] = i, prev
        if strip_hmac:
            e.pop("hmac", None)
            e.pop("key_id", None)
        if key is not None:
            e["key_id"] = key.key_id
        e["entry_sha256"] = entry_hash(e)
        if key is not None:
            e["hmac"] = key.sign(e["entry_sha256"])
        prev = e["entry_sha256"]
    return entries


# --------------------------------------------------------------------------- the tamperings
def edited_byte(run):
    raw = bytearray((run / LEDGER_NAME).read_bytes())
    i = raw.index(b'"reason":"first"') + len('"reason":"f')
    raw[i] = ord("F")
    (run / LEDGER_NAME).write_bytes(bytes(raw))


def edited_reason(run):
    e = Ledger(run).read()
    e[3]["reason"] = "nothing to see"
    write_entries(run, e)


def deleted_first_line(run):
    write_lines(run, lines(run)[1:])


def deleted_middle_line(run):
    ls = lines(run)
    write_lines(run, ls[:1] + ls[2:])


def deleted_last_forget(run):
    write_lines(run, lines(run)[:2])  # pending + commit of the second forget gone


def swapped_lines(run):
    ls = lines(run)
    write_lines(run, [ls[1], ls[0]] + ls[2:])


def reordered_forgets(run):
    ls = lines(run)
    write_lines(run, ls[2:] + ls[:2])


def duplicated_line(run):
    ls = lines(run)
    write_lines(run, ls[:2] + [ls[1]] + ls[2:])


def duplicated_last_line(run):
    ls = lines(run)
    write_lines(run, ls + [ls[-1]])


def forged_commit_bad_hash(run):
    e = Ledger(run).read()
    forged = dict(e[3], seq=5, prev_sha256=e[3]["entry_sha256"], classes=["beta"], entry_sha256="ab" * 32)
    write_entries(run, e + [forged])


def forged_entry_inserted(run):
    e = Ledger(run).read()
    forged = dict(e[1], reason="inserted")
    write_entries(run, e[:2] + [forged] + e[2:])


def ledger_deleted(run):
    (run / LEDGER_NAME).unlink()


def ledger_emptied(run):
    (run / LEDGER_NAME).write_bytes(b"")


def commit_classes_rewritten(run):
    e = Ledger(run).read()
    e[1]["classes"] = ["beta"]  # claim beta was forgotten, hashes recomputed after it (no key)
    write_entries(run, rehash_chain(e))


def not_json_line(run):
    ls = lines(run)
    write_lines(run, ls[:2] + [b"{not json\n"] + ls[2:])


def json_array_line(run):
    ls = lines(run)
    write_lines(run, ls[:2] + [b"[1, 2]\n"] + ls[2:])


def commit_without_classes(run):
    e = Ledger(run).read()
    del e[3]["classes"]
    write_entries(run, e)


def string_seq(run):
    e = Ledger(run).read()
    e[2]["seq"] = "3"
    write_entries(run, e)


def pending_without_fields(run):
    e = Ledger(run).read()
    write_entries(run, e + [{"event": "pending", "seq": 5, "prev_sha256": e[-1]["entry_sha256"],
                             "entry_sha256": "cd" * 32, "time": "2026-01-01T00:00:00Z"}])


def ledger_is_a_directory(run):
    (run / LEDGER_NAME).unlink()
    (run / LEDGER_NAME).mkdir()


def artefact_restored_from_backup(run):
    shutil.copy2(run.parent / "backup.safetensors", run / "model.safetensors")


# With the ledger key set (the ledger was written signed):
def rewritten_with_recomputed_hashes(run):
    e = Ledger(run).read()
    for x in e:
        x["reason"], x["time"] = "routine", "2020-01-01T00:00:00.000000Z"
    write_entries(run, rehash_chain(e))  # every hash fixed; the old hmacs no longer match


def rewritten_and_unsigned(run):
    e = Ledger(run).read()
    e[1]["reason"] = "routine"
    write_entries(run, rehash_chain(e, strip_hmac=True))


def forged_pending_abort(run):
    """A self-consistent pending + abort appended by someone without the key."""
    e = Ledger(run).read()
    p = {k: v for k, v in e[2].items() if k not in ("hmac", "key_id", "entry_sha256")}
    p.update(seq=5, prev_sha256=e[-1]["entry_sha256"], request_id="forged", reason="forged")
    p["entry_sha256"] = entry_hash(p)
    a = {"event": "abort", "seq": 6, "prev_sha256": p["entry_sha256"], "pending_seq": 5, "request_id": "forged",
         "time": p["time"]}
    a["entry_sha256"] = entry_hash(a)
    write_entries(run, e + [p, a])


def signed_with_another_key(run):
    write_entries(run, rehash_chain(Ledger(run).read(), key=LedgerKey(bytes.fromhex(OTHER_KEY_HEX))))


def bad_hmac(run):
    e = Ledger(run).read()
    e[2]["hmac"] = "00" * 32
    write_entries(run, e)


TAMPERINGS = [  # (tampering, the ledger is signed and the key is set)
    (edited_byte, False), (edited_reason, False), (deleted_first_line, False), (deleted_middle_line, False),
    (deleted_last_forget, False), (swapped_lines, False), (reordered_forgets, False), (duplicated_line, False),
    (duplicated_last_line, False), (forged_commit_bad_hash, False), (forged_entry_inserted, False),
    (ledger_deleted, False), (ledger_emptied, False), (commit_classes_rewritten, False), (not_json_line, False),
    (json_array_line, False), (commit_without_classes, False), (string_seq, False), (pending_without_fields, False),
    (ledger_is_a_directory, False), (artefact_restored_from_backup, False),
    (rewritten_with_recomputed_hashes, True), (rewritten_and_unsigned, True), (forged_pending_abort, True),
    (signed_with_another_key, True), (bad_hmac, True), (edited_reason, True), (pending_without_fields, True),
]


@pytest.fixture
def tampered(text_run, monkeypatch, request):
    tamper, keyed = request.param
    if keyed:
        monkeypatch.setenv(KEY_ENV, KEY_HEX)
    else:
        monkeypatch.delenv(KEY_ENV, raising=False)
    shutil.copy2(text_run / "model.safetensors", text_run.parent / "backup.safetensors")
    durable.forget(text_run, ["alpha"], reason="first", request_id="r1")
    durable.forget(text_run, ["gamma"], reason="second", request_id="r2")
    assert verify(text_run, LedgerKey(bytes.fromhex(KEY_HEX)) if keyed else None)["ok"]
    assert ("hmac" in Ledger(text_run).read()[0]) == keyed
    tamper(text_run)
    return text_run


def _one_line(err: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) >= 1
    for line in err.strip().splitlines():
        assert line.startswith(("promptforget", "[ledger]")), err


@pytest.mark.parametrize("tampered", TAMPERINGS, indirect=True,
                         ids=[f"{t.__name__}{'-keyed' if k else ''}" for t, k in TAMPERINGS])
def test_a_tampered_ledger_stops_forgets_and_is_reported(tampered, capsys):
    run = tampered
    before = snapshot(run)
    with pytest.raises(LedgerError):
        durable.forget(run, ["beta"], reason="after tampering", request_id="r3")
    assert snapshot(run) == before
    capsys.readouterr()
    assert main(["forget", str(run), "--classes", "beta", "--request-id", "r4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "error:" in err, err
    assert snapshot(run) == before
    code = main(["ledger", "verify", str(run)])
    out = capsys.readouterr()
    assert code in (1, 2), out
    _one_line(out.err)
    assert snapshot(run) == before
    assert not verify(run, LedgerKey(bytes.fromhex(KEY_HEX)))["ok"]


@pytest.mark.parametrize("tampered", [(edited_reason, False), (commit_without_classes, False),
                                      (ledger_is_a_directory, False), (rewritten_with_recomputed_hashes, True)],
                         indirect=True, ids=["edited", "no-classes", "directory", "recomputed-keyed"])
def test_a_server_on_a_tampered_ledger_is_not_ready_and_refuses_forgets(tampered, serve, admin_token):
    run = tampered
    before = snapshot(run)
    h = {"Authorization": f"Bearer {admin_token}"}
    with serve(run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.get("/health")
        assert r.status_code == 503 and "ledger" in r.json()["detail"], r.text
        assert c.get("/health/live").status_code == 200
        r = c.post("/forget", json={"classes": ["beta"], "reason": "x", "request_id": "h1"}, headers=h)
        assert r.status_code == 409 and "nothing was forgotten" in r.json()["detail"], r.text
        assert c.get("/ledger", headers=h).status_code in (200, 409)
        rep = c.get("/ledger/verify", headers=h)
        assert rep.status_code == 200 and not rep.json()["ok"] and rep.json()["problems"]
        assert c.post("/predict", json={"texts": ["still serving"]}).json()["predictions"][0]["label"] == "beta"
    assert snapshot(run) == before


def test_malformed_entries_name_the_line_and_the_field(ledgered, capsys):
    run = ledgered
    commit_without_classes(run)
    with pytest.raises(LedgerError, match=r"line 4: commit has no 'classes'"):
        Ledger(run).read()
    assert main(["ledger", "verify", str(run)]) == 1  # a report of the problems, not a refusal to look
    assert "line 4: commit has no 'classes'" in capsys.readouterr().err
    write_lines(run, lines(run)[:3])
    string_seq(run)
    with pytest.raises(LedgerError, match=r"line 3: pending field 'seq' must be a positive integer"):
        durable.forget(run, ["beta"], request_id="r3")


def test_a_repaired_ledger_works_again_without_a_restart(text_run, serve, admin_token):
    durable.forget(text_run, ["alpha"], reason="first", request_id="r1")
    good = (text_run / LEDGER_NAME).read_bytes()
    edited_byte_in_first = good.replace(b'"classes":["alpha"]', b'"classes":["alphA"]', 1)
    (text_run / LEDGER_NAME).write_bytes(edited_byte_in_first)
    h = {"Authorization": f"Bearer {admin_token}"}
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/health").status_code == 503
        (text_run / LEDGER_NAME).write_bytes(good)  # restored from the operator's copy
        assert c.get("/health").status_code == 200
        r = c.post("/forget", json={"classes": ["beta"], "reason": "x", "request_id": "r2"}, headers=h)
        assert r.status_code == 200, r.text


@pytest.fixture
def ledgered(text_run, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    durable.forget(text_run, ["alpha"], reason="first", request_id="r1")
    durable.forget(text_run, ["gamma"], reason="second", request_id="r2")
    return text_run

