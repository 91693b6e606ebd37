"""The compliance console over HTTP (no browser): sign-in and its cookie, CSRF, read-only view, the forget
form's validation and errors (the API's own), the audit section and its plots, and no request id or
reason in any URL. The real-browser tests are in test_console_browser.py."""

from __future__ import annotations

import re

import httpx
import pytest

from promptforget.store import durable
from promptforget.store.ledger import Ledger, head, keygen

READER = "predict-token-0123456789"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(c: httpx.Client, token: str) -> httpx.Response:
    return c.post("/console/login", data={"token": token})


@pytest.fixture
def keyed(text_run, tmp_path):
    key = keygen(tmp_path / "ledger.key")
    return text_run, key, str(tmp_path / "ledger.key")


def test_sign_in_cookie_and_pages(keyed, serve, admin_token):
    run, key, key_file = keyed
    with serve(run, ledger_key_file=key_file) as (url, _), httpx.Client(base_url=url) as c:
        r = c.get("/console")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        r = c.get("/console/login")
        assert r.status_code == 200 and '<label for="token">' in r.text and 'type="password"' in r.text
        assert "http" not in re.sub(r'https?://www\.w3\.org\S*', "", r.text.split("<body>")[0]).replace(
            "http-equiv", "")  # no asset from another origin
        r = login(c, "wrong-token-0123456789")
        assert r.status_code == 401 and "wrong token" in r.text and "promptforget_console" not in r.headers.get("set-cookie", "")
        r = login(c, admin_token)
        assert r.status_code == 303 and r.headers["location"] == "/console"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        assert admin_token not in r.headers["set-cookie"]  # a random session id, not the token
        page = c.get("/console")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        for section in ("model", "requests", "ledger", "audit", "forget"):
            assert f'id="{section}"' in page.text
        assert "alpha, beta, gamma, delta" in page.text and "Verified" in page.text and key.key_id in page.text
        assert c.get("/console/static/console.css").headers["content-type"].startswith("text/css")
        # sign-out needs the page's CSRF token; then the session is gone
        assert c.post("/console/logout", data={"csrf": "forged"}).status_code == 403
        assert c.get("/console").status_code == 200
        assert c.post("/console/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
        c.cookies.set("promptforget_console", r.headers["set-cookie"].split(";")[0].split("=", 1)[1], path="/console")
        assert c.get("/console").status_code == 303  # the old session id no longer opens the console


def test_forget_form_validates_like_the_api_and_keeps_ids_out_of_urls(keyed, serve, admin_token):
    run, key, key_file = keyed
    with serve(run, ledger_key_file=key_file) as (url, _), httpx.Client(base_url=url) as c:
        login(c, admin_token)
        token = csrf_of(c.get("/console").text)
        form = {"csrf": token, "request_id": "case-2026-0042", "reason": "art. 17 request of a data subject",
                "classes": ["alpha"]}
        # without the CSRF token, or from another origin: refused, nothing forgotten
        assert c.post("/console/forget", data={**form, "csrf": "x"}).status_code == 403
        assert c.post("/console/forget", data=form, headers={"Origin": "http://evil.example"}).status_code == 403
        assert not Ledger(run).exists()
        # the API's validation and errors: the same messages and status codes
        api = {"Authorization": f"Bearer {admin_token}"}
        for bad, status in (({"request_id": "bad id!"}, 422), ({"classes": []}, 422), ({"reason": ""}, 422),
                            ({"classes": ["nope"]}, 404)):
            r = c.post("/console/forget", data={**form, **bad})
            body = {"classes": form["classes"], "reason": form["reason"], "request_id": form["request_id"], **bad}
            a = c.post("/forget", json=body, headers=api)
            assert r.status_code == a.status_code == status, (bad, r.status_code, a.status_code)
            assert a.json()["detail"] in r.text.replace("&#39;", "'").replace("&#34;", '"')
            assert 'role="alert"' in r.text
        assert not Ledger(run).exists()
        r = c.post("/console/forget", data=form, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console#requests"
        page = c.get("/console").text
        assert "Forgotten: alpha (request case-2026-0042, state instant)" in page
        assert "case-2026-0042" in page and "art. 17 request" in page and "state-instant" in page
        assert "alpha" not in re.search(r'id="active-classes">([^<]*)<', page).group(1)
        # the API sees the same forget; the certificate link is by ledger seq, never by request id
        assert c.get("/forget/case-2026-0042", headers=api).json()["state"] == "instant"
        links = re.findall(r'(?:href|src|action)="([^"]+)"', page)
        assert links and not any("case-2026" in u or "art." in u for u in links)
        seq = next(e["seq"] for e in Ledger(run).read() if e["event"] == "commit")
        assert f"/console/requests/{seq}/certificate" in links
        cert = c.get(f"/console/requests/{seq}/certificate")
        assert cert.status_code == 200 and "Deletion certificate" in cert.text and "not guaranteed" in cert.text
        from promptforget.store.certificate import verify_certificate

        j = c.get(f"/console/requests/{seq}/certificate.json")
        assert "attachment" in j.headers["content-disposition"] and verify_certificate(j.content, key)[0]
        r = c.get("/console/requests/1/certificate")  # seq 1 is the pending, not a commit
        assert r.status_code == 404 and 'role="alert"' in r.text and "not a committed forget" in r.text
        # a repeat is idempotent, as in the API
        r = c.post("/console/forget", data=form)
        assert "Already on record" in c.get("/console").text and len(Ledger(run).read()) == 2


def test_reader_sees_no_reasons_and_cannot_forget(keyed, serve, admin_token):
    run, key, key_file = keyed
    durable.forget(run, ["beta"], reason="secret reason text", request_id="req-9", key=key)
    with serve(run, ledger_key_file=key_file, predict_token=READER) as (url, _), httpx.Client(base_url=url) as c:
        assert login(c, READER).status_code == 303
        page = c.get("/console").text
        assert "req-9" in page and "secret reason text" not in page and 'id="forget-form"' not in page
        assert "read-only" in page and "/certificate" not in page
        token = csrf_of(page)
        r = c.post("/console/forget", data={"csrf": token, "request_id": "r2", "reason": "x", "classes": ["alpha"]})
        assert r.status_code == 403 and len(Ledger(run).read()) == 2
        assert c.get("/console/requests/2/certificate").status_code == 403


def test_anchor_check_and_broken_ledger(keyed, serve, admin_token):
    run, key, key_file = keyed
    durable.forget(run, ["beta"], reason="r", request_id="req-1", key=key)
    anchor = head(Ledger(run).read())
    with serve(run, ledger_key_file=key_file) as (url, _), httpx.Client(base_url=url) as c:
        login(c, admin_token)
        r = c.get("/console", params={"expect_head": f"{anchor['seq']}:{anchor['entry_sha256']}"})
        assert "Anchor holds" in r.text
        r = c.get("/console", params={"expect_head": f"{anchor['seq']}:{'0' * 64}"})
        assert "Anchor FAILS" in r.text and "not in the ledger any more" in r.text
        r = c.get("/console", params={"expect_head": "garbage"})
        assert r.status_code == 200 and "Anchor FAILS" in r.text and "SEQ:HASH" in r.text
        raw = (run / "forget_ledger.jsonl").read_bytes()
        (run / "forget_ledger.jsonl").write_bytes(raw.replace(b'"reason":"r"', b'"reason":"s"'))
        r = c.get("/console")
        assert r.status_code == 200 and "Does NOT verify" in r.text and "entry was modified" in r.text
        seq = next(e["seq"] for e in Ledger(run).read() if e["event"] == "commit")
        r = c.get(f"/console/requests/{seq}/certificate")
        assert r.status_code == 409 and "does not verify" in r.text


def test_audit_section_and_plots(keyed, serve, admin_token, tiny_audit):
    import json

    run, key, key_file = keyed
    rows = tiny_audit(run)
    report = run / "audit" / "audit.json"
    record = json.loads(report.read_text())
    record["figures"]["escape"] = "/etc/passwd"  # a path outside the audit directory is never served
    report.write_text(json.dumps(record))
    with serve(run, ledger_key_file=key_file) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/console/audit/accuracy").status_code == 401
        login(c, admin_token)
        page = c.get("/console").text
        assert "forgotten_acc" in page and "0.120 [0.080, 0.160]" in page and rows[0]["verdict"] in page
        assert "retained_acc" in page and rows[1]["verdict"] in page
        assert "No figure leaks more" in page or "Inconclusive" in page or "leaks more" in page  # the headline
        assert 'src="/console/audit/accuracy"' in page and "escape" not in page
        img = c.get("/console/audit/accuracy")
        assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"
        assert c.get("/console/audit/escape").status_code == 404
        # a certificate quotes the audit that covered its class
        durable.forget(run, ["alpha"], reason="r", request_id="req-a", key=key)
        cert = c.get("/forget/req-a/certificate", headers={"Authorization": f"Bearer {admin_token}"}).json()
        assert cert["audit"]["verdicts"][0]["metric"] == "forgotten_acc" and cert["audit"]["covers_all"]


def test_a_pending_retrain_shows_and_refreshes(keyed, serve, admin_token):
    """A request whose exact retrain has not landed: state retraining, the page refreshes itself, and why
    the retrain failed (this run has no training data) is shown."""
    run, key, key_file = keyed
    durable.forget(run, ["gamma"], reason="r", request_id="req-x", key=key, exact=True)
    with serve(run, ledger_key_file=key_file) as (url, app), httpx.Client(base_url=url) as c:
        assert app.state.host.wait_exact(120)  # the retrain at start fails: no data.json
        login(c, admin_token)
        page = c.get("/console").text
        assert "state-retraining" in page and '<meta http-equiv="refresh" content="5">' in page
        assert "The last retrain failed" in page and "data.json" in page
        cert = c.get("/forget/req-x/certificate", headers={"Authorization": f"Bearer {admin_token}"}).json()
        assert cert["mode"] == "retraining" and cert["recomputation"] is None
