"""Prometheus metrics of one service app (``GET /metrics``), on a registry of its own so that several
apps in one process never share or clash over series.

    promptforget_http_requests_total{route,method,status}          requests answered
    promptforget_http_request_duration_seconds{route,method,status} time to the last byte of the response
    promptforget_forgets_total{outcome}                             forget requests by outcome (FORGET_OUTCOMES)
    promptforget_active_classes / promptforget_forgotten_classes    classes in memory now
    promptforget_ledger_entries / promptforget_ledger_last_seq      the deletion ledger on disk
    promptforget_ledger_verified                                    1 while the ledger verifies (readiness)
    promptforget_model_in_sync                                      1 while memory holds what the artefact holds

``route`` is the route's path template (``/ledger``, never a query or an id), or ``unmatched``: a
client cannot create series. Requests refused before routing (401, 413, 408) are counted too.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.routing import Match

from promptforget.store import durable
from promptforget.store.ledger import Ledger, LedgerError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FORGET_OUTCOMES = ("committed", "replayed", "unknown_class", "already_forgotten", "request_id_conflict", "invalid",
                   "ledger", "disk_full", "disk", "busy", "unreadable")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def forget_outcome(error: Exception | None, replayed: bool = False) -> str:
    """The ``outcome`` label of a forget that returned (``error`` None) or raised ``error``."""
    if error is None:
        return "replayed" if replayed else "committed"
    if isinstance(error, LedgerError):  # before ForgetError: both are ValueErrors
        return "ledger"
    if isinstance(error, durable.StorageError):
        return "disk_full" if error.status == 507 else "disk"
    for cls, outcome in ((durable.UnknownClassNameError, "unknown_class"),
                         (durable.AlreadyForgottenError, "already_forgotten"),
                         (durable.RequestIdConflictError, "request_id_conflict"), (durable.ForgetError, "invalid"),
                         (TimeoutError, "busy"), (OSError, "unreadable")):
        if isinstance(error, cls):
            return outcome
    return "error"


class HostCollector:
    """Gauges read from the model host and the ledger file at scrape time (never stale)."""

    def __init__(self, host):
        self.host = host
        self._ledger_stat = None
        self._ledger_facts = (0, 0)

    def ledger_facts(self) -> tuple[int, int] | None:
        """(entries, last seq) of the ledger on disk; re-read only when the file changed."""
        path = Ledger(self.host.run_dir).path
        try:
            s = path.stat()
            stat = (s.st_ino, s.st_mtime_ns, s.st_size)
        except FileNotFoundError:
            return 0, 0
        if stat != self._ledger_stat:
            try:
                entries = Ledger(self.host.run_dir).read()
            except (LedgerError, OSError):
                return None
            self._ledger_facts = (len(entries), entries[-1]["seq"] if entries else 0)
            self._ledger_stat = stat
        return self._ledger_facts

    def collect(self):
        host = self.host
        host.sync_if_changed()
        model = host.model

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"promptforget_{name}", doc, value=value)

        yield gauge("active_classes", "classes whose prompts the served model holds", len(model.active_classes))
        yield gauge("forgotten_classes", "classes forgotten in the served model", len(model.forgotten_classes))
        yield gauge("ledger_verified", "1 while the deletion ledger verifies (forgets accepted), else 0", host.ready)
        yield gauge("model_in_sync", "1 while the served model holds exactly the artefact's prompts", host.in_sync)
        facts = self.ledger_facts()
        if facts is not None:  # an unreadable ledger shows as ledger_verified 0 once checked; no guess here
            yield gauge("ledger_entries", "entries in the deletion ledger (pending, commit, abort)", facts[0])
            yield gauge("ledger_last_seq", "seq of the ledger's last entry (0 when empty)", facts[1])


class ServiceMetrics:
    def __init__(self, host):
        self.registry = CollectorRegistry()
        self.requests = Counter("promptforget_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("promptforget_http_request_duration_seconds",
                                 "seconds from the request's arrival to the last byte of its response",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.forgets = Counter("promptforget_forgets", "forget requests by outcome", ["outcome"],
                               registry=self.registry)
        for outcome in FORGET_OUTCOMES:
            self.forgets.labels(outcome)  # every outcome is a series from the start, at 0
        self.registry.register(HostCollector(host))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware (outermost): count and time every HTTP request by route template and status, and
    log one line per request (``promptforget.service.access``: route, method, status, latency_ms). The
    time stops at the response's last byte, so background work after it (the model card) is not counted."""

    def __init__(self, app, metrics: ServiceMetrics, routes, log):
        self.app, self.metrics, self.routes, self.log = app, metrics, routes, log

    def route_of(self, scope) -> str:
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
            if match == Match.PARTIAL and partial is None:  # the path exists, the method does not (405)
                partial = route.path
        return partial or "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status, done = 500, False

        def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            seconds = time.perf_counter() - t0
            route, method = self.route_of(scope), scope.get("method", "")
            self.metrics.observe_request(route, method, status, seconds)
            self.log.info("%s %s %d %.1fms", method, route, status, 1000 * seconds,
                          extra={"route": route, "method": method, "status": status,
                                 "latency_ms": round(1000 * seconds, 3)})

        async def timed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            finish()  # a client that left, or an error before any response: counted as it ended
