"""Issue 15: the ledger key and anchor, no stale answers across processes, bad text, disk errors, read
timeouts, auth before the body, and the token rules."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest

from promptforget.cli import main
from promptforget.store import durable
from promptforget.store.layout import LEDGER_NAME
from promptforget.store.ledger import KEY_ENV, KEY_FILE_ENV, Ledger, LedgerError, LedgerKey, canonical, entry_hash, verify

FORGET = {"classes": ["alpha"], "reason": "user request", "request_id": "req-1"}


def auth(tok):
    return {"Authorization": f"Bearer {tok}"}


def run_bytes(run):
    return b"".join(p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file())


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)


# --------------------------------------------------------------------------- 2. key and anchor
def test_keygen_writes_a_private_key_outside_the_run(text_run, tmp_path, capsys):
    key_file = tmp_path / "ledger.key"
    assert main(["ledger", "keygen", "--out", str(key_file)]) == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert main(["ledger", "keygen", "--out", str(key_file)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["ledger", "keygen", "--out", str(text_run / "ledger.key")]) == 2
    assert "inside the run directory" in capsys.readouterr().err and not (text_run / "ledger.key").exists()


def test_signed_ledger_catches_a_rewrite_with_recomputed_hashes(text_run, tmp_path, monkeypatch, capsys):
    key_file = tmp_path / "ledger.key"
    assert main(["ledger", "keygen", "--out", str(key_file)]) == 0
    secret = key_file.read_text().strip()
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    assert main(["forget", str(text_run), "--classes", "alpha", "--request-id", "k1"]) == 0
    entries = Ledger(text_run).read()
    assert all(e["key_id"] == LedgerKey(bytes.fromhex(secret)).key_id and len(e["hmac"]) == 64 for e in entries)
    assert secret.encode() not in run_bytes(text_run) and bytes.fromhex(secret) not in run_bytes(text_run)
    capsys.readouterr()
    assert main(["ledger", "verify", str(text_run)]) == 0
    assert "authenticated: every entry signed" in capsys.readouterr().out
    assert main(["ledger", "head", str(text_run)]) == 0
    anchor = capsys.readouterr().out.strip()
    assert anchor == f"2:{entries[-1]['entry_sha256']}"

    # rewrite history without the key, recomputing every hash
    prev = "0" * 64
    for e in entries:
        e["reason"], e["prev_sha256"] = "routine maintenance", prev
        e["entry_sha256"] = entry_hash(e)
        prev = e["entry_sha256"]
    (text_run / LEDGER_NAME).write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
    assert main(["ledger", "verify", str(text_run)]) == 1
    assert "hmac does not match" in capsys.readouterr().err
    # without the key only the chain can be checked: it holds, and the output says so
    monkeypatch.delenv(KEY_FILE_ENV)
    assert main(["ledger", "verify", str(text_run)]) == 1  # signed ledger, no key: nothing may be appended
    out = capsys.readouterr()
    assert "could only check the chain" in out.out and "no ledger key was given" in out.err
    assert verify(text_run)["authenticated"] is False
    # the anchor catches the rewrite with no key at all
    assert main(["ledger", "verify", str(text_run), "--expect-head", anchor]) == 1
    assert "anchor seq 2" in capsys.readouterr().err
    with pytest.raises(LedgerError, match="signed"):
        durable.forget(text_run, ["beta"], request_id="k2")


def test_anchor_on_an_unsigned_ledger(text_run, capsys):
    durable.forget(text_run, ["alpha"], request_id="a1")
    assert main(["ledger", "head", str(text_run), "--json"]) == 0
    import json

    h = json.loads(capsys.readouterr().out)
    durable.forget(text_run, ["beta"], request_id="a2")
    assert main(["ledger", "verify", str(text_run), "--expect-head", f"{h['seq']}:{h['entry_sha256']}"]) == 0
    assert main(["ledger", "verify", str(text_run), "--expect-head", h["entry_sha256"]]) == 0
    assert main(["ledger", "verify", str(text_run), "--expect-head", "2:" + "0" * 64]) == 1
    assert main(["ledger", "verify", str(text_run), "--expect-head", "nonsense"]) == 2
    assert "SEQ:HASH" in capsys.readouterr().err


def test_a_too_short_key_is_a_clear_error(text_run, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, "short")
    assert main(["forget", str(text_run), "--classes", "alpha"]) == 2
    assert "at least 16 bytes" in capsys.readouterr().err and not (text_run / LEDGER_NAME).exists()


# --------------------------------------------------------------------------- 4. no stale answers across processes
def _predict_loop(url, log, errors, stop, n_threads=3):
    def worker(i):
        with httpx.Client(base_url=url, timeout=30) as c:
            k = 0
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = c.post("/predict", json={"texts": [f"t{i}-{k}"]})
                    if r.status_code != 200:
                        errors.append(r.text)
                    else:
                        log.append((sent, r.json()["predictions"][0]["label"]))
                except Exception as e:  # noqa: BLE001 - recorded, the test fails on it
                    errors.append(repr(e))
                k += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    return threads


def test_no_prediction_after_a_cli_forget_returns_the_class(text_run, serve):
    log, errors, stop = [], [], threading.Event()
    with serve(text_run, poll_interval_s=0) as (url, _):  # no watcher: the per-request check alone
        threads = _predict_loop(url, log, errors, stop)
        time.sleep(0.3)
        r = subprocess.run([sys.executable, "-m", "promptforget.cli", "forget", str(text_run), "--classes", "alpha",
                            "--reason", "cli", "--request-id", "cli-1"], capture_output=True, text=True, timeout=120)
        acked = time.monotonic()
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert any(label == "alpha" for sent, label in log if sent < acked)
    after = [label for sent, label in log if sent > acked]
    assert after and "alpha" not in after


def test_two_servers_on_one_run_agree_after_a_forget(text_run, serve, admin_token):
    log, errors, stop = [], [], threading.Event()
    with serve(text_run, poll_interval_s=0) as (url_a, _), serve(text_run, poll_interval_s=0) as (url_b, _):
        threads = _predict_loop(url_b, log, errors, stop)
        time.sleep(0.3)
        r = httpx.post(f"{url_a}/forget", json=FORGET, headers=auth(admin_token), timeout=60)
        acked = time.monotonic()
        assert r.status_code == 200, r.text
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
        assert httpx.get(f"{url_b}/classes").json()["forgotten"] == ["alpha"]
    assert not errors, errors[:3]
    after = [label for sent, label in log if sent > acked]
    assert after and "alpha" not in after


def test_without_the_per_request_check_answers_are_stale(text_run, serve):
    # the check has teeth: with it off (and no watcher) the server keeps answering the forgotten class
    with serve(text_run, poll_interval_s=0, sync_every_request=False) as (url, _), httpx.Client(base_url=url) as c:
        durable.forget(text_run, ["alpha"], request_id="other-process")
        assert c.post("/predict", json={"texts": ["x"]}).json()["predictions"][0]["label"] == "alpha"


# --------------------------------------------------------------------------- 5. text the tokenizer cannot take
def test_lone_surrogate_and_tokenizer_failures_are_422(text_run, serve):
    with serve(text_run) as (url, app), httpx.Client(base_url=url) as c:
        r = c.post("/predict", content=b'{"texts": ["abc \\ud800 def"]}', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "texts[0]" in r.json()["detail"], r.text

        def broken(raw):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")

        app.state.host.model.preprocess = broken
        r = c.post("/predict", json={"texts": ["fine"]})
        assert r.status_code == 422 and "TypeError" in r.json()["detail"], r.text


# --------------------------------------------------------------------------- 6. smaller items
def test_request_id_with_a_trailing_newline_is_refused(text_run, serve, admin_token, capsys):
    with pytest.raises(durable.ForgetError, match="request_id"):
        durable.forget(text_run, ["alpha"], request_id="r1\n")
    assert main(["forget", str(text_run), "--classes", "alpha", "--request-id", "r1\n"]) == 2
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.post("/forget", json={**FORGET, "request_id": "req-1\n"}, headers=auth(admin_token))
        assert r.status_code == 422 and "request_id" in r.text
    assert not (text_run / LEDGER_NAME).exists()


def test_disk_full_while_writing_the_artefact(text_run, serve, admin_token, monkeypatch, capsys):
    weights = (text_run / "model.safetensors").read_bytes()

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "atomic_write_bytes", full)
    with pytest.raises(durable.StorageError, match="No space left") as e:
        durable.forget(text_run, ["alpha"], request_id="d1")
    assert e.value.status == 507
    assert main(["forget", str(text_run), "--classes", "alpha", "--request-id", "d2"]) == 1  # disk, not input
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left" in err
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.post("/forget", json=FORGET, headers=auth(admin_token))
        assert r.status_code == 507 and "nothing was forgotten" in r.json()["detail"]
        assert c.get("/health").status_code == 200
    assert (text_run / "model.safetensors").read_bytes() == weights
    assert [e["event"] for e in Ledger(text_run).read()] == ["pending", "abort"] * 3
    assert verify(text_run)["ok"]
    monkeypatch.undo()
    assert durable.forget(text_run, ["alpha"], request_id="d1").active_classes == ["beta", "gamma", "delta"]


def test_read_only_ledger_is_503_and_nothing_written(text_run, serve, admin_token, monkeypatch):
    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Ledger, "append", read_only)
    before = run_bytes(text_run)
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.post("/forget", json=FORGET, headers=auth(admin_token))
        assert r.status_code == 503 and "Read-only" in r.json()["detail"]
    assert run_bytes(text_run) == before


def test_half_open_connections_and_slow_bodies_time_out(text_run, serve):
    with serve(text_run, read_timeout_s=0.5) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        t0 = time.monotonic()
        silent = socket.create_connection(("127.0.0.1", port))
        partial = socket.create_connection(("127.0.0.1", port))
        partial.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        for s in (silent, partial):
            s.settimeout(10)
            assert s.recv(1024) == b""  # closed by the server
            s.close()
        assert time.monotonic() - t0 < 5
        slow = socket.create_connection(("127.0.0.1", port))
        slow.settimeout(10)
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"te")
        reply = slow.recv(4096)
        slow.close()
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert httpx.post(f"{url}/predict", json={"texts": ["still serving"]}).status_code == 200


def test_auth_runs_before_the_body_is_read(text_run, serve):
    tok = "predict-token-0123456789"
    with serve(text_run, predict_token=tok, max_body_bytes=1024) as (url, _), httpx.Client(base_url=url) as c:
        bad = {"content-type": "application/json"}
        for path in ("/forget", "/predict"):
            for body in (b"{not json", b"x" * 5000):
                r = c.post(path, content=body, headers=bad)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
        r = c.post("/predict", content=b"{not json", headers={**bad, **auth(tok)})
        assert r.status_code == 400


def test_tokens_compare_as_utf8_bytes(text_run, serve):
    tok = "ädmin-tøken-0123456789"
    with serve(text_run, admin_token=tok) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/ledger", headers={"Authorization": b"Bearer " + tok.encode("utf-8")}).status_code == 200
        assert c.get("/ledger", headers={"Authorization": b"Bearer " + tok.encode("latin-1")}).status_code == 401


@pytest.mark.parametrize("tok, why", [("a" * 16, "distinct"), ("abcdefgabcdefgabcdefg", "distinct"),
                                      ("abcdefghijklmno", "16 characters")])
def test_weak_tokens_are_refused_at_start(text_run, tok, why):
    from promptforget.service.app import create_app
    from promptforget.service.settings import ServiceSettings

    with pytest.raises(ValueError, match=why):
        create_app(text_run, ServiceSettings(admin_token=tok))
    with pytest.raises(ValueError, match=why):
        create_app(text_run, ServiceSettings(admin_token="admin-token-0123456789abcdef", predict_token=tok))


def test_an_empty_predict_token_is_refused_at_start(text_run, monkeypatch, capsys):
    monkeypatch.setenv("PROMPTFORGET_ADMIN_TOKEN", "admin-token-0123456789abcdef")
    monkeypatch.setenv("PROMPTFORGET_PREDICT_TOKEN", "")
    assert main(["serve", str(text_run), "--port", "0"]) == 2
    assert "PROMPTFORGET_PREDICT_TOKEN is set but empty" in capsys.readouterr().err


def test_a_ledger_path_that_is_a_directory_is_a_clear_error(text_run, capsys):
    os.mkdir(text_run / LEDGER_NAME)
    assert main(["ledger", "show", str(text_run)]) == 2
    assert "not a regular file" in capsys.readouterr().err
