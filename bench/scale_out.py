"""Session creation rate with one and with two ``photodrop serve`` processes on PostgreSQL.

The sizing advice in docs/deploy.md rests on this. Both sides are the same deployment: one fresh
PostgreSQL database (created for the run, dropped after), Redis for live events, delivery off in
the API processes. Side "1 process" is ``photodrop serve --workers 1``; side "2 processes" is
``photodrop serve --workers 2`` on the same database. The load is the claims app's session create
(``POST /v1/sessions``) from CONCURRENCY keep-alive clients; rounds alternate between the sides and
each side's best round is reported. The ratio says how much a second process buys on this
machine, where the load generator and PostgreSQL share the same cores with the servers.

Needs PostgreSQL (PHOTODROP_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/test) and Redis
(PHOTODROP_BENCH_REDIS, default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import asyncpg
import httpx
from _harness import Send, Server, compare, photodrop_env, server
from create_sessions import session_body
from sqlalchemy.engine import make_url

CONCURRENCY = 16
REQUESTS = 800  # per round
ROUNDS = 3
WARMUP = 100

ADMIN_URL = os.environ.get("PHOTODROP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PHOTODROP_BENCH_REDIS", "redis://127.0.0.1:6379")


def _admin(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(ADMIN_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this run, as an asyncpg URL; dropped afterwards."""
    name = f"photodrop_bench_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
    finally:
        _admin(f'DROP DATABASE "{name}" WITH (FORCE)')


def deployment_env(data_dir: Path, database_url: str) -> dict[str, str]:
    return photodrop_env(
        data_dir,
        PHOTODROP_DATABASE_URL=database_url,
        PHOTODROP_BROADCAST_URL=REDIS_URL,
        PHOTODROP_SECRET_KEY=secrets.token_urlsafe(32),
        PHOTODROP_RUN_WORKER="false",
    )


def issue_key(env: dict[str, str]) -> str:
    photodrop = [sys.executable, "-m", "photodrop"]
    subprocess.run([*photodrop, "migrate"], env=env, check=True, capture_output=True)
    created = subprocess.run([*photodrop, "keys", "create"], env=env, check=True, capture_output=True, text=True)
    return created.stdout.strip().splitlines()[-1]


def serve(processes: int, env: dict[str, str], log: Path) -> AbstractContextManager[Server]:
    command = [sys.executable, "-m", "photodrop", "serve", "--port", "{port}", "--workers", str(processes)]
    return server(command, log, env)


async def measure(one: Server, two: Server, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    claims = itertools.count()

    def sender(target: Server) -> Send:
        async def send(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(f"{target.url}/v1/sessions", json=session_body(next(claims)), headers=auth)

        return send

    sides = {"1 process": (one, sender(one)), "2 processes": (two, sender(two))}
    results = await compare(sides, requests=REQUESTS, rounds=ROUNDS, warmup=WARMUP, concurrency=CONCURRENCY)
    single, double = (REQUESTS / results[side].best_seconds for side in sides)
    print(f"{CONCURRENCY} clients, {REQUESTS} sessions a round, best of {ROUNDS} rounds, PostgreSQL + Redis")
    print(f"scale_out: 1 process {single:.0f} req/s, 2 processes {double:.0f} req/s, ratio {double / single:.2f}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="photodrop-bench-") as tmp, fresh_database() as database_url:
        root = Path(tmp)
        env = deployment_env(root / "data", database_url)
        key = issue_key(env)
        with serve(1, env, root / "one.log") as one, serve(2, env, root / "two.log") as two:
            asyncio.run(measure(one, two, key))


if __name__ == "__main__":
    main()
