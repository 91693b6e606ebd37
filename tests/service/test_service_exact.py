"""POST /forget with "exact": true on a live server: instant answer, background retrain, the retrained model
swapped in, GET /forget/{request_id} states, open requests resumed at start, missing data refused."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import httpx
import pytest

from promptforget.store import durable
from promptforget.store.layout import DATA_NAME, WEIGHTS_NAME
from promptforget.store.ledger import Ledger, verify

ROWS = [("the food was great and tasty", "food"), ("pasta and pizza for dinner", "food"),
        ("the match ended in a draw", "sport"), ("a goal in the last minute", "sport"),
        ("the new phone has a fast chip", "tech"), ("software update fixes bugs", "tech")] * 3


@pytest.fixture
def data_run(tiny_bert_dir, tmp_path):
    from promptforget.pfm.run import train_run

    data = tmp_path / "toy.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(ROWS)
    return train_run(tmp_path / "run", f"csv:{data}", test_size=0.34, backbone=tiny_bert_dir, epochs=1,
                     batch_size=4, max_length=16)


def wait_state(url, headers, request_id, want, timeout=180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url}/forget/{request_id}", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        if r.json()["state"] == want or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.2)


def test_exact_forget_over_http(data_run, serve, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    with serve(data_run, poll_interval_s=0) as (url, app):
        host = app.state.host
        old_model = host.model
        body = {"classes": ["sport"], "reason": "gdpr", "request_id": "req/ex-1", "exact": True}
        r = httpx.post(f"{url}/forget", json=body, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "retraining" and r.json()["exact_requested"] is True
        assert "sport" not in r.json()["active_classes"]  # the prompt is gone at once
        state = wait_state(url, auth, "req/ex-1", "exact")
        assert state["state"] == "exact" and state["classes"] == ["sport"] and state["exact_seq"] > state["commit_seq"]
        assert host.wait_exact(60)
        assert host.model is not old_model and host.model.forgotten_classes == ["sport"]  # the retrain is served
        r = httpx.post(f"{url}/predict", json={"texts": ["a goal in the last minute"]}, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] != "sport"
        assert httpx.get(f"{url}/forget/req/ex-1", timeout=30).status_code == 401
        assert httpx.get(f"{url}/forget/nope", headers=auth, timeout=30).status_code == 404
        # an instant forget stays instant
        body = {"classes": ["tech"], "reason": "r", "request_id": "inst-2"}
        assert httpx.post(f"{url}/forget", json=body, headers=auth, timeout=60).json()["state"] == "instant"
        assert httpx.get(f"{url}/forget/inst-2", headers=auth, timeout=30).json()["state"] == "instant"
        assert httpx.get(f"{url}/ledger/verify", headers=auth, timeout=30).json()["ok"]
    events = [e["event"] for e in Ledger(data_run).read()]
    assert events == ["pending", "commit", "exact_pending", "exact", "pending", "commit"]


def test_missing_data_is_refused_with_409_and_nothing_changes(data_run, serve, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    data = Path(json.loads((data_run / DATA_NAME).read_text())["dataset"].partition(":")[2])
    data.unlink()
    before = {p.name: p.read_bytes() for p in data_run.iterdir() if p.is_file()}
    with serve(data_run, poll_interval_s=0) as (url, _):
        body = {"classes": ["sport"], "reason": "gdpr", "request_id": "ex-2", "exact": True}
        r = httpx.post(f"{url}/forget", json=body, headers=auth, timeout=60)
        assert r.status_code == 409 and "exact forget refused" in r.json()["detail"]
        assert httpx.get(f"{url}/forget/ex-2", headers=auth, timeout=30).status_code == 404
    assert {p.name: p.read_bytes() for p in data_run.iterdir() if p.is_file()} == before


def test_open_requests_are_retrained_at_start(data_run, serve, admin_token):
    # Two exact requests whose retrain never ran (a crash mid-retrain): the service retrains at start, once.
    durable.forget(data_run, ["sport"], request_id="open-1", exact=True)
    durable.forget(data_run, ["tech"], request_id="open-2", exact=True)
    before = (data_run / WEIGHTS_NAME).read_bytes()
    auth = {"Authorization": f"Bearer {admin_token}"}
    with serve(data_run, poll_interval_s=0) as (url, app):
        assert wait_state(url, auth, "open-1", "exact")["state"] == "exact"
        assert httpx.get(f"{url}/forget/open-2", headers=auth, timeout=30).json()["state"] == "exact"
        assert app.state.host.wait_exact(60)
    entries = Ledger(data_run).read()
    exact = [e for e in entries if e["event"] == "exact"]
    assert len(exact) == 1 and exact[0]["request_ids"] == ["open-1", "open-2"]
    assert (data_run / WEIGHTS_NAME).read_bytes() != before and verify(data_run)["ok"]
