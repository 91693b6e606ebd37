"""An analytic run behind the real service: POST /forget with examples is exact at once (the commit says
so, the served head is the new artefact's), a PFM run refuses examples, and a restart on an older artefact
that still holds forgotten examples refuses to serve it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analytic"))
from test_exact_forget import make_rows, train, write_rows  # noqa: E402

from promptforget.store.layout import LEDGER_NAME, WEIGHTS_NAME  # noqa: E402


@pytest.fixture
def analytic_run(tmp_path, tiny_bert_dir):
    rows = make_rows()
    return rows, train(tmp_path / "run", write_rows(tmp_path / "d.csv", rows), tiny_bert_dir)


def test_forget_examples_over_http_is_exact_and_served_at_once(analytic_run, serve, admin_token):
    from promptforget.analytic.model import AnalyticModel

    rows, run = analytic_run
    h = {"Authorization": f"Bearer {admin_token}"}
    probe = [r[1] for r in rows[:6]]
    with serve(run) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as c:
            before = [p["top"][0]["probability"] for p in c.post("/predict", json={"texts": probe, "top_k": 1}).json()["predictions"]]
            r = c.post("/forget", json={"examples": [rows[0][0], rows[1][0]], "reason": "GDPR art. 17",
                                        "request_id": "dsr-1"}, headers=h)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["state"] == "exact" and body["exact_at_commit"] and len(body["examples"]) == 2
            after = [p["top"][0]["probability"] for p in c.post("/predict", json={"texts": probe, "top_k": 1}).json()["predictions"]]
            # the served head is the rewritten artefact's: what a fresh load of the run answers
            fresh = AnalyticModel.from_pretrained(run).predict_proba(probe).max(axis=1)
            np.testing.assert_allclose(after, fresh, rtol=1e-6)  # the service answers in float32
            assert not np.allclose(before, after)
            assert c.post("/forget", json={"examples": ["nobody"], "reason": "x", "request_id": "dsr-2"},
                          headers=h).status_code == 404
            assert c.post("/forget", json={"examples": "not-a-list", "reason": "x", "request_id": "dsr-3"},
                          headers=h).status_code == 422
            state = c.get("/forget/dsr-1", headers=h).json()
            assert state["state"] == "exact" and state["examples"] == 2
    text = (run / LEDGER_NAME).read_text()
    assert rows[0][0] not in text and rows[1][0] not in text


def test_pfm_service_refuses_examples(text_run, serve, admin_token):
    with serve(text_run) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/forget", json={"examples": ["3"], "reason": "x", "request_id": "e-1"},
                       headers={"Authorization": f"Bearer {admin_token}"})
    assert r.status_code == 400 and "whole classes only" in r.json()["detail"]


def test_an_older_artefact_with_forgotten_examples_is_not_served(analytic_run, tmp_path):
    from promptforget.analytic.model import AnalyticModel
    from promptforget.analytic.run import rewrite_for
    from promptforget.store.durable import forget

    rows, run = analytic_run
    old = tmp_path / "old.safetensors"
    shutil.copy(run / WEIGHTS_NAME, old)
    forget(run, [], examples=[rows[2][0]], rewrite=rewrite_for(run, None))
    forget(run, ["fruit"], rewrite=rewrite_for(run, None))
    shutil.copy(old, run / WEIGHTS_NAME)  # rolled back behind the ledger's back
    with pytest.raises(ValueError, match="holds examples the ledger says are forgotten"):
        AnalyticModel.from_pretrained(run)


def test_ledger_masks_a_forgotten_class_in_an_older_artefact(tmp_path, tiny_bert_dir):
    from promptforget.analytic.model import AnalyticModel
    from promptforget.analytic.run import rewrite_for
    from promptforget.store.durable import forget

    rows = make_rows()
    run = train(tmp_path / "run", write_rows(tmp_path / "d.csv", rows), tiny_bert_dir)
    old = (run / WEIGHTS_NAME).read_bytes()
    forget(run, ["vehicle"], rewrite=rewrite_for(run, None))
    (run / WEIGHTS_NAME).write_bytes(old)
    model = AnalyticModel.from_pretrained(run)
    assert "vehicle" not in model.active_classes and model.masked_by_ledger == ["vehicle"]
    assert "vehicle" not in model.predict([r[1] for r in rows if r[2] == "vehicle"])


def test_console_files_a_record_forget_on_an_analytic_run(analytic_run, serve, admin_token):
    import re

    rows, run = analytic_run
    with serve(run) as (url, _), httpx.Client(base_url=url) as c:
        c.post("/console/login", data={"token": admin_token})
        page = c.get("/console").text
        assert 'name="examples"' in page and 'id="exact"' not in page  # every forget is exact already
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = c.post("/console/forget", data={"csrf": token, "request_id": "dsr-9", "reason": "art. 17",
                                            "examples": f"{rows[3][0]}, {rows[4][0]}"})
        assert r.status_code == 303
        page = c.get("/console").text
        assert "2 example(s)" in page and "exact" in page
        bad = c.post("/console/forget", data={"csrf": token, "request_id": "dsr-10", "reason": "x",
                                              "examples": "nobody"})
        assert bad.status_code == 404 and "not in the training set" in bad.text
