"""Session creation rate (requests/s) of photodrop against a bare baseline.

photodrop: ``POST /v1/sessions`` with a bearer key on a real ``photodrop serve`` process and the
body a claims app would send (webhook delivery, 2 h expiry, 3 images, JPEG/PNG, a claim tag).
Each request checks the key (held in the process's key cache), validates the body, commits the
session and its event row as one unit of the group-commit writer, publishes the event, and answers
with the session.

Baseline: a bare Starlette app under the same uvicorn defaults whose one endpoint parses the JSON,
inserts one row into SQLite through SQLAlchemy async + aiosqlite (WAL, synchronous=NORMAL like
photodrop), and answers 201 with JSON. SQLite's default rollback journal would be a far weaker
baseline: it syncs every commit, and with 32 writers some starve past any reasonable busy timeout.

Every side gets the same load: CONCURRENCY keep-alive httpx clients; rounds alternate between the
sides and the median round is reported (the best too), with each request's latency (p50/p99 over
every measured round) and the server process's CPU time per request (all threads), which holds up
better on a busy machine. The per-key rate limit is off on photodrop (PHOTODROP_RATE_LIMIT_PER_MINUTE=0),
since one key sends far more than a client may. A password-protected variant (argon2 hashing, which
dominates) is measured on its own, on photodrop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _harness import Server, baseline, compare, load, photodrop
from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, event
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CONCURRENCY = 32
REQUESTS = 500  # per round
ROUNDS = 5
WARMUP = 50
PASSWORD_REQUESTS = 24


def session_body(claim: int, password: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "delivery_mode": "webhook",
        # A public address literal: photodrop checks a webhook host when a session is created, and this
        # machine has no DNS to answer a name (each failed lookup waits out the resolver's timeout).
        "webhook_url": "https://192.0.32.10/hook",
        "expires_in": 7200,
        "max_images": 3,
        "allowed_mime_types": ["image/jpeg", "image/png"],
        "tags": {"claim_id": f"CLM-{claim:06d}"},
    }
    if password is not None:
        body["password"] = password
    return body


# --- the baseline server -------------------------------------------------------------------

metadata = MetaData()
sessions = Table(
    "sessions",
    metadata,
    Column("id", String, primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
)


def baseline_app(db_path: Path) -> Starlette:
    engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}", connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield
        await engine.dispose()

    async def create(request: Request) -> Response:
        spec = await request.json()
        row = {"id": f"sess_{secrets.token_hex(12)}", "spec": spec, "created_at": datetime.now(UTC)}
        async with engine.begin() as conn:
            await conn.execute(sessions.insert().values(row))
        return JSONResponse({"id": row["id"], "status": "pending", **spec}, status_code=201)

    return Starlette(routes=[Route("/v1/sessions", create, methods=["POST"])], lifespan=lifespan)


# --- the benchmark -------------------------------------------------------------------------


Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def timed(send: Send, latencies: list[float]) -> Send:
    """``send``, noting each request's latency in seconds (warm-up ones too; dropped before use)."""

    async def sending(client: httpx.AsyncClient) -> httpx.Response:
        start = time.perf_counter()
        response = await send(client)
        latencies.append(time.perf_counter() - start)
        return response

    return sending


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


async def measure(photodrop_server: Server, key: str, baselines: dict[str, Server]) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    claims = itertools.count()

    def poster(server: Server, headers: dict[str, str] | None = None) -> Send:
        async def post(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(f"{server.url}/v1/sessions", json=session_body(next(claims)), headers=headers)

        return post

    async def with_password(client: httpx.AsyncClient) -> httpx.Response:
        body = session_body(next(claims), password="correct horse")
        return await client.post(f"{photodrop_server.url}/v1/sessions", json=body, headers=auth)

    servers = {"photodrop": photodrop_server, **baselines}
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    sides = {
        name: (server, timed(poster(server, auth if name == "photodrop" else None), latencies[name]))
        for name, server in servers.items()
    }
    results = await compare(sides, requests=REQUESTS, rounds=ROUNDS, warmup=WARMUP, concurrency=CONCURRENCY)
    print(f"{CONCURRENCY} clients, {REQUESTS} sessions a round, {ROUNDS} alternating rounds; rate limit off")
    ours = results["photodrop"]
    for name in servers:
        result, measured = results[name], latencies[name][WARMUP:]
        print(
            f"  {name:<10} {REQUESTS / result.median_seconds:6.0f} req/s median ({REQUESTS / result.best_seconds:.0f}"
            f" best), p50 {1000 * percentile(measured, 0.5):.1f} ms, p99 {1000 * percentile(measured, 0.99):.1f} ms,"
            f" server CPU {result.cpu_ms_per_request:.2f} ms/request"
        )
    for name in baselines:
        ratio = results[name].median_seconds / ours.median_seconds
        print(f"create_sessions: ratio {ratio:.2f} against {name} (medians)")
    seconds = await load(with_password, requests=PASSWORD_REQUESTS, concurrency=min(CONCURRENCY, 8))
    print(f"create_sessions with a password (argon2): photodrop {PASSWORD_REQUESTS / seconds:.1f} req/s")


def main() -> None:
    if sys.argv[1:2] == ["--serve-baseline"]:
        import uvicorn

        uvicorn.run(baseline_app(Path(sys.argv[3]) / "baseline.db"), host="127.0.0.1", port=int(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory(prefix="photodrop-bench-") as tmp:
        root = Path(tmp)
        (root / "baseline").mkdir()
        with photodrop(root / "photodrop") as (ours, key), baseline(__file__, root / "baseline") as theirs:
            asyncio.run(measure(ours, key, {"baseline": theirs}))


if __name__ == "__main__":
    main()
