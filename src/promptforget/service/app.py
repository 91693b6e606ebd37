"""HTTP service for a PFM run: predict, list classes, forget on request, show and verify the ledger.

    POST /predict        {"texts": [...]} | {"images": [base64 PNG/JPEG, ...]} | {"arrays": [uint8 HxW(x3) lists]}
    GET  /classes        all, active and forgotten classes
    POST /forget         {"classes": [...], "reason": "...", "request_id": "...", "exact": false}   admin token
    GET  /forget/{id}    a forget request's state: instant | retraining | exact               admin token
    GET  /forget/{id}/certificate  its signed deletion certificate (?format=html)           admin token
    GET  /console        the compliance console (HTML; sign-in form, service.console)
    GET  /ledger         the deletion ledger's entries (?since=SEQ&limit=N)            admin token
    GET  /ledger/verify  chain + signatures + artefact check (read-only)                admin token
    GET  /health         readiness: 200 when the ledger verifies, else 503 with the reason
    GET  /health/live    liveness: 200 while the process serves
    GET  /metrics        Prometheus metrics (service.metrics)                          predict token if set
    GET  /docs, /redoc   OpenAPI pages (Swagger UI, ReDoc), served from local assets: they work offline

The model and its forget path live in :mod:`promptforget.service.host` (RCU: predictions never wait on
a forget); request bodies and decoding in :mod:`promptforget.service.inputs`. By default the service
masks forgotten classes in the head (``mask_forgotten``): their logits are -inf, so a forgotten class is
never predicted at all.

Authentication: ``Authorization: Bearer <token>``. Forget and ledger endpoints need the admin token
(``PROMPTFORGET_ADMIN_TOKEN`` or a token file); predict and classes are open unless a predict token is
set (``/metrics`` too: it goes with ``/classes``). The check runs before the body is read (an unauthenticated client gets 401, whatever it sent), and
compares bytes (the token as UTF-8) with ``hmac.compare_digest``. Tokens are never logged or echoed.

``"exact": true`` answers once the prompt is deleted (``state: "retraining"``); the retrain without the
classes' data runs in the background and replaces the model when done (``state: "exact"``).

A ledger that does not verify (tampered, malformed, signed with another key, shorter than or diverging
from its anchor) makes ``POST /forget`` answer 409 and ``/health`` 503 until it verifies again (``/health``
re-verifies whenever the ledger or the artefact changed on disk); a disk error on a forget is 507 (full) or
503. A class the ledger says is forgotten is never predicted, whatever the artefact holds.

Every route declares its response model and error codes (:mod:`promptforget.service.responses`), so the
OpenAPI schema is complete. A committed forget rewrites the run's model card after the response is sent.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import BackgroundTasks, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline

from promptforget.service.console import add_console, certificate_response, templates
from promptforget.service.host import ModelHost
from promptforget.service.inputs import (AuthGate, BodyLimit, ForgetRequest, PredictRequest, check_text, decode_array,
                                         decode_image, http_error, validation_detail)
from promptforget.service.metrics import CONTENT_TYPE, RequestMetrics, ServiceMetrics, forget_outcome
from promptforget.service.responses import (ClassesResponse, ForgetResponse, ForgetState, LedgerPage, Liveness, NotReady,
                                            PredictResponse, Readiness, VerifyReport, errors)
from promptforget.service.settings import ServiceSettings
from promptforget.store import durable
from promptforget.store.ledger import Ledger, LedgerError

ADMIN_PATHS = ("/forget", "/ledger", "/ledger/verify")
READ_PATHS = ("/predict", "/classes", "/metrics")
access_log = logging.getLogger("promptforget.service.access")


def create_app(run_dir: str | os.PathLike, settings: ServiceSettings, model=None):
    from promptforget import __version__

    settings.validate()
    host = ModelHost(run_dir, settings, model)

    @asynccontextmanager
    async def lifespan(app):
        yield
        host.close()

    # /docs and /redoc from the packaged Swagger UI / ReDoc assets: no CDN, so they work offline
    app = FastAPIOffline(
        title="promptforget service",
        version=__version__,
        description="Predict with a Pre-Forgettable Model and forget classes on request, durably and with a "
        "hash-chained deletion ledger. Forget and ledger endpoints need the admin bearer token.",
        lifespan=lifespan,
    )
    app.state.host = host
    app.state.metrics = metrics = ServiceMetrics(host)
    bearer = HTTPBearer(auto_error=False)
    console_env = templates()

    def _check(creds: HTTPAuthorizationCredentials | None, expected: str, what: str) -> None:
        # Starlette decodes headers as latin-1: encoding back gives the bytes the client sent
        given = creds.credentials.encode("latin-1") if creds is not None else b""
        # compare_digest on every path (also a missing token) so timing says nothing about the token
        ok = hmac.compare_digest(given, expected.encode("utf-8"))
        if creds is None or not ok:
            raise HTTPException(401, f"missing or wrong {what} token", headers={"WWW-Authenticate": "Bearer"})

    def admin(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        _check(creds, settings.admin_token, "admin")

    def reader(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.predict_token is not None:
            _check(creds, settings.predict_token, "predict")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            ctx = next(e for e in errs if e.get("type") == "json_invalid").get("ctx", {})
            return JSONResponse({"detail": f"malformed JSON: {ctx.get('error', 'cannot parse the body')}"}, status_code=400)
        return JSONResponse({"detail": validation_detail(errs)}, status_code=422)

    @app.get("/health/live", response_model=Liveness)
    def live() -> dict:
        return {"status": "alive", "uptime_s": round(time.time() - host.started, 3)}

    @app.get("/health", response_model=Readiness, responses={503: {"model": NotReady, "description": "not ready"}})
    def health():
        host.check_ledger_if_changed()  # a tampered or repaired ledger is noticed without a forget or a restart
        if not host.ready:
            return JSONResponse({"status": "ledger_broken", "detail": f"the deletion ledger does not verify; "
                                 f"forgets are refused: {host.ledger_problem}"}, status_code=503)
        host.sync_if_changed()
        try:
            st = durable.artefact_state(host.run_dir)
        except (OSError, ValueError) as e:
            return JSONResponse({"status": "artefact_unreadable", "detail": str(e)}, status_code=503)
        return {"status": "ok" if host.in_sync else "degraded", "modality": host.modality,
                "active_classes": len(host.model.active_classes), "forgotten_classes": len(host.model.forgotten_classes),
                "artefact_sha256": st["artefact_sha256"], "in_sync_with_artefact": host.in_sync,
                "uptime_s": round(time.time() - host.started, 3)}

    @app.get("/classes", dependencies=[Depends(reader)], response_model=ClassesResponse, responses=errors(401))
    def classes() -> dict:
        return host.classes()

    @app.get("/metrics", dependencies=[Depends(reader)], response_class=Response, responses={
        200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
              "description": "Prometheus text exposition format"}, **errors(401)})
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/predict", dependencies=[Depends(reader)], response_model=PredictResponse,
              responses=errors(400, 401, 408, 413, 415, 422))
    def predict(req: PredictRequest) -> dict:
        given = [k for k in ("texts", "images", "arrays") if getattr(req, k) is not None]
        if len(given) != 1:
            http_error(422, "give exactly one of texts, images or arrays")
        kind = given[0]
        items = getattr(req, kind)
        if not items:
            http_error(422, f"{kind} is empty: send at least one input")
        if len(items) > settings.max_items:
            http_error(413, f"{len(items)} inputs exceed the limit of {settings.max_items} per request")
        want = "text" if kind == "texts" else "image"
        if want != host.modality:
            http_error(422, f"this model takes {host.modality} inputs, got {kind}")
        if kind == "texts":
            for i, t in enumerate(items):
                check_text(t, i)
                if not t.strip():
                    http_error(422, f"texts[{i}] is empty")
                if len(t) > settings.max_text_chars:
                    http_error(413, f"texts[{i}] has {len(t)} characters, over the limit of {settings.max_text_chars}")
            raw = list(items)
        elif kind == "images":
            raw = [decode_image(b, i, settings.max_image_pixels) for i, b in enumerate(items)]
        else:
            raw = [decode_array(a, i, settings.max_image_pixels) for i, a in enumerate(items)]
        try:
            out = host.predict(raw, req.top_k)
        except ValueError as e:
            http_error(422, f"cannot preprocess the inputs: {e}")
        return out

    @app.post("/forget", dependencies=[Depends(admin)], response_model=ForgetResponse,
              responses=errors(400, 401, 404, 408, 409, 413, 422, 503, 507))
    def forget(req: ForgetRequest, background: BackgroundTasks) -> dict:
        try:
            r = host.forget(req.classes, req.reason, req.request_id, exact=req.exact, examples=req.examples)
        except (ValueError, OSError) as e:  # TimeoutError is an OSError
            metrics.forgets.labels(forget_outcome(e)).inc()
            if isinstance(e, LedgerError):  # before ForgetError: both are ValueErrors
                http_error(409, f"ledger problem, nothing was forgotten: {e}")
            if isinstance(e, durable.ForgetError):  # StorageError included: 507 (disk full) or 503
                http_error(e.status, str(e))
            if isinstance(e, TimeoutError):
                http_error(503, str(e))
            if isinstance(e, OSError):
                http_error(503, f"cannot read the run ({e.strerror or e}); nothing was forgotten")
            raise
        metrics.forgets.labels(forget_outcome(None, r.replayed)).inc()
        if not r.replayed:
            background.add_task(host.update_model_card)  # after the response: off the forget's latency
        state = host.request_state(r.request_id)
        return {**r.to_dict(), "state": state["state"] if state else "instant"}

    # Before the state route, whose {request_id:path} would take ".../certificate" as a request id.
    @app.get("/forget/{request_id:path}/certificate", dependencies=[Depends(admin)], response_class=Response,
             responses={200: {"description": "the signed certificate (canonical JSON), or its printable HTML view",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          "text/html": {"schema": {"type": "string"}}}},
                        **errors(401, 404, 409, 422)})
    def forget_certificate(request_id: str, format: Literal["json", "html"] = "json") -> Response:
        """The signed deletion certificate (JSON; ``?format=html``: printable); see store/certificate.py."""
        return certificate_response(host, console_env, request_id, format)

    @app.get("/forget/{request_id:path}", dependencies=[Depends(admin)], response_model=ForgetState,
             responses=errors(401, 404, 409))
    def forget_state(request_id: str) -> dict:
        try:
            state = host.request_state(request_id)
        except LedgerError as e:
            http_error(409, str(e))
        if state is None:
            http_error(404, f"no committed forget has request_id {request_id!r}")
        return state

    @app.get("/ledger", dependencies=[Depends(admin)], response_model=LedgerPage, responses=errors(401, 409, 422))
    def ledger(since: int = Query(0, ge=0), limit: int = Query(1000, ge=1, le=100_000)) -> dict:
        try:
            entries = Ledger(host.run_dir).read()
        except LedgerError as e:
            http_error(409, str(e))
        sel = [e for e in entries if e.get("seq", 0) > since][:limit]
        return {"entries": sel, "count": len(sel), "total": len(entries),
                "head_sha256": entries[-1]["entry_sha256"] if entries else None}

    @app.get("/ledger/verify", dependencies=[Depends(admin)], response_model=VerifyReport, responses=errors(401))
    def ledger_verify() -> dict:
        return host.check_ledger()  # 200 with ``ok`` and the problems, each naming the line and the field

    add_console(app, host, settings, forget)  # /console: the compliance console (service/console.py)

    def token_for(path: str) -> str | None:
        path = path.rstrip("/") or "/"
        if path in ADMIN_PATHS or path.startswith("/forget/"):
            return settings.admin_token
        return settings.predict_token if path in READ_PATHS else None

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.read_timeout_s)
    app.add_middleware(AuthGate, token_for=token_for)  # runs before the body is read
    app.add_middleware(RequestMetrics, metrics=metrics, routes=app.router.routes, log=access_log)  # outermost
    return app
