"""Deletion certificates (store/certificate.py): what they state, that they verify offline, and that one
changed byte -- anywhere -- fails the check. CLI and HTTP paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from promptforget.store import durable
from promptforget.store.certificate import FORMAT, build_certificate, dumps, public_key, verify_certificate
from promptforget.store.ledger import Ledger, keygen, load_key


@pytest.fixture
def keyed_run(text_run, tmp_path):
    key = keygen(tmp_path / "ledger.key")
    durable.forget(text_run, ["alpha"], reason="erasure request 17", request_id="req-17", source="cli", key=key)
    return text_run, key, tmp_path / "ledger.key"


def test_certificate_states_the_forget_and_verifies(keyed_run):
    run, key, _ = keyed_run
    cert = build_certificate(run, "req-17", key)
    assert cert["format"] == FORMAT and cert["mode"] == "instant"
    assert cert["deleted"]["classes"] == ["alpha"] and set(cert["deleted"]["removed_prompt_sha256"]) == {"alpha"}
    assert cert["request"]["reason"] == "erasure request 17"
    assert "not guaranteed" in cert["statement"] and cert["recomputation"] is None
    entries = Ledger(run).read()
    assert [e["event"] for e in cert["ledger"]["entries"]] == ["pending", "commit"]
    assert cert["ledger"]["head"] == {"seq": entries[-1]["seq"], "entry_sha256": entries[-1]["entry_sha256"]}
    assert "alpha" not in cert["model"]["active_classes"]
    raw = dumps(cert)
    assert verify_certificate(raw, key)[0]
    ok, why = verify_certificate(raw)  # no secret: the Ed25519 signature and the public key it carries
    assert ok and public_key(key) in why
    assert verify_certificate(raw, public=public_key(key))[0]
    other = load_key_from_bytes(b"x" * 32)
    assert not verify_certificate(raw, other)[0]
    assert not verify_certificate(raw, public=public_key(other))[0]


def load_key_from_bytes(secret: bytes):
    from promptforget.store.ledger import LedgerKey

    return LedgerKey(secret)


def test_one_changed_byte_anywhere_fails(keyed_run):
    run, key, _ = keyed_run
    raw = dumps(build_certificate(run, "req-17", key))
    for i in range(len(raw)):  # every byte
        bad = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
        assert not verify_certificate(bad, key)[0], f"byte {i} changed and the certificate still verifies"
        assert not verify_certificate(bad)[0], f"byte {i} changed and the Ed25519 check still passes"
    # same content, other bytes: a space for the newline, pretty-printed -- not the signed form
    assert verify_certificate(raw[:-1] + b" ", key) == (False, "not in canonical form: the file was modified after it "
                                                               "was issued")
    assert not verify_certificate(json.dumps(json.loads(raw), indent=2).encode(), key)[0]
    # a re-signed forgery without the key: fields changed and the document re-canonicalised
    cert = json.loads(raw)
    cert["deleted"]["classes"] = ["beta"]
    ok, why = verify_certificate(dumps(cert), key)
    assert not ok and "HMAC" in why


def test_certificate_needs_a_commit_a_key_and_a_verified_ledger(keyed_run):
    from promptforget.store.certificate import CertificateError

    run, key, _ = keyed_run
    with pytest.raises(CertificateError, match="no committed forget"):
        build_certificate(run, "req-none", key)
    with pytest.raises(CertificateError, match="ledger key"):
        build_certificate(run, "req-17", None)
    with open(run / "forget_ledger.jsonl", "r+b") as f:  # tamper: the reason of the first entry
        data = f.read().replace(b"erasure request 17", b"erasure request 18", 1)
        f.seek(0)
        f.write(data)
    with pytest.raises(CertificateError, match="does not verify"):
        build_certificate(run, "req-17", key)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "promptforget.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_cli_certificate_and_verify_certificate(keyed_run, tmp_path):
    run, key, key_file = keyed_run
    out = tmp_path / "cert.json"
    r = _cli("ledger", "certificate", run, "--request-id", "req-17", "--out", out, "--ledger-key-file", key_file)
    assert r.returncode == 0, r.stderr
    r = _cli("ledger", "verify-certificate", out, "--ledger-key-file", key_file)
    assert r.returncode == 0 and "VALID" in r.stdout, r.stderr
    pub = _cli("ledger", "certificate-key", "--ledger-key-file", key_file).stdout.strip()
    assert pub == public_key(key)
    assert _cli("ledger", "verify-certificate", out, "--public-key", pub).returncode == 0
    raw = out.read_bytes()
    out.write_bytes(raw.replace(b'"instant"', b'"exact"', 1))
    r = _cli("ledger", "verify-certificate", out, "--ledger-key-file", key_file)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "INVALID" in r.stderr and "Traceback" not in r.stderr
    r = _cli("ledger", "certificate", run, "--request-id", "nope", "--ledger-key-file", key_file)
    assert r.returncode == 2 and "no committed forget" in r.stderr and "Traceback" not in r.stderr


def test_http_certificate(keyed_run, serve, admin_token):
    run, key, key_file = keyed_run
    with serve(run, ledger_key_file=str(key_file)) as (url, _), httpx.Client(base_url=url) as c:
        h = {"Authorization": f"Bearer {admin_token}"}
        assert c.get("/forget/req-17/certificate").status_code == 401
        r = c.get("/forget/req-17/certificate", headers=h)
        assert r.status_code == 200 and verify_certificate(r.content, key)[0]
        assert c.get("/forget/req-none/certificate", headers=h).status_code == 404
        r = c.get("/forget/req-17/certificate", params={"format": "html"}, headers=h)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "req-17" in r.text and "alpha" in r.text and "erasure request 17" in r.text
        assert c.get("/forget/req-17/certificate", params={"format": "pdf"}, headers=h).status_code == 422
        assert c.get("/forget/req-17", headers=h).json()["state"] == "instant"  # the state route still answers


def test_exact_forget_certificate_names_the_recomputation(tiny_bert_dir, tmp_path, serve, admin_token):
    """An exact forget (the retrain without the class's data landed): mode exact, the retrain's hashes,
    a request id with a slash still reaches the certificate route, and the console shows the state."""
    import csv

    from promptforget.pfm.exact import exact_forget
    from promptforget.pfm.run import train_run

    data = tmp_path / "toy.csv"
    with data.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label")] + [("pasta and pizza", "food"), ("a late goal", "sport"),
                                                        ("a fast new chip", "tech")] * 6)
    run = train_run(tmp_path / "run", f"csv:{data}", test_size=0.34, backbone=tiny_bert_dir, epochs=1, batch_size=4,
                    max_length=16)
    key_file = tmp_path / "keys" / "ledger.key"
    key_file.parent.mkdir()
    key = keygen(key_file)
    r, done = exact_forget(run, ["sport"], reason="erasure", request_id="req/ex-1", key=key, log=lambda m: None)
    assert done is not None
    cert = build_certificate(run, "req/ex-1", key)
    assert cert["mode"] == "exact" and "equals what retraining without it gives" in cert["statement"]
    rec = cert["recomputation"]
    assert rec["train_manifest_sha256"] == done["train_manifest_sha256"] and rec["config_sha256"] == done["config_sha256"]
    assert rec["artefact_after_sha256"] == cert["model"]["artefact_sha256"]
    assert [e["event"] for e in cert["ledger"]["entries"]] == ["pending", "commit", "exact_pending", "exact"]
    assert cert["request"]["exact_at"] == done["time"] and verify_certificate(dumps(cert), key)[0]
    with serve(run, ledger_key_file=str(key_file), poll_interval_s=0) as (url, _), httpx.Client(base_url=url) as c:
        h = {"Authorization": f"Bearer {admin_token}"}
        got = c.get("/forget/req/ex-1/certificate", headers=h)
        assert got.status_code == 200 and json.loads(got.content)["mode"] == "exact"
        c.post("/console/login", data={"token": admin_token})
        page = c.get("/console").text
        assert "state-exact" in page and f"exact: {done['time']}" in page
