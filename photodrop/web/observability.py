"""Every HTTP request's request id, access log line and metrics, and the ``/metrics`` endpoint.

A pure ASGI middleware rather than Starlette's BaseHTTPMiddleware, which would buffer streamed
uploads and responses and run the endpoint in another task (losing the log context).
"""

from __future__ import annotations

import logging
import re
import time

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from photodrop import logs
from photodrop.context import Services
from photodrop.ids import token_hex
from photodrop.web.api import BUDGET_SCOPE_KEY, error_body, services

access_log = logging.getLogger("photodrop.access")
unexpected_log = logging.getLogger("photodrop")
# A caller's X-Request-ID is kept when it is a sane token; anything else is replaced, never logged.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Probes and scrapes arrive every few seconds; their lines would drown the rest at INFO.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED = "unmatched"
# What a request's log lines are tagged with once it is known; none carries over from the caller's context.
_REQUEST_TAGS = (logs.session_id, logs.project_id)


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
    return token_hex(16)


class Observability:
    """Tags the request's logs, echoes ``X-Request-ID``, counts it, and writes one access log line;
    adds an API caller's X-RateLimit-* headers; answers an exception no handler took with a 500.

    One middleware and one small object per request rather than a layer (a coroutine, a closure)
    for each of these: every held long poll keeps whatever its request's chain holds.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        # The project and session are cleared only when the caller's context has them (a server's
        # request task starts without): a held long poll then keeps one token, not three.
        cleared = {var: var.set(None) for var in _REQUEST_TAGS if var.get() is not None}
        request_token = logs.request_id.set(request_id)
        exchange = None
        try:
            if scope["type"] == "http":
                exchange = _Exchange(scope, receive, send, request_id)
                try:
                    await self.app(scope, exchange.receive, exchange.send)
                except Exception as exc:
                    if exchange.started:
                        raise
                    await _answer_unexpected(scope, receive, exchange.send, exc)
            else:
                await self.app(scope, receive, send)
        finally:
            if exchange is not None:
                self._record(scope, exchange.status, exchange.received, time.perf_counter() - exchange.started_at)
            logs.request_id.reset(request_token)
            for var in _REQUEST_TAGS:  # the caller's tags back; those the request added, back to none
                if var in cleared:
                    var.reset(cleared[var])
                elif var.get() is not None:
                    var.set(None)

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


async def _answer_unexpected(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """A 500 as an ordinary response, for an exception no handler took before any answer began.

    Starlette's last-resort handler answers too, but then re-raises, and uvicorn drops the
    keep-alive connection of any request whose app raised: an error would cost the client its
    connection. Once part of an answer is out, raising is the only way left to say it is cut short.
    """
    request = Request(scope)
    unexpected_log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    scope.pop(BUDGET_SCOPE_KEY, None)  # the rate-limit headers go on the endpoint's answers, errors it handled included
    await error_body(500, "INTERNAL", "unexpected error")(scope, receive, send)


class _Exchange:
    """One HTTP request as Observability sees it: the bytes received, the status answered (500 if
    the app raises before it starts a response), and what goes on the answer's headers."""

    __slots__ = ("_receive", "_scope", "_send", "received", "request_id", "started", "started_at", "status")

    def __init__(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        self._scope, self._receive, self._send, self.request_id = scope, receive, send, request_id
        self.started_at = time.perf_counter()
        self.started = False
        self.status = 500
        self.received = 0

    async def receive(self) -> Message:
        message = await self._receive()
        self.received += len(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            # The caller's budget, once ``caller()`` counted the request (``BUDGET_SCOPE_KEY``), then the request id.
            budget = self._scope.get(BUDGET_SCOPE_KEY)
            extra = []
            if budget is not None:
                extra = [(name.lower().encode(), value.encode()) for name, value in budget.headers().items()]
            extra.append((b"x-request-id", self.request_id.encode()))
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await self._send(message)


async def metrics_endpoint(request: Request) -> Response:
    running = services(request)
    return Response(await running.metrics.render(running), media_type=CONTENT_TYPE_LATEST)
