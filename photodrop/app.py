"""The application factory: routes, error rendering, and the lifespan that owns every service."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from photodrop import __version__, logs
from photodrop.config import Settings
from photodrop.context import Services, open_services
from photodrop.delivery.worker import DeliveryWorker
from photodrop.errors import PhotodropError
from photodrop.metrics import Metrics
from photodrop.resolvers.retention import purge_delivered, remove_orphans
from photodrop.resolvers.sessions import expire_due_sessions
from photodrop.resolvers.tus import sweep_uploads
from photodrop.web import assets, dashboard, pages
from photodrop.web.api import error_body, error_response, services
from photodrop.web.graphql import PhotodropGraphQL
from photodrop.web.observability import Observability, metrics_endpoint
from photodrop.web.pages import templates
from photodrop.web.rest import PREFIXES, api, openapi

log = logging.getLogger("photodrop")
API_PATHS = tuple(f"{prefix}/" for prefix in PREFIXES)
READY_TIMEOUT = 5.0  # seconds a readiness check waits for an answer; probes give up soon after
LIVE_STATE_INTERVAL = 1.0  # seconds between copies of this process's subscriber count into shared metrics


def create_app(settings: Settings) -> Starlette:
    """A photodrop ASGI app for ``settings``; services start and stop with its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings) as opened:
            async with _running(app, opened):
                with start_up_heap_frozen():
                    yield

    @contextlib.asynccontextmanager
    async def _running(app: Starlette, services: Services) -> AsyncIterator[None]:
        services = dataclasses.replace(services, metrics=Metrics(settings.metrics_dir))
        background = [
            asyncio.create_task(_every(services.settings.sweep_interval, expire_due_sessions, services)),
            # Abandoned resumable uploads: their bytes removed, their slots given back.
            asyncio.create_task(_every(services.settings.sweep_interval, sweep_uploads, services)),
            asyncio.create_task(_every(services.settings.purge_interval, purge_delivered, services)),
            # At start, a crash's leftovers; from then on, those of crashes of the other processes.
            asyncio.create_task(_every(services.settings.orphan_grace, remove_orphans, services)),
        ]
        if settings.metrics_dir is not None:
            # Another process may answer the scrape: keep this one's subscriber count fresh in the shared files.
            background.append(asyncio.create_task(_every(LIVE_STATE_INTERVAL, _note_live_state, services)))
        worker = DeliveryWorker(services) if settings.run_worker else None
        if worker is not None:
            services = dataclasses.replace(services, wake_workers=worker.wake)
            delivering = asyncio.create_task(worker.run(), name="photodrop-delivery-worker")
        app.state.services = services
        app.state.graphql = PhotodropGraphQL(services)
        log.info("delivery: %s", "in this process" if worker else "left to `photodrop worker`")
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()  # the attempts in flight may finish; the rest is handed back
                await asyncio.gather(delivering, return_exceptions=True)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            services.metrics.close()

    api_routes = api.routes()
    routes = [
        *(Mount(prefix, routes=[*api_routes, Route("/openapi.json", openapi)]) for prefix in PREFIXES),
        *pages.routes,
        *dashboard.routes,
        Route("/graphql", _graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", _graphql),
        Route("/docs", api_docs),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        *assets.routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # Observability also answers an exception no handler took with a 500, tagged, counted and logged.
        middleware=[Middleware(Observability)],
        exception_handlers={PhotodropError: _photodrop_error, HTTPException: _http_error},
    )
    app.state.openapi = api.openapi(prefixes=PREFIXES, title="photodrop", version=__version__, settings=settings)
    return app


@contextlib.contextmanager
def start_up_heap_frozen() -> Iterator[None]:
    """Keep what start-up built (modules, the schema, the engines: over 150,000 objects) out of the
    garbage collector's walks while the app serves, and hand it back when it stops.

    A full collection walks every tracked object, and under load one came every second or two:
    each stalled the event loop, or the writer thread in the middle of a commit, for 100-250 ms,
    the create bench's whole p99. Frozen, those objects are never walked. Freezing is a list
    splice; no collection comes first, since start-up leaves a few hundred objects of garbage
    (kept for good) and a full collection costs a test process 100-300 ms on every app start.
    Unfrozen on the way out, so a process that starts apps again and again keeps none of them.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _GraphQLEndpoint:
    """Hands /graphql to the view the lifespan built, since it needs the running services."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["app"].state.graphql(scope, receive, send)


_graphql = _GraphQLEndpoint()


def app_from_env() -> Starlette:
    """Entry point for ``uvicorn --factory`` (and each ``serve --workers`` process): settings from the
    environment, logs as JSON lines."""
    settings = Settings()
    logs.configure(settings.log_level)
    return create_app(settings)


async def _note_live_state(services: Services) -> None:
    services.metrics.note_live_state(services)


async def _every(interval: float, chore: Callable[[Services], Awaitable[object]], services: Services) -> None:
    """Run a housekeeping chore forever: expiring sessions within a second, purging delivered bytes,
    removing what crashes left behind."""
    while True:
        try:
            await chore(services)
        except Exception:
            log.exception("%s failed; trying again", chore.__name__)
        await asyncio.sleep(interval)


async def _photodrop_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PhotodropError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith(API_PATHS):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 404:
        return error_body(404, "NOT_FOUND", "no such endpoint")
    return error_body(exc.status_code, "METHOD_NOT_ALLOWED", exc.detail, headers=dict(exc.headers or {}))


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. It says nothing of the database or the broadcast."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: 200 when the database and the broadcast both answer, else 503 naming what is down."""
    running = services(request)
    checks = {"database": await _database_up(running), "broadcast": await _broadcast_up(running)}
    body: dict[str, object] = {name: "up" if up else "down" for name, up in checks.items()}
    down = [name for name, up in checks.items() if not up]
    if down:
        return JSONResponse({"status": "unavailable", "down": down, **body}, status_code=503)
    return JSONResponse({"status": "ok", **body})


async def _database_up(running: Services) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT), running.db.read() as s:
            await s.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception as exc:
        log.warning("readiness: the database does not answer: %s", exc)
        return False
    return True


async def _broadcast_up(running: Services) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            return await running.bus.healthy()
    except Exception as exc:
        log.warning("readiness: the broadcast does not answer: %s", exc)
        return False


async def api_docs(request: Request) -> Response:
    doc = request.app.state.openapi
    paths = [(path, methods) for path, methods in doc["paths"].items() if path.startswith("/v1/")]
    return templates.TemplateResponse(request, "docs.html", {"doc": doc, "paths": paths})
