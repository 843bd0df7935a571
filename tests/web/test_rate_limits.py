"""Per-key rate limits: headers on every authenticated REST answer, 429 once the budget is spent,
budgets per key, and the Redis backend shared by several limiters as by several API processes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from photodrop.app import create_app
from photodrop.config import Settings
from photodrop.models import KeyEnv
from photodrop.ratelimit import WINDOW_SECONDS, MemoryLimiter, RedisLimiter, open_limiter
from photodrop.resolvers.projects import create_key
from tests.conftest import REDIS_URL, LifespanManager, bearer, make_settings
from tests.live import serving

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, rate_limit_per_minute=3)


async def test_answers_carry_the_budget_and_the_fourth_request_is_refused(
    client: httpx.AsyncClient, key: str, other_key: str
) -> None:
    seen = []
    for _ in range(3):
        response = await client.get("/api/v1/stats", headers=bearer(key))
        assert response.status_code == 200
        seen.append(int(response.headers["X-RateLimit-Remaining"]))
        assert response.headers["X-RateLimit-Limit"] == "3" and int(response.headers["X-RateLimit-Reset"]) > 0
    assert seen == [2, 1, 0]
    refused = await client.get("/api/v1/stats", headers=bearer(key))
    assert refused.status_code == 429 and refused.headers["X-RateLimit-Remaining"] == "0"
    body = refused.json()
    assert body["code"] == "RATE_LIMIT" and body["statusCode"] == 429 and body["error"] == "Too Many Requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= WINDOW_SECONDS
    # Another key has its own budget; errors after authentication carry the headers too.
    missing = await client.get("/api/v1/sessions/sess_missing", headers=bearer(other_key))
    assert missing.status_code == 404 and missing.headers["X-RateLimit-Remaining"] == "2"


async def test_unauthenticated_answers_spend_nothing(client: httpx.AsyncClient, key: str) -> None:
    for _ in range(5):
        response = await client.get("/api/v1/stats", headers=bearer("aptr_live_" + "0" * 32))
        assert response.status_code == 401 and "X-RateLimit-Limit" not in response.headers
    assert (await client.get("/api/v1/stats", headers=bearer(key))).headers["X-RateLimit-Remaining"] == "2"


async def test_a_limit_of_zero_turns_limiting_off(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, rate_limit_per_minute=0))
    async with LifespanManager(app):
        plain = (await create_key(app.state.services, project_name="p", env=KeyEnv.LIVE)).plain_text
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            for _ in range(5):
                response = await http.get("/api/v1/stats", headers=bearer(plain))
                assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers


async def test_memory_windows_open_with_the_first_request_and_refill_when_they_close() -> None:
    now = [1000.0]
    limiter = MemoryLimiter(clock=lambda: now[0])
    first = await limiter.hit("k", 2)
    assert (first.remaining, first.reset, first.allowed) == (1, 1000 + WINDOW_SECONDS, True)
    now[0] += 30
    assert (await limiter.hit("k", 2)).remaining == 0
    assert (await limiter.hit("k", 2)).allowed is False
    assert (await limiter.hit("other", 2)).remaining == 1
    now[0] += 31  # the first window has closed
    refilled = await limiter.hit("k", 2)
    assert refilled.remaining == 1 and refilled.reset == 1061 + WINDOW_SECONDS


@pytest.fixture
async def redis_pair() -> AsyncIterator[tuple[RedisLimiter, RedisLimiter]]:
    """Two limiters on the machine's Redis under one prefix no other test uses: two API processes."""
    prefix = f"photodrop-test:{secrets.token_hex(8)}:"
    first, second = RedisLimiter(REDIS_URL, prefix=prefix), RedisLimiter(REDIS_URL, prefix=prefix)
    try:
        yield first, second
    finally:
        keys = [key async for key in first.redis.scan_iter(match=prefix + "*")]
        if keys:
            await first.redis.delete(*keys)
        await first.close()
        await second.close()


async def test_redis_budgets_are_shared_between_processes(redis_pair: tuple[RedisLimiter, RedisLimiter]) -> None:
    first, second = redis_pair
    assert (await first.hit("key_a", 3)).remaining == 2
    assert (await second.hit("key_a", 3)).remaining == 1
    last = await first.hit("key_a", 3)
    assert last.remaining == 0 and last.allowed is True
    over = await second.hit("key_a", 3)
    assert over.allowed is False and over.remaining == 0 and over.reset >= last.reset - 1
    assert (await second.hit("key_b", 3)).remaining == 2
    ttl = await first.redis.ttl(first.prefix + "key_a")
    assert 0 < ttl <= WINDOW_SECONDS  # the window always expires, so a budget always refills


async def test_the_backend_follows_the_broadcast_url() -> None:
    assert isinstance(open_limiter("memory://"), MemoryLimiter)
    redis = open_limiter(REDIS_URL)
    assert isinstance(redis, RedisLimiter)
    await redis.close()


async def test_two_apps_on_one_redis_share_a_keys_budget(tmp_path: Path) -> None:
    """Two API processes (two apps, one database, one Redis) count one key's requests together."""
    overrides = {"rate_limit_per_minute": 3, "broadcast_url": REDIS_URL, "data_dir": tmp_path / "shared"}
    shared = make_settings(tmp_path, **overrides)
    # The second app is a second process of the same deployment: the same database, the same Redis.
    first = create_app(shared)
    second = create_app(make_settings(tmp_path, **overrides, database_url=shared.database_url))
    async with LifespanManager(first), LifespanManager(second):
        plain = (await create_key(first.state.services, project_name="p", env=KeyEnv.LIVE)).plain_text
        remaining = []
        async with serving(first) as one, serving(second) as two:
            async with httpx.AsyncClient() as http:
                for address in (one, two, one, two):
                    response = await http.get(f"http://{address}/api/v1/stats", headers=bearer(plain))
                    remaining.append((response.status_code, response.headers["X-RateLimit-Remaining"]))
    assert remaining == [(200, "2"), (200, "1"), (200, "0"), (429, "0")]
