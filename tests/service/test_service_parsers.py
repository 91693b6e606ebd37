"""Issue 28: parsers that never crash. Ledger lines and safetensors headers come from files others can write:
every malformed one is one clean line (LedgerError / ValueError; CLI exit 1 or 2; HTTP 409 or 503), never a
RecursionError, a TypeError, a 500 or a reset connection. A fuzz run of random and structured mutations
checks the parsers; the CLI and a live server are checked on the nested and malformed cases of the probe.
"""

from __future__ import annotations

import json
import random
import struct

import httpx
import pytest

from promptforget.cli import main
from promptforget.store import durable
from promptforget.store.artefact import Safetensors
from promptforget.store.layout import CONFIG_NAME, LEDGER_NAME, WEIGHTS_NAME
from promptforget.store.ledger import KEY_ENV, KEY_FILE_ENV, Ledger, LedgerError, canonical, parse_line, verify

CASES = 3000  # per parser; a few seconds in all


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    for name in (KEY_ENV, KEY_FILE_ENV, "PROMPTFORGET_ANCHOR_DIR", "PROMPTFORGET_ANCHOR_HOOK"):
        monkeypatch.delenv(name, raising=False)


def safetensors_bytes(tensors: dict[str, bytes], meta=None) -> bytes:
    header, off = ({"__metadata__": meta} if meta else {}), 0
    for name, blob in tensors.items():
        header[name] = {"dtype": "F32", "shape": [len(blob) // 4], "data_offsets": [off, off + len(blob)]}
        off += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(tensors.values())


@pytest.fixture
def tiny_run(tmp_path):
    """A torch-free run (config + a safetensors of three prompts and a head) with two committed forgets."""
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_NAME).write_text(json.dumps({"format_version": 1, "config": {"class_names": list("abcd")}}))
    rng = random.Random(0)
    tensors = {f"prompts.{c}": bytes(rng.randrange(256) for _ in range(32)) for c in "abcd"}
    tensors["head.weight"] = bytes(64)
    (run / WEIGHTS_NAME).write_bytes(safetensors_bytes(tensors, {"format": "promptforget-pfm"}))
    durable.forget(run, ["a"], reason="first", request_id="r1")
    durable.forget(run, ["c"], reason="second", request_id="r2", exact=True)
    return run


# --------------------------------------------------------------------------- mutations
def random_json(rng, depth=0):
    kinds = ["str", "int", "float", "bool", "null", "list", "dict", "bigint", "hex"]
    k = rng.choice(kinds if depth < 3 else kinds[:5])
    if k == "str":
        return "".join(rng.choice("ab\u00e9\u2028\"\\\n\x00z") for _ in range(rng.randrange(6)))
    if k == "int":
        return rng.randrange(-3, 10)
    if k == "float":
        return rng.choice([0.5, -1.0, 1e308, 3.0])
    if k == "bool":
        return rng.random() < 0.5
    if k == "null":
        return None
    if k == "bigint":
        return 10 ** rng.randrange(20, 400)
    if k == "hex":
        return "%064x" % rng.getrandbits(256)
    if k == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": random_json(rng, depth + 1) for i in range(rng.randrange(4))}


def byte_mutation(rng, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(10)
    i = rng.randrange(len(b) + 1)
    if op == 0 and b:
        b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
    elif op == 1:
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
    elif op == 2:
        del b[i : i + rng.randrange(1, 20)]
    elif op == 3:
        del b[i:]
    elif op == 4:
        j = rng.randrange(len(b) + 1)
        b[i:i] = b[min(i, j) : max(i, j)]
    elif op == 5:
        b[i:i] = rng.choice([b"[", b'{"a":', b"[[[["]) * rng.choice([10, 1000, 100_000])
    elif op == 6:
        b[i:i] = rng.choice([b" ", b"\r", b"\t", b"\\u0000", b"\\ud800", b"NaN", b"Infinity", b"\xff\xfe", b"1e999"])
    elif op == 7:
        b = bytearray(rng.choice([b"", b"[]", b"{}", b"null", b"1", b'""', b"[" * 50_000, b'{"a":{}}']))
    elif op == 8:
        b[i:i] = b'"dup":1,"dup":2,'
    else:
        b = bytearray(b.replace(b",", b", ", rng.randrange(1, 4)))
    return bytes(b)


def structured_mutation(rng, obj):
    """Replace, add or drop one value at a random path; serialised canonically or not."""
    obj = json.loads(json.dumps(obj))
    node = obj
    while isinstance(node, dict) and node and rng.random() < 0.6:
        k = rng.choice(list(node))
        if not isinstance(node[k], (dict, list)) or not node[k]:
            break
        node = node[k] if isinstance(node[k], dict) else node
    if isinstance(node, dict):
        op = rng.randrange(3)
        if op == 0 and node:
            node[rng.choice(list(node))] = random_json(rng)
        elif op == 1 and node:
            del node[rng.choice(list(node))]
        else:
            node[rng.choice(["extra", "hmac", "key_id", "recovered", "note", "examples"])] = random_json(rng)
    text = canonical(obj) if rng.random() < 0.8 else json.dumps(obj, ensure_ascii=False).encode()
    return text


def one_line(msg: str) -> None:
    assert msg and "\n" not in msg and "Traceback" not in msg and len(msg) < 1000, msg[:300]


def test_fuzzed_ledger_lines_are_one_clean_error_or_a_valid_entry(tiny_run):
    rng = random.Random(28)
    lines = (tiny_run / LEDGER_NAME).read_bytes().split(b"\n")[:-1]
    assert len(lines) == 4
    outcomes = {"error": 0, "ok": 0}
    for n in range(CASES):
        line = rng.choice(lines)
        bad = structured_mutation(rng, json.loads(line)) if n % 2 else byte_mutation(rng, line)
        try:
            e = parse_line(bad, "line 1")
        except LedgerError as exc:
            one_line(str(exc))
            outcomes["error"] += 1
            continue
        assert canonical(e) == bad and isinstance(e, dict)  # what parses is exactly a canonical entry
        outcomes["ok"] += 1
    assert outcomes["error"] > CASES * 0.8, outcomes


def test_fuzzed_ledgers_verify_and_refuse_cleanly(tiny_run):
    rng = random.Random(7)
    good = (tiny_run / LEDGER_NAME).read_bytes()
    lines = good.split(b"\n")[:-1]
    for n in range(150):
        i = rng.randrange(len(lines))
        bad = list(lines)
        bad[i] = structured_mutation(rng, json.loads(lines[i])) if n % 2 else byte_mutation(rng, lines[i])
        (tiny_run / LEDGER_NAME).write_bytes(b"\n".join(bad) + b"\n")
        rep = verify(tiny_run)
        for p in rep["problems"]:
            one_line(p)
        assert not rep["ok"] or bad == lines
        try:
            durable.forget(tiny_run, ["b"], request_id=f"f{n}")
        except ValueError as exc:  # LedgerError, or a ForgetError when a mutation happens to verify
            one_line(str(exc))
        (tiny_run / LEDGER_NAME).write_bytes(good)
        assert verify(tiny_run)["ok"]


def test_fuzzed_safetensors_headers_are_one_clean_error_or_usable(tiny_run):
    rng = random.Random(5)
    raw = (tiny_run / WEIGHTS_NAME).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = raw[8 : 8 + n], raw[8 + n :]
    parsed = 0
    for i in range(CASES):
        h = structured_mutation(rng, json.loads(header)) if i % 2 else byte_mutation(rng, header)
        size = len(h) if rng.random() < 0.9 else rng.choice([0, 2**63, len(h) + 5, 10**9])
        blob = struct.pack("<Q", size) + h + data
        try:
            st = Safetensors.parse(blob, "model.safetensors")
        except ValueError as exc:
            one_line(str(exc))
            continue
        parsed += 1
        for name in st.names():  # what parses is usable: every tensor inside the data, hashable, removable
            assert len(st.tensor_bytes(name)) == st.nbytes(name)
            st.tensor_sha256(name)
        Safetensors.parse(st.without(set(st.names()[:1])))
    assert 0 < parsed < CASES


@pytest.mark.parametrize("header", [b"[]", b"[" * 100_000, b'{"prompts.a":[]}', b'{"x":{"dtype":"F32","shape":[1],'
                                    b'"data_offsets":[0,4],"data_offsets":[0,4]}}', b'{"__metadata__":[1]}'])
def test_malformed_headers_are_one_line_everywhere(tiny_run, header, capsys):
    (tiny_run / WEIGHTS_NAME).write_bytes(struct.pack("<Q", len(header)) + header)
    rep = verify(tiny_run)
    assert not rep["ok"] and all("\n" not in p for p in rep["problems"])
    with pytest.raises(ValueError):
        Safetensors.read_names(tiny_run / WEIGHTS_NAME)
    capsys.readouterr()
    assert main(["forget", str(tiny_run), "--classes", "b"]) == 2
    assert main(["ledger", "verify", str(tiny_run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(ln.startswith(("promptforget", "[ledger]")) for ln in err.splitlines()), err


NESTED = b"[" * 100_000 + b"\n"


@pytest.mark.parametrize("command", [["ledger", "verify"], ["ledger", "show"], ["ledger", "head"],
                                     ["forget", "--classes", "b"]], ids=lambda c: "-".join(c[:2]))
def test_a_nested_ledger_line_is_one_line_in_every_command(tiny_run, command, capsys):
    with open(tiny_run / LEDGER_NAME, "ab") as f:
        f.write(NESTED)
    capsys.readouterr()
    argv = command[:2] + [str(tiny_run)] + command[2:] if command[0] == "ledger" else [command[0], str(tiny_run)] + command[1:]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nested deeper" in err, err
    assert all(ln.startswith(("promptforget", "[ledger]")) for ln in err.splitlines()), err


def test_a_server_on_nested_and_malformed_files_answers_cleanly(text_run, serve, admin_token):
    durable.forget(text_run, ["alpha"], request_id="r1")
    with open(text_run / LEDGER_NAME, "ab") as f:
        f.write(NESTED)
    h = {"Authorization": f"Bearer {admin_token}"}
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.get("/health")
        assert r.status_code == 503 and "nested deeper" in r.json()["detail"], r.text
        assert c.get("/ledger", headers=h).status_code == 409
        assert c.get("/forget/r1", headers=h).status_code == 409
        rep = c.get("/ledger/verify", headers=h)
        assert rep.status_code == 200 and not rep.json()["ok"]
        r = c.post("/forget", json={"classes": ["beta"], "reason": "x", "request_id": "h1"}, headers=h)
        assert r.status_code == 409, r.text
        assert c.post("/predict", json={"texts": ["x"]}).json()["predictions"][0]["label"] == "beta"
        for header in (b"[]", b"[" * 100_000):  # a malformed artefact under the running server
            with open(text_run / WEIGHTS_NAME, "wb") as f:
                f.write(struct.pack("<Q", len(header)) + header)
            r = c.post("/predict", json={"texts": ["x"]})
            assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "beta", r.text
            assert c.get("/health").status_code == 503
            assert c.get("/classes").status_code == 200
            assert c.get("/metrics").status_code == 200


def test_a_server_starts_on_a_malformed_header(text_run, serve):
    header = b"[]"
    durable.forget(text_run, ["alpha"], request_id="r1")
    from promptforget.service.app import create_app
    from promptforget.service.settings import ServiceSettings

    raw = (text_run / WEIGHTS_NAME).read_bytes()
    (text_run / WEIGHTS_NAME).write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ValueError, match="not a JSON object"):  # nothing to serve: a one-line refusal to start
        create_app(text_run, ServiceSettings(admin_token="admin-token-0123456789abcdef"))
    (text_run / WEIGHTS_NAME).write_bytes(raw)
    assert Ledger(text_run).read()[-1]["event"] == "commit"


@pytest.mark.parametrize("body", [b'{"texts":' + b"[" * 100_000, b'{"arrays":[' + b"[" * 5_000 + b"1" + b"]" * 5_001 + b"}",
                                  b'{"top_k":' + b"9" * 5000 + b',"texts":["a"]}',
                                  b'{"texts":["a"],"top_k":1e999}'], ids=["nested", "deep-array", "bigint", "inf"])
def test_nested_and_malformed_bodies_are_4xx(text_run, serve, admin_token, body):
    h = {"content-type": "application/json", "Authorization": f"Bearer {admin_token}"}
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        for path in ("/predict", "/forget"):
            r = c.post(path, content=body, headers=h)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
        assert c.get("/health/live").status_code == 200
