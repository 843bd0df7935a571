"""``/metrics`` after real requests, uploads, refusals and deliveries, read back with prometheus_client's parser."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from photodrop.app import create_app
from photodrop.context import Services
from photodrop.events import EveryEvent, session_channel
from photodrop.models import Delivery, KeyEnv, utcnow
from photodrop.resolvers.projects import create_key
from tests.conftest import LifespanManager, bearer, image_bytes, make_settings, new_session, upload
from tests.delivery.receiver import Receiver

pytestmark = pytest.mark.anyio


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics`` by (name, labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_template_and_status(client: httpx.AsyncClient, key: str) -> None:
    for n in range(3):
        assert (await client.get(f"/v1/sessions/sess_missing{n}", headers=bearer(key))).status_code == 404
    assert (await client.get("/v1/sessions", headers=bearer(key))).status_code == 200
    assert (await client.get("/no/such/page")).status_code == 404
    samples = await scrape(client)
    total = "photodrop_http_requests_total"
    assert value(samples, total, method="GET", route="/v1/sessions/{id}", status="404") == 3
    assert value(samples, total, method="GET", route="/v1/sessions", status="200") == 1
    assert value(samples, total, method="GET", route="unmatched", status="404") == 1
    routes = {dict(labels).get("route", "") for _, labels in samples}
    assert not any("sess_missing" in route or "/no/such" in route for route in routes)
    count = "photodrop_http_request_duration_seconds_count"
    assert value(samples, count, method="GET", route="/v1/sessions/{id}") == 3


async def test_uploads_count_images_bytes_and_refusals_by_reason(client: httpx.AsyncClient, key: str) -> None:
    photo = image_bytes("PNG", (40, 30))
    session = await new_session(client, key, max_images=1, password="secret123")
    locked = {"x-session-password": "secret123"}
    assert (await upload(client, session["id"], headers={"x-session-password": "wrong"})).status_code == 401
    not_a_photo = ("notes.jpg", b"just some text", "image/jpeg")
    assert (await upload(client, session["id"], not_a_photo, headers=locked)).status_code == 415
    assert (await upload(client, session["id"], ("p.png", photo, "image/png"), headers=locked)).status_code == 201
    assert (await upload(client, session["id"], headers=locked)).status_code == 422
    assert (await upload(client, "sess_nope")).status_code == 404
    samples = await scrape(client)
    assert value(samples, "photodrop_images_accepted_total") == 1
    assert value(samples, "photodrop_image_bytes_total") == len(photo)
    refused = "photodrop_uploads_refused_total"
    assert value(samples, refused, reason="INVALID_PASSWORD") == 1
    assert value(samples, refused, reason="UNSUPPORTED_MEDIA_TYPE") == 1
    assert value(samples, refused, reason="SESSION_FULL") == 1
    assert value(samples, refused, reason="NOT_FOUND") == 1
    received = value(samples, "photodrop_http_request_body_bytes_total", route="/api/v1/upload/{id}/images")
    assert received > len(photo)  # every multipart body, refused ones included


async def test_the_delivery_queue_is_read_from_the_database_at_scrape_time(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, delivery_mode="webhook", webhook_url="https://example.com/hook")
    before = await scrape(client)
    assert value(before, "photodrop_delivery_queue_depth", status="pending") == 0
    assert value(before, "photodrop_delivery_queue_oldest_seconds") == 0
    for _ in range(2):
        assert (await upload(client, session["id"])).status_code == 201
    async with services.db.write() as s:  # as if the first had waited an hour for a worker
        first = (await s.exec(select(Delivery).order_by(Delivery.created_at))).first()
        assert first is not None
        first.created_at = utcnow() - timedelta(hours=1)
    after = await scrape(client)
    assert value(after, "photodrop_delivery_queue_depth", status="pending") == 2
    assert value(after, "photodrop_delivery_queue_depth", status="sending") == 0
    assert value(after, "photodrop_delivery_queue_oldest_seconds") >= 3600


async def test_live_subscriptions_and_held_long_polls_are_gauged(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    async with services.bus.subscribe(session_channel(session["id"]), EveryEvent()):
        assert value(await scrape(client), "photodrop_live_subscriptions") == 1
    assert value(await scrape(client), "photodrop_live_subscriptions") == 0

    answers: list[httpx.Response] = []

    async def poll() -> None:
        url = f"/v1/sessions/{session['id']}/poll?since={session['version']}&timeout=30"
        answers.append(await client.get(url, headers=bearer(key)))

    async with anyio.create_task_group() as group:
        group.start_soon(poll)
        with anyio.fail_after(10):
            while True:
                held = await scrape(client)
                if value(held, "photodrop_long_polls_held") == 1:
                    break
                await anyio.sleep(0.01)  # nothing announces that a poll has started waiting but the gauge itself
        assert value(held, "photodrop_live_subscriptions") == 1
        assert (await client.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))).status_code == 200
    assert answers[0].status_code == 200
    assert value(await scrape(client), "photodrop_long_polls_held") == 0


async def test_delivery_attempts_are_counted_by_kind_and_outcome(tmp_path: Path, receiver: Receiver) -> None:
    settings = make_settings(
        tmp_path, run_worker=True, webhook_allow_private=True, delivery_schedule="0,0", delivery_poll_interval=0.1
    )
    receiver.answers = [(503, {})]  # the first attempt fails and is retried; the second succeeds
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        services: Services = app.state.services
        token = (await create_key(services, project_name="default", env=KeyEnv.LIVE)).plain_text
        session = await new_session(http, token, delivery_mode="webhook", webhook_url=receiver.url)
        mailbox = EveryEvent()
        async with services.bus.subscribe(session_channel(session["id"]), mailbox):
            assert (await upload(http, session["id"])).status_code == 201
            with anyio.fail_after(30):
                while (await mailbox.get()).type != "delivery.succeeded":
                    pass
        samples = await scrape(http)
    attempts = "photodrop_delivery_attempts_total"
    assert value(samples, attempts, kind="webhook", outcome="retrying") == 1
    assert value(samples, attempts, kind="webhook", outcome="succeeded") == 1
    assert value(samples, attempts, kind="webhook", outcome="failed") == 0


async def test_each_app_counts_on_its_own(tmp_path: Path) -> None:
    """Two apps in one process never see each other's counts (each has its own registry)."""
    one, two = (create_app(make_settings(tmp_path / name)) for name in ("one", "two"))
    async with LifespanManager(one), LifespanManager(two):
        first = httpx.AsyncClient(transport=httpx.ASGITransport(app=one), base_url="http://t")
        second = httpx.AsyncClient(transport=httpx.ASGITransport(app=two), base_url="http://t")
        async with first, second:
            for _ in range(4):
                await first.get("/healthz")
            route = {"method": "GET", "route": "/healthz", "status": "200"}
            assert value(await scrape(first), "photodrop_http_requests_total", **route) == 4
            assert value(await scrape(second), "photodrop_http_requests_total", **route) == 0
