"""Settings of the forget service, and where its tokens come from. Tokens are never logged or echoed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from promptforget.utils.config import knob

MIN_TOKEN_CHARS = 16


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
