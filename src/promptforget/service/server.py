"""The uvicorn server settings the service runs with: a read deadline on every connection.

uvicorn's h11 protocol only times out a connection that is idle *after* a response (keep-alive); a
client that connects and sends nothing, or dribbles a request head, holds a connection forever. The
protocol below also gives every connection ``read_timeout_s`` to deliver its request head, from the
moment it opens and again after each response; the body gets the same deadline in
:class:`promptforget.service.inputs.BodyLimit` (408).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


def timed_h11_protocol(read_timeout_s: float) -> type[H11Protocol]:
    class TimedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(read_timeout_s, self._head_deadline)

        def _head_deadline(self) -> None:
            self._head_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being served; its body has its own deadline
            if not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol


def uvicorn_config(app, settings, **kwargs):
    """``uvicorn.Config`` for the service app, with the read deadline of ``settings.read_timeout_s``."""
    import uvicorn

    return uvicorn.Config(app, http=timed_h11_protocol(settings.read_timeout_s), **kwargs)
