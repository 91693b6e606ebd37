"""/docs and /redoc load nothing from the network: every asset they reference is served by the app."""

from __future__ import annotations

import re
import socket

import pytest
from fastapi.testclient import TestClient

from promptforget.service.app import create_app
from promptforget.service.settings import ServiceSettings

ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets(page, text_run, no_network):
    with TestClient(create_app(text_run, ServiceSettings(admin_token=ADMIN))) as client:
        r = client.get(page)
        assert r.status_code == 200
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url|spec-url)\s*:\s*["']([^"']+)["']""", r.text)
        urls = [a or b for a, b in urls]
        assert urls, r.text
        remote = [u for u in urls if re.match(r"^(https?:)?//", u)]
        assert not remote, f"{page} loads {remote}"
        for u in urls:
            asset = client.get(u)
            assert asset.status_code == 200, u
            assert asset.content, u
        assert client.get("/openapi.json").status_code == 200
