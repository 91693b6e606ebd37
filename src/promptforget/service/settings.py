"""Settings of the forget service, and where its tokens come from. Tokens are never logged or echoed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MIN_TOKEN_CHARS = 16


@dataclass
class ServiceSettings:
    admin_token: str = field(default="", repr=False)
    predict_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = field(default=2 * 1024 * 1024, metadata={"help": "request body cap in bytes"})
    max_items: int = field(default=64, metadata={"help": "texts or images per request"})
    max_text_chars: int = field(default=10_000, metadata={"help": "characters per text"})
    max_image_pixels: int = field(default=2048 * 2048, metadata={"help": "pixels per decoded image"})
    mask_forgotten: bool = field(default=True, metadata={
        "help": "mask forgotten classes in the head (their prompts are gone either way)"})
    grace_timeout_s: float = field(default=30.0, metadata={
        "flag": "--grace-timeout", "help": "seconds a forget waits for predictions started before it (grace period)"})
    # Notices forgets made by another process (the CLI).
    poll_interval_s: float = field(default=1.0, metadata={
        "flag": "--poll-interval", "help": "seconds between checks for forgets made by another process (0 = off)"})

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
