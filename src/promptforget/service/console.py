"""The compliance console at ``/console``: what a data-protection officer or an auditor opens, without a
shell. Server-rendered HTML (Jinja2 templates in ``service/templates``, one stylesheet in
``service/static``), no JavaScript, nothing from another origin; every page is a plain GET, so the
browser's back button works, and every change is a POST that redirects (post/redirect/get).

One page per run (``GET /console``): the model (family, backbone, classes active and forgotten, the model
card's key facts), the deletion requests from the ledger (request id, what was forgotten, reason, time,
state instant / retraining / exact; the page refreshes itself while a retrain runs), the ledger (verified
or not and why, head, key id, a check against an anchor the user pastes), the latest audit (headline,
verdicts with intervals, its plots), and a form that files a forget (admin), which goes through the API's
own route function: same validation, same errors, same status codes.

Sign-in: a form takes the admin or the predict token (never in a URL) and sets a random session id in an
``HttpOnly; SameSite=Strict`` cookie (``Secure`` over HTTPS), scoped to ``/console``; sessions live in
memory and end after ``SESSION_TTL_S`` or on sign-out. The admin token gives every page and the forget
form; the predict token (when the service has one) gives a read-only view without reasons and
certificates, which the API also keeps behind the admin token. Every POST carries the session's CSRF token
and is refused when its ``Origin`` is another site. Request ids and reasons travel only in POST bodies;
certificate pages are addressed by the ledger seq of the commit, never by request id. Nothing here logs a
reason.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from fastapi import BackgroundTasks, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from promptforget.service.inputs import ForgetRequest, validation_detail
from promptforget.store import layout
from promptforget.store.durable import MAX_REASON_CHARS
from promptforget.store.certificate import CertificateError, build_certificate, config_record, dumps
from promptforget.store.ledger import GENESIS, Ledger, LedgerError, check_anchor, committed, request_state

HERE = Path(__file__).parent
COOKIE = "promptforget_console"
SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 1000
STALE_FORM = "the form is stale or not from this console (CSRF token); reload the page and try again"
FIGURE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",  # ledger contents and reasons stay out of shared caches and the disk cache
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def templates():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["short"] = lambda h, n=12: (str(h)[:n] + "...") if h and len(str(h)) > n else h
    return env


# ---------------------------------------------------------------------- sessions
@dataclass
class Session:
    role: str  # "admin" | "reader"
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flash: str | None = None


class Sessions:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def new(self, role: str) -> tuple[str, Session]:
        sid, s = secrets.token_urlsafe(32), Session(role, time.time() + SESSION_TTL_S)
        with self._lock:
            now = time.time()
            self._by_id = {k: v for k, v in self._by_id.items() if v.expires > now}
            while len(self._by_id) >= MAX_SESSIONS:
                self._by_id.pop(next(iter(self._by_id)))
            self._by_id[sid] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        with self._lock:
            s = self._by_id.get(sid or "")
            if s is not None and s.expires <= time.time():
                self._by_id.pop(sid, None)
                return None
            return s

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


# ---------------------------------------------------------------------- what the pages show
def model_facts(host) -> dict:
    record = config_record(host.run_dir)
    backbone = record.get("backbone") or {}
    classes = host.classes()
    return {"run": host.run_dir.resolve().name, "family": record.get("family") or "pfm",
            "forgets_examples": host.family.forgets_examples, "exact_forget": host.family.exact_forget,
            "backbone": backbone.get("name_or_path"), "backbone_family": backbone.get("family"),
            "backbone_sha256": backbone.get("sha256"), "modality": backbone.get("modality"),
            "classes": classes["classes"], "active": classes["active"], "forgotten": classes["forgotten"],
            "card": card_facts(host.run_dir)}


def card_facts(run_dir: Path) -> list[tuple[str, str]]:
    """Key facts from the run's model card (README.md front matter): base model, data, evaluation results."""
    path = run_dir / "README.md"
    if not path.is_file():
        return []
    try:
        from huggingface_hub import ModelCard

        data = ModelCard.load(path).data
    except Exception:  # noqa: BLE001 - a card the hub cannot parse is shown as absent, not as a 500
        return [("model card", "present but unreadable")]
    facts = [(k.replace("_", " "), ", ".join(map(str, v)) if isinstance(v, list) else str(v))
             for k in ("base_model", "base_model_sha256", "pipeline_tag", "datasets", "library_name")
             if (v := getattr(data, k, None) or data.to_dict().get(k))]
    for r in getattr(data, "eval_results", None) or []:
        if isinstance(r.metric_value, (int, float)):
            facts.append((r.metric_name, f"{r.metric_value:.3f}"))
    return facts


def deletion_requests(entries: list[dict], with_reasons: bool) -> list[dict]:
    """One row per committed forget, newest first, with whatever the entry holds (classes, examples)."""
    rows = []
    for c in committed(entries):
        st = request_state(entries, c["request_id"]) or {}
        done = next((e for e in entries if e["seq"] == st.get("exact_seq")), None)
        rows.append({"seq": c["seq"], "request_id": c["request_id"], "classes": c.get("classes") or [],
                     "examples": c.get("examples") or [], "reason": c.get("reason") if with_reasons else None,
                     "source": c.get("source"), "time": c.get("time"), "state": st.get("state", "instant"),
                     "exact_time": done.get("time") if done else None})
    return rows[::-1]


def fig_text(fig) -> str:
    from promptforget.audit.report import format_number

    if not isinstance(fig, dict):
        return format_number(fig) if fig is not None else "-"
    text = format_number(fig.get("value"))
    ci = fig.get("ci95")
    return f"{text} [{format_number(ci[0])}, {format_number(ci[1])}]" if ci else text


def latest_audit(run_dir: Path) -> dict | None:
    import json

    from promptforget.audit.report import NO_REFERENCE, verdict_summary

    path = run_dir / layout.AUDIT_DIR / layout.AUDIT_JSON
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        rows = [r for r in record.get("table", []) if isinstance(r, dict)]
        have_reference = any(r.get("verdict") != NO_REFERENCE for r in rows)
        headline = [p.replace("**", "").replace("`", "") for p in verdict_summary(rows, have_reference)]
    except (ValueError, OSError, TypeError, AttributeError) as e:
        return {"error": f"{path.name} cannot be read: {e}"}
    figures = [name for name, p in (record.get("figures") or {}).items()
               if Path(str(p)).suffix.lower() in FIGURE_TYPES and audit_figure(run_dir, record, name)]
    return {"error": None, "headline": headline, "forgotten": (record.get("audit") or {}).get("forgotten_classes") or [],
            "reference_seeds": record.get("reference_seeds"), "figures": figures,
            "rows": [{"metric": r.get("metric"), "kind": r.get("kind"), "verdict": r.get("verdict"),
                      "audited": fig_text(r.get("audited")), "reference": fig_text(r.get("reference")),
                      "original": fig_text(r.get("original")), "tolerance": r.get("tolerance")} for r in rows]}


def audit_figure(run_dir: Path, record: dict, name: str) -> Path | None:
    """The audit figure ``name`` as a file inside the run's audit directory (never a path outside it)."""
    audit_dir = (run_dir / layout.AUDIT_DIR).resolve()
    p = (record.get("figures") or {}).get(name)
    if not isinstance(p, str):
        return None
    f = (audit_dir / Path(p).name).resolve()
    ok = f.parent == audit_dir and f.suffix.lower() in FIGURE_TYPES and f.is_file()
    return f if ok else None


def ledger_view(host, expect_head: str | None) -> dict:
    report = host.check_ledger()
    anchor = None
    if expect_head:
        try:
            entries = Ledger(host.run_dir).read()
            problems = check_anchor(entries, expect_head)
            anchor = {"given": expect_head, "ok": not problems, "message": problems[0] if problems else
                      "the ledger still holds this anchor: no history before it was rewritten"}
        except (ValueError, LedgerError) as e:
            anchor = {"given": expect_head, "ok": False, "message": str(e).replace("--expect-head", "anchor")}
    return {**report, "anchor": anchor, "genesis": report["head_sha256"] == GENESIS}


# ---------------------------------------------------------------------- certificates
def certificate_for(host, request_id: str) -> dict:
    """The signed certificate of ``request_id``; HTTPException 404 (no such commit) or 409 (no key, or the
    ledger does not verify)."""
    try:
        if request_state(Ledger(host.run_dir).read(), request_id) is None:
            raise HTTPException(404, f"no committed forget has request_id {request_id!r}")
        return build_certificate(host.run_dir, request_id, host.key, host.check_ledger())
    except (CertificateError, LedgerError) as e:
        raise HTTPException(409, str(e)) from None


def certificate_html(env, cert: dict, console: bool = False, seq: int | None = None) -> str:
    return env.get_template("certificate.html").render(c=cert, console=console, seq=seq,
                                                       json_text=dumps(cert).decode("ascii"))


def certificate_response(host, env, request_id: str, fmt: str) -> Response:
    cert = certificate_for(host, request_id)
    if fmt == "html":
        return HTMLResponse(certificate_html(env, cert), headers=SECURITY_HEADERS)
    return Response(dumps(cert), media_type="application/json")


# ---------------------------------------------------------------------- routes
def add_console(app, host, settings, forget_route) -> None:
    """Add the console's routes to ``app``. ``forget_route(req, background)``: the API's own POST /forget
    function (raises HTTPException), so the form validates and fails exactly as the API does."""
    env = templates()
    sessions = Sessions()

    def get(path: str):
        return app.get("/console" + path, include_in_schema=False)

    def post(path: str):
        return app.post("/console" + path, include_in_schema=False)

    def page(name: str, status: int = 200, **ctx) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=status, headers=SECURITY_HEADERS)

    def error_page(e: HTTPException) -> HTMLResponse:
        """A refusal as a page a browser user can read (the API's JSON errors are for programs)."""
        titles = {401: "Sign in first", 403: "Not allowed", 404: "Not found", 409: "Cannot be issued now"}
        return page("error.html", e.status_code, code=e.status_code, message=e.detail,
                    title=titles.get(e.status_code, "Refused"))

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def to_login() -> RedirectResponse:
        return RedirectResponse("/console/login", status_code=303)

    async def form_of(request: Request) -> dict[str, list[str]]:
        """A urlencoded body as {name: [values]}; refuses a POST from another origin (CSRF defence in depth)."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-origin form post refused")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise HTTPException(415, "expected a form (application/x-www-form-urlencoded)")
        body = (await request.body()).decode("utf-8", errors="replace")
        out: dict[str, list[str]] = {}
        for k, v in parse_qsl(body, keep_blank_values=True):
            out.setdefault(k, []).append(v)
        return out

    def csrf_ok(s: Session, form: dict) -> bool:
        return hmac.compare_digest((form.get("csrf") or [""])[0].encode(), s.csrf.encode())

    @get("/static/console.css")
    def stylesheet():
        return FileResponse(HERE / "static" / "console.css", media_type="text/css",
                            headers={"Cache-Control": "max-age=3600"})

    @get("/login")
    def login_page(request: Request):
        if session_of(request):
            return RedirectResponse("/console", status_code=303)
        return page("login.html", reader_login=settings.predict_token is not None, error=None)

    @post("/login")
    async def login(request: Request):
        form = await form_of(request)
        given = (form.get("token") or [""])[0].strip().encode("utf-8")
        is_admin = hmac.compare_digest(given, settings.admin_token.encode("utf-8"))
        is_reader = settings.predict_token is not None and hmac.compare_digest(given, settings.predict_token.encode("utf-8"))
        if not (is_admin or is_reader):
            return page("login.html", 401, reader_login=settings.predict_token is not None,
                        error="wrong token: give the service's admin token (or its predict token, read-only)")
        sid, _ = sessions.new("admin" if is_admin else "reader")
        r = RedirectResponse("/console", status_code=303)
        r.set_cookie(COOKIE, sid, max_age=SESSION_TTL_S, path="/console", httponly=True, samesite="strict",
                     secure=request.url.scheme == "https")
        return r

    @post("/logout")
    async def logout(request: Request):
        try:
            form = await form_of(request)
        except HTTPException as e:
            return error_page(e)
        s = session_of(request)
        if s is not None and not csrf_ok(s, form):
            return error_page(HTTPException(403, STALE_FORM))
        sessions.drop(request.cookies.get(COOKIE))
        r = to_login()
        r.delete_cookie(COOKIE, path="/console")
        return r

    def overview(s: Session, expect_head: str | None = None, form: dict | None = None, status: int = 200):
        entries, ledger_error = [], None
        try:
            entries = Ledger(host.run_dir).read()
        except LedgerError as e:
            ledger_error = str(e)
        requests = deletion_requests(entries, with_reasons=s.role == "admin")
        retraining = any(r["state"] == "retraining" for r in requests)
        flash, s.flash = s.flash, None
        return page("console.html", status, s=s, flash=flash, model=model_facts(host), requests=requests,
                    ledger_error=ledger_error, ledger=ledger_view(host, expect_head), audit=latest_audit(host.run_dir),
                    retrain={"active": retraining, "running": getattr(host, "exact_running", False),
                             "problem": getattr(host, "exact_problem", None)},
                    form=form or {"entered": {}, "error": None}, max_reason=MAX_REASON_CHARS)

    @get("")
    def console(request: Request, expect_head: str | None = None):
        s = session_of(request)
        if s is None:
            return to_login()
        return overview(s, (expect_head or "").strip() or None)

    @post("/forget")
    async def file_forget(request: Request, background: BackgroundTasks):
        s = session_of(request)
        if s is None:
            return to_login()
        try:
            form = await form_of(request)
        except HTTPException as e:
            return error_page(e)
        if not csrf_ok(s, form):
            return error_page(HTTPException(403, STALE_FORM))
        if s.role != "admin":
            return error_page(HTTPException(403, "filing a forget needs the admin token"))
        values = {"request_id": (form.get("request_id") or [""])[0].strip(), "reason": (form.get("reason") or [""])[0],
                  "classes": form.get("classes") or [], "exact": (form.get("exact") or [""])[0] == "on",
                  "examples": re.split(r"[\s,]+", (form.get("examples") or [""])[0].strip()) if (form.get("examples") or [""])[0].strip() else []}
        try:
            req = ForgetRequest.model_validate(values)
            r = await run_in_threadpool(forget_route, req, background)
        except ValidationError as e:
            return overview(s, form={"entered": values, "error": validation_detail(e.errors())}, status=422)
        except HTTPException as e:
            return overview(s, form={"entered": values, "error": e.detail}, status=e.status_code)
        what = ", ".join(r["classes"] + ([f"{len(r['examples'])} example(s)"] if r.get("examples") else []))
        s.flash = (f"{'Already on record' if r.get('replayed') else 'Forgotten'}: {what} "
                   f"(request {r['request_id']}, state {r['state']}).")
        return RedirectResponse("/console#requests", status_code=303, background=background)

    def admin_request(request: Request, seq: int) -> str:
        s = session_of(request)
        if s is None or s.role != "admin":
            raise HTTPException(403 if s else 401, "certificates need the admin token: sign in to the console as admin")
        try:
            c = next((e for e in committed(Ledger(host.run_dir).read()) if e["seq"] == seq), None)
        except LedgerError as e:
            raise HTTPException(409, str(e)) from None
        if c is None:
            raise HTTPException(404, f"ledger seq {seq} is not a committed forget")
        return c["request_id"]

    @get("/requests/{seq}/certificate")
    def certificate_page(request: Request, seq: int):
        try:
            cert = certificate_for(host, admin_request(request, seq))
        except HTTPException as e:
            return error_page(e)
        return HTMLResponse(certificate_html(env, cert, console=True, seq=seq), headers=SECURITY_HEADERS)

    @get("/requests/{seq}/certificate.json")
    def certificate_file(request: Request, seq: int):
        cert = certificate_for(host, admin_request(request, seq))
        return Response(dumps(cert), media_type="application/json",
                        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="certificate-{seq}.json"'})

    @get("/audit/{name}")
    def audit_image(request: Request, name: str):
        import json

        if session_of(request) is None:
            raise HTTPException(401, "sign in to the console first")
        try:
            record = json.loads((host.run_dir / layout.AUDIT_DIR / layout.AUDIT_JSON).read_text())
        except (OSError, ValueError):
            record = {}
        f = audit_figure(host.run_dir, record, name)
        if f is None:
            raise HTTPException(404, "no such audit figure")
        return FileResponse(f, media_type=FIGURE_TYPES[f.suffix.lower()], headers={"Cache-Control": "no-store"})
