"""Every HTTP request's request id, access log line and metrics, and the ``/metrics`` endpoint.

A pure ASGI middleware rather than Starlette's BaseHTTPMiddleware, which would buffer streamed
uploads and responses and run the endpoint in another task (losing the log context).
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from photodrop import logs
from photodrop.context import Services
from photodrop.web.api import services

access_log = logging.getLogger("photodrop.access")
# A caller's X-Request-ID is kept when it is a sane token; anything else is replaced, never logged.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Probes and scrapes arrive every few seconds; their lines would drown the rest at INFO.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The route that answered, as declared (``/v1/sessions/{id}``), so metrics never grow per id."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    mounted: str = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
    if isinstance(route, Mount):
        return f"{mounted}/{{path}}"
    path: str = getattr(route, "path", "")
    return mounted + path


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if REQUEST_ID.fullmatch(given):
                return given
    return secrets.token_hex(16)


class Observability:
    """Tags the request's logs, echoes ``X-Request-ID``, counts it, and writes one access log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        tokens = (logs.request_id.set(request_id), logs.project_id.set(None), logs.session_id.set(None))
        exchange = None
        try:
            if scope["type"] == "http":
                # One coroutine and one small object per request: every held long poll keeps both.
                exchange = _Exchange(receive, send, request_id)
                await self.app(scope, exchange.receive, exchange.send)
            else:
                await self.app(scope, receive, send)
        finally:
            if exchange is not None:
                self._record(scope, exchange.status, exchange.received, time.perf_counter() - exchange.started)
            logs.session_id.reset(tokens[2])
            logs.project_id.reset(tokens[1])
            logs.request_id.reset(tokens[0])

    def _record(self, scope: Scope, status: int, received: int, seconds: float) -> None:
        route = route_template(scope)
        method = scope["method"]
        running: Services | None = getattr(scope["app"].state, "services", None)
        if running is not None:
            metrics = running.metrics
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.request_seconds.labels(method, route).observe(seconds)
            if received:
                metrics.request_bytes.labels(route).inc(received)
        access_log.log(
            logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
            "%s %s %d",
            method,
            scope["path"],
            status,
            extra={
                "method": method,
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
                "request_bytes": received,
            },
        )


class _Exchange:
    """One HTTP request as Observability sees it: the bytes received, the status answered (500 if
    the app raises before it starts a response), and the request id echoed on the answer."""

    __slots__ = ("_receive", "_send", "received", "request_id", "started", "status")

    def __init__(self, receive: Receive, send: Send, request_id: str) -> None:
        self._receive, self._send, self.request_id = receive, send, request_id
        self.started = time.perf_counter()
        self.status = 500
        self.received = 0

    async def receive(self) -> Message:
        message = await self._receive()
        self.received += len(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", self.request_id.encode())]}
        await self._send(message)


async def metrics_endpoint(request: Request) -> Response:
    running = services(request)
    return Response(await running.metrics.render(running), media_type=CONTENT_TYPE_LATEST)
