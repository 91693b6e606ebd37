"""What the service accepts: request bodies, text, image and array decoding, the body size and time limits,
and the bearer-token gate that runs before any body is read."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
from typing import Any

import numpy as np
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptforget.store import durable

REQUEST_ID_PATTERN = f"^{durable.REQUEST_ID_CHARS}$"  # pydantic's regex engine: "$" is the true end


def http_error(status: int, msg: str):
    raise HTTPException(status_code=status, detail=msg)


def validation_detail(errs: list[dict]) -> str:
    """Pydantic's errors as one line: ``field: message; ...`` (the API's 422 detail, also the console's)."""
    return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                     for e in errs)


def check_text(t: str, i: int) -> None:
    """A text the tokenizer can take: no lone surrogates (JSON allows ``\ud800``; UTF-8 does not)."""
    try:
        t.encode("utf-8")
    except UnicodeEncodeError as e:
        http_error(422, f"texts[{i}]: not valid Unicode ({e.reason} at character {e.start})")


def decode_image(b64: str, i: int, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not isinstance(b64, str) or not b64:
        http_error(422, f"images[{i}]: expected a non-empty base64 string")
    if b64.startswith("data:") and "," in b64:  # accept data URLs
        b64 = b64.split(",", 1)[1]
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        http_error(422, f"images[{i}]: not valid base64")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        http_error(415, f"images[{i}]: not an image PNG or JPEG can decode")
    if im.format not in ("PNG", "JPEG"):
        http_error(415, f"images[{i}]: {im.format} is not accepted (send PNG or JPEG)")
    w, h = im.size
    if w * h > max_pixels:
        http_error(413, f"images[{i}]: {w}x{h} pixels exceeds the limit of {max_pixels}")
    try:
        im.load()
    except (OSError, SyntaxError) as e:
        http_error(422, f"images[{i}]: broken {im.format} data ({e})")
    return np.asarray(im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"), dtype=np.uint8)


def decode_array(a: Any, i: int, max_pixels: int) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except ValueError:
        http_error(422, f"arrays[{i}]: ragged nested lists (rows of different lengths)")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)) or arr.size == 0:
        http_error(422, f"arrays[{i}]: expected [H][W] or [H][W][3] values, got shape {list(arr.shape)}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        http_error(413, f"arrays[{i}]: {arr.shape[1]}x{arr.shape[0]} pixels exceeds the limit of {max_pixels}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
        http_error(422, f"arrays[{i}]: values must be integers in 0..255")
    return arr.astype(np.uint8)


# ---------------------------------------------------------------------- body size limit (ASGI)
class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before they reach JSON parsing (also chunked ones),
    and bodies that take longer than ``timeout_s`` to arrive with 408."""

    def __init__(self, app, max_bytes: int, timeout_s: float = 10.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

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
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while more:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                return await _plain(send, 408, f"request body not received within {self.timeout_s:g} s")
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


# ---------------------------------------------------------------------- bearer tokens (ASGI, before the body)
def bearer_matches(authorization: bytes | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared as bytes: the header's raw bytes against the token's
    UTF-8 bytes, in constant time (also when the header is missing)."""
    scheme, _, given = (authorization or b"").partition(b" ")
    ok = hmac.compare_digest(given.strip(), token.encode("utf-8"))
    return ok and scheme.lower() == b"bearer"


class AuthGate:
    """Answer 401 before a body is read or parsed when a guarded path lacks its token.
    ``token_for(path)`` returns the token a path needs, or None for an open path."""

    def __init__(self, app, token_for):
        self.app, self.token_for = app, token_for

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            token = self.token_for(scope.get("path", ""))
            if token is not None:
                given = next((v for k, v in scope.get("headers") or [] if k == b"authorization"), None)
                if not bearer_matches(given, token):
                    return await _plain(send, 401, "missing or wrong bearer token",
                                        [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


async def _plain(send, status: int, msg: str, extra_headers=()) -> None:
    import json

    data = json.dumps({"detail": msg}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close"), *extra_headers]})
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------- request bodies
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] | None = Field(None, description="text backbones: the inputs")
    images: list[str] | None = Field(None, description="image backbones: base64 PNG or JPEG (data URLs accepted)")
    arrays: list[list] | None = Field(None, description="image backbones: uint8 pixels as [H][W] or [H][W][3] lists")
    top_k: int = Field(1, ge=1, le=1000, strict=True, description="how many classes to return per input")

class ForgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classes: list[str] = Field([], description="class names to forget (all or nothing)")
    examples: list[str] = Field([], max_length=durable.MAX_EXAMPLES_PER_REQUEST,
                                description="analytic runs: ids of training examples to forget, exactly (the ledger "
                                "records keyed hashes only); a PFM run refuses them (400)")
    reason: str = Field(..., min_length=1, max_length=durable.MAX_REASON_CHARS, description="why; recorded in the ledger")
    request_id: str = Field(..., pattern=REQUEST_ID_PATTERN, description="idempotency key: a repeat changes nothing")
    exact: bool = Field(False, strict=True, description="then retrain the shared weights without the classes' data, in the "
                        "background (GET /forget/{request_id} tells when it is done); refused (409) when the run's "
                        "training data is unavailable or changed")

    @model_validator(mode="after")
    def _something_to_forget(self):
        if not self.classes and not self.examples:
            raise ValueError("give classes or examples (at least one)")
        return self