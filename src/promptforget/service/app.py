"""HTTP service for a PFM run: predict, list classes, forget on request, show and verify the ledger.

    POST /predict        {"texts": [...]} | {"images": [base64 PNG/JPEG, ...]} | {"arrays": [uint8 HxW(x3) lists]}
    GET  /classes        all, active and forgotten classes
    POST /forget         {"classes": [...], "reason": "...", "request_id": "..."}      admin token
    GET  /ledger         the deletion ledger's entries (?since=SEQ&limit=N)            admin token
    GET  /ledger/verify  chain + artefact check (read-only)                             admin token
    GET  /health         liveness and the artefact's state
    GET  /docs           OpenAPI page

Forgetting under load (RCU): a prediction takes one reference to the prompt bank and never takes the
forget lock. A forget (``durable.forget``, the same path as the CLI) replaces the artefact, then swaps
the in-memory bank by assignment under a short swap lock, then waits for predictions that started
before the swap to finish (a grace period, at most one forward pass), then commits the ledger and
answers. So predictions never wait on a forget, and once a forget has answered no prediction can come
from the deleted prompt. By default the service also masks forgotten classes in the head
(``mask_forgotten``): their logits are -inf, so a forgotten class is never predicted at all.

Authentication: ``Authorization: Bearer <token>``. Forget and ledger endpoints need the admin token
(``PROMPTFORGET_ADMIN_TOKEN`` or a token file), compared with ``hmac.compare_digest``; predict and
classes are open unless a predict token is set. Tokens are never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hmac
import io
import logging
import os
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from promptforget.service import durable
from promptforget.service.ledger import Ledger, LedgerError, verify

log = logging.getLogger("promptforget.service")

MIN_TOKEN_CHARS = 16
REQUEST_ID_PATTERN = durable.REQUEST_ID_RE.pattern


@dataclass
class ServiceSettings:
    admin_token: str = field(default="", repr=False)
    predict_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 2 * 1024 * 1024
    max_items: int = 64  # texts or images per request
    max_text_chars: int = 10_000
    max_image_pixels: int = 2048 * 2048
    mask_forgotten: bool = True
    grace_timeout_s: float = 30.0
    poll_interval_s: float = 1.0  # notice forgets made by another process (the CLI); 0 = off

    def validate(self) -> None:
        if not isinstance(self.admin_token, str) or len(self.admin_token) < MIN_TOKEN_CHARS:
            raise ValueError(f"an admin token of at least {MIN_TOKEN_CHARS} characters is required "
                             "(PROMPTFORGET_ADMIN_TOKEN or --admin-token-file)")
        if self.predict_token is not None and len(self.predict_token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the predict token must have at least {MIN_TOKEN_CHARS} characters")
        for k in ("max_body_bytes", "max_items", "max_text_chars", "max_image_pixels"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1")


def read_token(env: str, path: str | os.PathLike | None) -> str | None:
    """A token from a file (first line, stripped) or else from an environment variable."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"token file {p} does not exist")
        tok = p.read_text().strip()
        if not tok:
            raise ValueError(f"token file {p} is empty")
        return tok
    tok = os.environ.get(env, "").strip()
    return tok or None


# ---------------------------------------------------------------------- readers / grace periods
class Readers:
    """Counts predictions per generation; ``synchronize`` waits until every reader that may hold the
    bank from before the last swap has finished (readers never block on it)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._gen = 0
        self._count: collections.Counter[int] = collections.Counter()

    @contextmanager
    def read(self):
        with self._cv:
            g = self._gen
            self._count[g] += 1
        try:
            yield g
        finally:
            with self._cv:
                self._count[g] -= 1
                if not self._count[g]:
                    del self._count[g]
                    self._cv.notify_all()

    def synchronize(self, timeout: float) -> bool:
        with self._cv:
            self._gen += 1
            new = self._gen
            return self._cv.wait_for(lambda: all(g >= new for g in self._count), timeout)


# ---------------------------------------------------------------------- the model host
class ModelHost:
    def __init__(self, run_dir: str | os.PathLike, settings: ServiceSettings, model=None):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.recovery = durable.recover(self.run_dir)  # a crashed forget is resolved before serving
        if self.recovery["resolved"] or self.recovery["torn_tail_bytes"] or self.recovery["stale_temps"]:
            log.warning("recovered run %s: %s", self.run_dir, self.recovery)
        if model is None:
            from promptforget.pfm.model import PFMModel

            model = PFMModel.from_pretrained(self.run_dir)
        self.model = model.eval()
        self.modality = model.encoder.modality
        self.readers = Readers()
        self._swap_lock = threading.Lock()
        self._tok_lock = threading.Lock()  # HF fast tokenizers are not safe to call from several threads
        self.in_sync = True
        self.started = time.time()
        self._stat = self._weights_stat()
        self._stop = threading.Event()
        self._sync_to_disk()
        self._watcher = None
        if settings.poll_interval_s > 0:
            self._watcher = threading.Thread(target=self._watch, name="promptforget-artefact-watch", daemon=True)
            self._watcher.start()

    def close(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------- predictions
    def predict(self, raw, top_k: int = 1) -> dict:
        import torch

        if self.modality == "text":
            with self._tok_lock:
                inputs = self.model.preprocess(raw)
        else:
            inputs = self.model.preprocess(raw)
        with self.readers.read() as gen, torch.inference_mode():
            logits = self.model(inputs, mask_forgotten=self.settings.mask_forgotten)
        probs = torch.softmax(logits.float(), dim=-1)
        k = min(top_k, probs.shape[1])
        p, idx = probs.topk(k, dim=-1)
        names = self.model.class_names
        preds = []
        for row_p, row_i in zip(p.tolist(), idx.tolist()):
            top = [{"class": names[i], "probability": q} for i, q in zip(row_i, row_p)]
            preds.append({"label": top[0]["class"], "probability": top[0]["probability"], "top": top})
        return {"predictions": preds, "generation": gen}

    # ---------------------------------------------------------------- forgetting
    def swap(self, active: list[str]) -> None:
        """Drop from memory every prompt the artefact no longer holds, then wait out older readers."""
        with self._swap_lock:
            stale = [c for c in self.model.active_classes if c not in active]
            if stale:
                self.model.forget(stale)  # replaces the prompt dict by assignment (RCU)
            extra = [c for c in active if c not in self.model.active_classes]
            self.in_sync = not extra
            if extra:
                log.error("artefact holds prompts this process has forgotten (%s): it was replaced outside "
                          "the ledger; keeping them forgotten in memory", extra)
        if stale and not self.readers.synchronize(self.settings.grace_timeout_s):
            log.warning("grace period: predictions started before the swap still running after %.0fs",
                        self.settings.grace_timeout_s)

    def forget(self, classes: list[str], reason: str, request_id: str) -> durable.ForgetResult:
        r = durable.forget(self.run_dir, classes, reason=reason, request_id=request_id, source="service",
                           on_artefact=self.swap)
        self._stat = self._weights_stat()
        log.info("forget %s request_id=%s replayed=%s seq=%d total=%.1fms", r.classes, r.request_id, r.replayed,
                 r.ledger_seq, r.timings_ms.get("total", 0.0))
        return r

    # ---------------------------------------------------------------- forgets made elsewhere (CLI)
    def _weights_stat(self):
        try:
            s = (self.run_dir / durable.WEIGHTS_NAME).stat()
            return (s.st_ino, s.st_mtime_ns, s.st_size)
        except FileNotFoundError:
            return None

    def _sync_to_disk(self) -> None:
        self.swap(durable.artefact_state(self.run_dir)["active_classes"])

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            st = self._weights_stat()
            if st is not None and st != self._stat:
                self._stat = st
                try:
                    self._sync_to_disk()
                except Exception:  # noqa: BLE001 - a watcher must not die; the next change retries
                    log.exception("could not sync with the artefact")

    def classes(self) -> dict:
        m = self.model
        return {"classes": m.class_names, "active": m.active_classes, "forgotten": m.forgotten_classes,
                "mask_forgotten": self.settings.mask_forgotten}


# ---------------------------------------------------------------------- input decoding
def _fail(status: int, msg: str):
    raise HTTPException(status_code=status, detail=msg)


def decode_image(b64: str, i: int, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not isinstance(b64, str) or not b64:
        _fail(422, f"images[{i}]: expected a non-empty base64 string")
    if b64.startswith("data:") and "," in b64:  # accept data URLs
        b64 = b64.split(",", 1)[1]
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        _fail(422, f"images[{i}]: not valid base64")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        _fail(415, f"images[{i}]: not an image PNG or JPEG can decode")
    if im.format not in ("PNG", "JPEG"):
        _fail(415, f"images[{i}]: {im.format} is not accepted (send PNG or JPEG)")
    w, h = im.size
    if w * h > max_pixels:
        _fail(413, f"images[{i}]: {w}x{h} pixels exceeds the limit of {max_pixels}")
    try:
        im.load()
    except (OSError, SyntaxError) as e:
        _fail(422, f"images[{i}]: broken {im.format} data ({e})")
    return np.asarray(im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"), dtype=np.uint8)


def decode_array(a: Any, i: int, max_pixels: int) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except ValueError:
        _fail(422, f"arrays[{i}]: ragged nested lists (rows of different lengths)")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)) or arr.size == 0:
        _fail(422, f"arrays[{i}]: expected [H][W] or [H][W][3] values, got shape {list(arr.shape)}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        _fail(413, f"arrays[{i}]: {arr.shape[1]}x{arr.shape[0]} pixels exceeds the limit of {max_pixels}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
        _fail(422, f"arrays[{i}]: values must be integers in 0..255")
    return arr.astype(np.uint8)


# ---------------------------------------------------------------------- body size limit (ASGI)
class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before they reach JSON parsing (also chunked ones)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                return await _plain(send, 400, "invalid Content-Length header")
            if n > self.max_bytes:
                return await _plain(send, 413, f"request body of {n} bytes exceeds the limit of {self.max_bytes} bytes")
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _plain(send, 413, f"request body exceeds the limit of {self.max_bytes} bytes")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send, status: int, msg: str) -> None:
    import json

    data = json.dumps({"detail": msg}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------- request bodies
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] | None = Field(None, description="text backbones: the inputs")
    images: list[str] | None = Field(None, description="image backbones: base64 PNG or JPEG (data URLs accepted)")
    arrays: list[list] | None = Field(None, description="image backbones: uint8 pixels as [H][W] or [H][W][3] lists")
    top_k: int = Field(1, ge=1, le=1000, description="how many classes to return per input")

class ForgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classes: list[str] = Field(..., min_length=1, description="class names to forget (all or nothing)")
    reason: str = Field(..., min_length=1, max_length=durable.MAX_REASON_CHARS, description="why; recorded in the ledger")
    request_id: str = Field(..., pattern=REQUEST_ID_PATTERN, description="idempotency key: a repeat changes nothing")


# ---------------------------------------------------------------------- the app
def create_app(run_dir: str | os.PathLike, settings: ServiceSettings, model=None):
    from promptforget import __version__

    settings.validate()
    host = ModelHost(run_dir, settings, model)

    @asynccontextmanager
    async def lifespan(app):
        yield
        host.close()

    app = FastAPI(
        title="promptforget service",
        version=__version__,
        description="Predict with a Pre-Forgettable Model and forget classes on request, durably and with a "
        "hash-chained deletion ledger. Forget and ledger endpoints need the admin bearer token.",
        lifespan=lifespan,
    )
    app.state.host = host
    bearer = HTTPBearer(auto_error=False)

    def _check(creds: HTTPAuthorizationCredentials | None, expected: str, what: str) -> None:
        given = creds.credentials.encode() if creds is not None else b""
        # compare_digest on every path (also a missing token) so timing says nothing about the token
        ok = hmac.compare_digest(given, expected.encode())
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
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}" for e in errs]
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.get("/health")
    def health() -> dict:
        st = durable.artefact_state(host.run_dir)
        return {"status": "ok" if host.in_sync else "degraded", "modality": host.modality,
                "active_classes": len(host.model.active_classes), "forgotten_classes": len(host.model.forgotten_classes),
                "artefact_sha256": st["artefact_sha256"], "in_sync_with_artefact": host.in_sync,
                "uptime_s": round(time.time() - host.started, 3)}

    @app.get("/classes", dependencies=[Depends(reader)])
    def classes() -> dict:
        return host.classes()

    @app.post("/predict", dependencies=[Depends(reader)])
    def predict(req: PredictRequest) -> dict:
        given = [k for k in ("texts", "images", "arrays") if getattr(req, k) is not None]
        if len(given) != 1:
            _fail(422, "give exactly one of texts, images or arrays")
        kind = given[0]
        items = getattr(req, kind)
        if not items:
            _fail(422, f"{kind} is empty: send at least one input")
        if len(items) > settings.max_items:
            _fail(413, f"{len(items)} inputs exceed the limit of {settings.max_items} per request")
        want = "text" if kind == "texts" else "image"
        if want != host.modality:
            _fail(422, f"this model takes {host.modality} inputs, got {kind}")
        if kind == "texts":
            for i, t in enumerate(items):
                if not t.strip():
                    _fail(422, f"texts[{i}] is empty")
                if len(t) > settings.max_text_chars:
                    _fail(413, f"texts[{i}] has {len(t)} characters, over the limit of {settings.max_text_chars}")
            raw = list(items)
        elif kind == "images":
            raw = [decode_image(b, i, settings.max_image_pixels) for i, b in enumerate(items)]
        else:
            raw = [decode_array(a, i, settings.max_image_pixels) for i, a in enumerate(items)]
        try:
            out = host.predict(raw, req.top_k)
        except ValueError as e:
            _fail(422, f"cannot preprocess the inputs: {e}")
        return out

    @app.post("/forget", dependencies=[Depends(admin)])
    def forget(req: ForgetRequest) -> dict:
        try:
            r = host.forget(req.classes, req.reason, req.request_id)
        except LedgerError as e:  # before ForgetError: both are ValueErrors
            _fail(500, f"ledger problem, nothing was forgotten: {e}")
        except durable.ForgetError as e:
            _fail(e.status, str(e))
        except TimeoutError as e:
            _fail(503, str(e))
        return r.to_dict()

    @app.get("/ledger", dependencies=[Depends(admin)])
    def ledger(since: int = Query(0, ge=0), limit: int = Query(1000, ge=1, le=100_000)) -> dict:
        try:
            entries = Ledger(host.run_dir).read()
        except LedgerError as e:
            _fail(500, str(e))
        sel = [e for e in entries if e.get("seq", 0) > since][:limit]
        return {"entries": sel, "count": len(sel), "total": len(entries),
                "head_sha256": entries[-1]["entry_sha256"] if entries else None}

    @app.get("/ledger/verify", dependencies=[Depends(admin)])
    def ledger_verify() -> dict:
        return verify(host.run_dir)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
