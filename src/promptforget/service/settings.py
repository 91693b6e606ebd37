"""Settings of the forget service, and where its tokens come from. Tokens are never logged or echoed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from promptforget.utils.config import knob

MIN_TOKEN_CHARS = 16
MIN_TOKEN_DISTINCT_CHARS = 8


def token_problem(token: str | None) -> str | None:
    """Why a token is too weak to guard the service, or None."""
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
        return f"needs at least {MIN_TOKEN_CHARS} characters"
    if len(set(token)) < MIN_TOKEN_DISTINCT_CHARS:
        return f"needs at least {MIN_TOKEN_DISTINCT_CHARS} distinct characters"
    return None


@dataclass
class ServiceSettings:
    admin_token: str = field(default="", repr=False)
    predict_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = knob(2 * 1024 * 1024, "request body cap in bytes")
    max_items: int = knob(64, "texts or images per request")
    max_text_chars: int = knob(10_000, "characters per text")
    max_image_pixels: int = knob(2048 * 2048, "pixels per decoded image")
    mask_forgotten: bool = knob(True, "mask forgotten classes in the head (their prompts are gone either way)")
    grace_timeout_s: float = knob(30.0, "seconds a forget waits for predictions started before it (grace period)",
                                  flag="--grace-timeout")
    poll_interval_s: float = knob(1.0, "seconds between checks for forgets made by another process (0 = off)",
                                  flag="--poll-interval")
    data_root: str | None = knob(None, "where a moved run's training data now is, for exact forgets (else "
                                 "$PROMPTFORGET_DATA_ROOT; its sha256 is checked)")
    ledger_key_file: str | None = knob(None, "file holding the ledger's HMAC key (else $PROMPTFORGET_LEDGER_KEY_FILE "
                                       "or $PROMPTFORGET_LEDGER_KEY)")
    sync_every_request: bool = knob(True, "stat the artefact before each prediction, so no prediction started after "
                                          "any process's acknowledged forget returns a forgotten class")
    read_timeout_s: float = knob(10.0, "seconds a client has to send its request head, and then its body",
                                 flag="--read-timeout")

    def validate(self) -> None:
        why = token_problem(self.admin_token)
        if why:
            raise ValueError(f"an admin token is required and it {why} "
                             "(PROMPTFORGET_ADMIN_TOKEN or --admin-token-file)")
        if self.predict_token is not None:
            why = token_problem(self.predict_token)
            if why:
                raise ValueError(f"the predict token {why} (PROMPTFORGET_PREDICT_TOKEN or --predict-token-file)")
            if self.predict_token == self.admin_token:
                raise ValueError("the predict token must differ from the admin token (whoever may predict could "
                                 "otherwise forget)")
        if not self.read_timeout_s > 0:
            raise ValueError("read_timeout_s must be > 0")
        for k in ("max_body_bytes", "max_items", "max_text_chars", "max_image_pixels"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1")


def read_token(env: str, path: str | os.PathLike | None) -> str | None:
    """A token from a file (first line, stripped) or else from an environment variable; an empty file or
    a variable that is set but empty is an error (it would silently open what the token guards)."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"token file {p} does not exist")
        tok = p.read_text().strip()
        if not tok:
            raise ValueError(f"token file {p} is empty")
        return tok
    tok = os.environ.get(env)
    if tok is None:
        return None
    if not tok.strip():
        raise ValueError(f"{env} is set but empty; unset it or give a token")
    return tok.strip()
