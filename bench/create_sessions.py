"""Session creation rate (requests/s) of photodrop against a bare baseline.

photodrop: ``POST /v1/sessions`` with a bearer key on a real ``photodrop serve`` process and the
body a claims app would send (webhook delivery, 2 h expiry, 3 images, JPEG/PNG, a claim tag).
Each request looks the key up, validates the body, inserts the session and its event row in one
``BEGIN IMMEDIATE`` transaction, publishes the event, and answers with the session.

Baseline: a bare Starlette app under the same uvicorn defaults whose one endpoint parses the JSON,
inserts one row into SQLite through the same async stack (SQLAlchemy async + aiosqlite, WAL,
synchronous=NORMAL like photodrop), and answers 201 with JSON.

Both get the same load: CONCURRENCY keep-alive httpx clients; rounds alternate between the two
and each side's best round is reported, with the server process's CPU time per request (all
threads), which holds up better on a busy machine. A password-protected variant (argon2 hashing,
which dominates) is measured on its own, on photodrop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator
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

CONCURRENCY = 8
REQUESTS = 600  # per round
ROUNDS = 3
WARMUP = 50
PASSWORD_REQUESTS = 24


def session_body(claim: int, password: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "delivery_mode": "webhook",
        "webhook_url": "https://example.com/hook",
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
    engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}")

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


async def measure(photodrop_server: Server, key: str, baseline_server: Server) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    claims = itertools.count()

    async def to_photodrop(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(f"{photodrop_server.url}/v1/sessions", json=session_body(next(claims)), headers=auth)

    async def to_baseline(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(f"{baseline_server.url}/v1/sessions", json=session_body(next(claims)))

    async def with_password(client: httpx.AsyncClient) -> httpx.Response:
        body = session_body(next(claims), password="correct horse")
        return await client.post(f"{photodrop_server.url}/v1/sessions", json=body, headers=auth)

    sides = {"photodrop": (photodrop_server, to_photodrop), "baseline": (baseline_server, to_baseline)}
    results = await compare(sides, requests=REQUESTS, rounds=ROUNDS, warmup=WARMUP, concurrency=CONCURRENCY)
    ours, theirs = (REQUESTS / results[side].best_seconds for side in sides)
    print(f"{CONCURRENCY} clients, {REQUESTS} sessions a round, best of {ROUNDS} rounds")
    print(f"create_sessions: photodrop {ours:.0f} req/s, baseline {theirs:.0f} req/s, ratio {ours / theirs:.2f}")
    cpu = [results[side].cpu_ms_per_request for side in sides]
    print(f"server CPU per request: photodrop {cpu[0]:.2f} ms, baseline {cpu[1]:.2f} ms")
    seconds = await load(with_password, requests=PASSWORD_REQUESTS, concurrency=CONCURRENCY)
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
            asyncio.run(measure(ours, key, theirs))


if __name__ == "__main__":
    main()
