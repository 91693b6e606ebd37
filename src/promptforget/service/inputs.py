"""What the service accepts: request bodies, image and array decoding, the body size limit."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from promptforget.store import durable

REQUEST_ID_PATTERN = durable.REQUEST_ID_RE.pattern


def http_error(status: int, msg: str):
    raise HTTPException(status_code=status, detail=msg)


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
