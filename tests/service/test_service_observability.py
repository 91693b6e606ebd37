"""Observability: Prometheus /metrics, a complete OpenAPI schema, JSON logs, the model card after a forget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from promptforget.store.ledger import LEDGER_NAME


def auth(tok):
    return {"Authorization": f"Bearer {tok}"}


def scrape(client, **kw) -> dict:
    """{(name, frozenset(labels)): value} of one /metrics scrape."""
    r = client.get("/metrics", **kw)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


# --------------------------------------------------------------------------- /metrics
def test_metrics_count_requests_forgets_and_the_ledger(text_run, serve, admin_token):
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        m = scrape(c)
        assert value(m, "promptforget_active_classes") == 4 and value(m, "promptforget_forgotten_classes") == 0
        assert value(m, "promptforget_ledger_entries") == 0 and value(m, "promptforget_ledger_verified") == 1
        assert value(m, "promptforget_model_in_sync") == 1
        assert ("promptforget_forgets_total", frozenset({("outcome", "committed")})) in m  # at 0 from the start

        for _ in range(3):
            assert c.post("/predict", json={"texts": ["hi"]}).status_code == 200
        assert c.post("/predict", json={"texts": []}).status_code == 422
        body = {"classes": ["alpha"], "reason": "user request", "request_id": "req-1"}
        assert c.post("/forget", json=body).status_code == 401  # refused before routing: still counted
        assert c.post("/forget", json=body, headers=auth(admin_token)).status_code == 200
        assert c.post("/forget", json=body, headers=auth(admin_token)).json()["replayed"] is True
        bad = {"classes": ["nope"], "reason": "x", "request_id": "req-2"}
        assert c.post("/forget", json=bad, headers=auth(admin_token)).status_code == 404
        again = {"classes": ["alpha"], "reason": "x", "request_id": "req-3"}
        assert c.post("/forget", json=again, headers=auth(admin_token)).status_code == 409
        assert c.get("/ledger", params={"since": 1}, headers=auth(admin_token)).status_code == 200
        assert c.get("/no/such/path").status_code == 404

        m = scrape(c)
        req = "promptforget_http_requests_total"
        assert value(m, req, route="/predict", method="POST", status="200") == 3
        assert value(m, req, route="/predict", method="POST", status="422") == 1
        assert value(m, req, route="/forget", method="POST", status="401") == 1
        assert value(m, req, route="/ledger", method="GET", status="200") == 1  # the template, not the query
        assert value(m, req, route="unmatched", method="GET", status="404") == 1
        lat = "promptforget_http_request_duration_seconds"
        assert value(m, f"{lat}_count", route="/predict", method="POST", status="200") == 3
        assert value(m, f"{lat}_sum", route="/predict", method="POST", status="200") > 0
        assert value(m, f"{lat}_bucket", route="/predict", method="POST", status="200", le="+Inf") == 3
        for outcome, n in (("committed", 1), ("replayed", 1), ("unknown_class", 1), ("already_forgotten", 1),
                           ("ledger", 0)):
            assert value(m, "promptforget_forgets_total", outcome=outcome) == n, outcome
        assert value(m, "promptforget_active_classes") == 3 and value(m, "promptforget_forgotten_classes") == 1
        assert value(m, "promptforget_ledger_entries") == 2 and value(m, "promptforget_ledger_last_seq") == 2


def test_metrics_show_a_broken_ledger(text_run, serve, admin_token):
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        body = {"classes": ["alpha"], "reason": "user request", "request_id": "req-1"}
        assert c.post("/forget", json=body, headers=auth(admin_token)).status_code == 200
        ledger = text_run / LEDGER_NAME
        ledger.write_bytes(ledger.read_bytes().replace(b"user request", b"user requesT"))
        body = {"classes": ["beta"], "reason": "x", "request_id": "req-2"}
        assert c.post("/forget", json=body, headers=auth(admin_token)).status_code == 409  # the forget notices
        assert c.get("/health").status_code == 503
        m = scrape(c)
        assert value(m, "promptforget_ledger_verified") == 0
        assert value(m, "promptforget_forgets_total", outcome="ledger") == 1
        assert value(m, "promptforget_http_requests_total", route="/health", method="GET", status="503") == 1


def test_metrics_need_the_predict_token_when_one_is_set(text_run, serve):
    tok = "predict-token-0123456789"
    with serve(text_run, predict_token=tok) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/metrics").status_code == 401
        assert value(scrape(c, headers=auth(tok)), "promptforget_active_classes") == 4


def test_two_apps_in_one_process_keep_their_own_metrics(text_run, tmp_path, new_run, tiny_bert_dir):
    from fastapi.testclient import TestClient

    from promptforget.service.app import create_app
    from promptforget.service.settings import ServiceSettings

    other = new_run(tiny_bert_dir, tmp_path / "other", classes=["x", "y"])
    settings = dict(admin_token="admin-token-0123456789abcdef", poll_interval_s=0)
    a, b = create_app(text_run, ServiceSettings(**settings)), create_app(other, ServiceSettings(**settings))
    with TestClient(a) as ca, TestClient(b) as cb:
        ca.post("/predict", json={"texts": ["hi"]})
        ma, mb = scrape(ca), scrape(cb)
    assert value(ma, "promptforget_active_classes") == 4 and value(mb, "promptforget_active_classes") == 2
    req = "promptforget_http_requests_total"
    assert value(ma, req, route="/predict", method="POST", status="200") == 1
    assert value(mb, req, route="/predict", method="POST", status="200") == 0


# --------------------------------------------------------------------------- OpenAPI
# The error codes each route documents (beyond these it may answer others, e.g. 500).
ROUTE_ERRORS = {
    ("get", "/health"): {503},
    ("get", "/health/live"): set(),
    ("get", "/classes"): {401},
    ("get", "/metrics"): {401},
    ("post", "/predict"): {401, 413, 422},
    ("post", "/forget"): {401, 409, 413, 422, 503, 507},
    ("get", "/ledger"): {401, 409, 422},
    ("get", "/ledger/verify"): {401},
}


def test_openapi_schema_is_complete(text_run):
    from promptforget.service.app import create_app
    from promptforget.service.settings import ServiceSettings

    spec = create_app(text_run, ServiceSettings(admin_token="admin-token-0123456789abcdef", poll_interval_s=0)).openapi()
    schemas = spec["components"]["schemas"]
    seen = set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            seen.add((method, path))
            ok = op["responses"]["200"]["content"]
            schema = next(iter(ok.values()))["schema"]
            assert schema not in ({}, None), (method, path)
            if "$ref" in schema:  # a named model: it has fields
                assert schemas[schema["$ref"].rsplit("/", 1)[1]]["properties"], (method, path)
            codes = {int(c) for c in op["responses"] if c != "200"}
            assert ROUTE_ERRORS.get((method, path), set()) <= codes, (method, path, codes)
            for c in codes:  # every error names its body
                assert op["responses"][str(c)].get("content"), (method, path, c)
    assert set(ROUTE_ERRORS) <= seen
    props = schemas["PredictResponse"]["properties"]
    assert {"predictions", "generation"} <= set(props)
    assert "class" in schemas["ClassProbability"]["properties"]  # the wire name, not the Python one
    assert schemas["ErrorDetail"]["properties"]["detail"]


def test_responses_match_their_models(text_run, serve, admin_token):
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        top = c.post("/predict", json={"texts": ["hi"], "top_k": 2}).json()["predictions"][0]["top"]
        assert [set(t) for t in top] == [{"class", "probability"}] * 2
        r = c.post("/forget", json={"classes": ["alpha"], "reason": "r", "request_id": "q1"}, headers=auth(admin_token))
        assert {"request_id", "ledger_seq", "removed_prompt_sha256", "timings_ms"} <= set(r.json())
        v = c.get("/ledger/verify", headers=auth(admin_token)).json()
        assert v["ok"] and v["forgotten_classes"] == ["alpha"] and "head_seq" in v


# --------------------------------------------------------------------------- the model card
def test_a_committed_forget_updates_the_model_card(text_run, serve, admin_token):
    card = text_run / "README.md"
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.post("/forget", json={"classes": ["beta"], "reason": "user request", "request_id": "card-1"},
                   headers=auth(admin_token))
        assert r.status_code == 200
        deadline = time.monotonic() + 20
        while not (card.is_file() and "beta" in card.read_text() and "card-1" in card.read_text()):
            assert time.monotonic() < deadline, "the model card was not updated"
            time.sleep(0.05)
        assert c.get("/ledger/verify", headers=auth(admin_token)).json()["ok"]  # the card is no leftover


def test_a_failing_card_never_fails_the_forget(text_run, serve, admin_token, monkeypatch, caplog):
    import promptforget.pfm.card as card

    def broken(run_dir):
        raise OSError("disk on fire")

    monkeypatch.setattr(card, "write_model_card", broken)
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.post("/forget", json={"classes": ["beta"], "reason": "r", "request_id": "q1"}, headers=auth(admin_token))
        assert r.status_code == 200 and r.json()["forgotten_classes"] == ["beta"]
        deadline = time.monotonic() + 20
        while "could not update the model card" not in caplog.text:
            assert time.monotonic() < deadline
            time.sleep(0.05)


# --------------------------------------------------------------------------- JSON logs
def test_json_formatter_keeps_extra_fields():
    import logging

    from promptforget.service.logs import JsonFormatter

    rec = logging.LogRecord("promptforget.service", logging.INFO, __file__, 1, "forget %s", (["a"],), None)
    rec.request_id, rec.latency_ms = "req-1", 1.5
    out = json.loads(JsonFormatter().format(rec))
    assert out["message"] == "forget ['a']" and out["level"] == "INFO" and out["logger"] == "promptforget.service"
    assert out["request_id"] == "req-1" and out["latency_ms"] == 1.5 and "time" in out


def test_serve_log_format_json(text_run, admin_token, tmp_path):
    env = {**os.environ, "PROMPTFORGET_ADMIN_TOKEN": admin_token,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    err = tmp_path / "stderr.log"
    with open(err, "wb") as ferr:
        p = subprocess.Popen([sys.executable, "-m", "promptforget.cli", "serve", str(text_run), "--port", "0",
                              "--log-format", "json", "--log-level", "debug", "--poll-interval", "0"],
                             stdout=subprocess.PIPE, stderr=ferr, env=env, text=True)
        try:
            line = p.stdout.readline()
            assert "http://" in line, (line, err.read_text())
            url = line.split(" on ", 1)[1].split()[0]
            with httpx.Client(base_url=url, timeout=30) as c:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        c.get("/health/live")
                        break
                    except httpx.ConnectError:
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
                assert c.post("/predict", json={"texts": ["hi"]}).status_code == 200
                r = c.post("/forget", json={"classes": ["alpha"], "reason": "r", "request_id": "log-1"},
                           headers=auth(admin_token))
                assert r.status_code == 200
        finally:
            p.terminate()
            p.wait(30)
    lines = [ln for ln in err.read_text().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "promptforget.service.access"]
    assert {(r["route"], r["status"]) for r in access} >= {("/predict", 200), ("/forget", 200)}
    assert all(r["latency_ms"] >= 0 for r in access)
    forget = [r for r in records if r.get("request_id") == "log-1"]
    assert forget and forget[0]["classes"] == ["alpha"] and forget[0]["replayed"] is False
    uv = [r for r in records if r["logger"] == "uvicorn.access"]  # uvicorn's access log, as JSON too
    assert uv and {"client", "method", "path", "status"} <= set(uv[0])
    assert admin_token not in err.read_text()
