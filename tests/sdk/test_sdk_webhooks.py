"""The SDK's webhooks resource against a live photodrop with its delivery worker running, and what
arrives at a real receiver checked with the SDK's own signature verifiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from apertur import Apertur, NotFoundError, ValidationError, verify_event_signature, verify_svix_signature

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.resolvers.projects import get_project
from tests.conftest import make_settings, new_session, upload
from tests.delivery.receiver import Received, Receiver
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, run_worker=True, webhook_allow_private=True, delivery_poll_interval=0.1)


async def project_id(services: Services) -> str:
    return (await get_project(services, project_name="default")).id


def hmac_verified(got: Received, secret: str) -> dict[str, Any]:
    body = got.body.decode()
    assert verify_event_signature(body, got.headers["x-apertur-timestamp"], got.headers["x-apertur-signature"], secret)
    document: dict[str, Any] = json.loads(body)
    return document


async def deliveries_settle(sdk: Apertur, pid: str, wid: str, status: str, count: int) -> dict[str, Any]:
    with anyio.fail_after(20):
        # The worker records an outcome a moment after the receiver answers, and signals nothing a test can await.
        while True:
            page: dict[str, Any] = await call(sdk.webhooks.deliveries, pid, wid, page=1, limit=10)
            if len(page["deliveries"]) >= count and {d["status"] for d in page["deliveries"]} == {status}:
                return page
            await anyio.sleep(0.05)


async def test_events_arrive_signed_under_the_names_subscribed_to(
    sdk: Apertur, services: Services, receiver: Receiver, client: httpx.AsyncClient, key: str
) -> None:
    pid = await project_id(services)
    hook = await call(
        sdk.webhooks.create,
        pid,
        url=receiver.url,
        topics=["project.upload.*", "session.created"],
        max_retries=2,
        retry_intervals=[1, 2],
        disable_after_failures=3,
        custom_headers={"X-Team": "claims"},
    )
    assert hook["signatureMethod"] == "hmac_sha256" and hook["projectId"] == pid and hook["isActive"] is True
    assert hook["maxRetries"] == 2 and hook["retryIntervals"] == [1, 2] and hook["disableAfterFailures"] == 3
    assert hook["customHeaders"] == {"X-Team": "claims"} and hook["consecutiveFailures"] == 0
    assert hook["disabledAt"] is None and {"createdAt", "updatedAt", "secret"} <= hook.keys()

    tested = await call(sdk.webhooks.test, pid, hook["id"])
    assert "delivered" in tested["message"]
    test_event = hmac_verified((await receiver.wait_for_notifications(1))[0], hook["secret"])
    assert test_event["event"] == "webhook.test" and receiver.notified[0].headers["x-team"] == "claims"

    session = await new_session(client, key, max_images=2)
    assert (await upload(client, session["id"])).status_code == 201
    with anyio.fail_after(20):
        arrived = await receiver.wait_for_notifications(3)
    documents = [hmac_verified(got, hook["secret"]) for got in arrived[1:]]
    # Each arrives under the name its subscription used, with photodrop's own type alongside.
    assert sorted((d["event"], d["topic"], d["type"]) for d in documents) == [
        ("project.upload.started", "project.upload.started", "image.uploaded"),
        ("session.created", "session.created", "session.created"),
    ]
    page = await deliveries_settle(sdk, pid, hook["id"], "sent", 2)
    assert page["total"] == 2 and page["page"] == 1 and page["limit"] == 10
    first = page["deliveries"][0]
    assert {"id", "eventLogId", "topic", "attempts", "responseCode", "nextRetryAt", "createdAt"} <= first.keys()


async def test_svix_signed_webhooks_verify_with_the_sdk(sdk: Apertur, services: Services, receiver: Receiver) -> None:
    pid = await project_id(services)
    hook = await call(sdk.webhooks.create, pid, url=receiver.url, topics=["*"], signature_method="svix")
    assert hook["signatureMethod"] == "svix"
    await call(sdk.webhooks.test, pid, hook["id"])
    got = (await receiver.wait_for_notifications(1))[0]
    headers = got.headers
    assert verify_svix_signature(
        got.body.decode(), headers["svix-id"], headers["svix-timestamp"], headers["svix-signature"], hook["secret"]
    )


async def test_webhooks_are_listed_changed_and_deleted(sdk: Apertur, services: Services) -> None:
    pid = await project_id(services)
    hook = await call(sdk.webhooks.create, pid, url="https://example.com/events", topics=["session.*"])
    assert [h["id"] for h in await call(sdk.webhooks.list, pid)] == [hook["id"]]
    changed = await call(
        sdk.webhooks.update, pid, hook["id"], topics=["image.*"], is_active=False, custom_headers={"A": "b"}
    )
    assert changed["topics"] == ["image.*"] and changed["isActive"] is False and changed["customHeaders"] == {"A": "b"}
    assert await call(sdk.webhooks.delete, pid, hook["id"]) is None
    assert await call(sdk.webhooks.list, pid) == []
    with pytest.raises(NotFoundError):
        await call(sdk.webhooks.update, pid, hook["id"], is_active=True)
    with pytest.raises(ValidationError):
        await call(sdk.webhooks.create, pid, url="ftp://example.com", topics=["session.*"])
    with pytest.raises(ValidationError):
        await call(sdk.webhooks.create, pid, url="https://example.com", topics=["Not A Topic"])
    with pytest.raises(ValidationError):
        await call(sdk.webhooks.create, pid, url="https://example.com", topics=["*"], signature_method="md5")


async def test_a_failed_delivery_is_retried(
    sdk: Apertur, services: Services, receiver: Receiver, client: httpx.AsyncClient, key: str
) -> None:
    pid = await project_id(services)
    hook = await call(
        sdk.webhooks.create, pid, url=receiver.url + "-missing", topics=["session.created"], max_retries=0
    )
    await new_session(client, key)
    failed = (await deliveries_settle(sdk, pid, hook["id"], "failed", 1))["deliveries"][0]
    assert failed["responseCode"] == 404 and failed["lastError"]
    await call(sdk.webhooks.update, pid, hook["id"], url=receiver.url)
    retried = await call(sdk.webhooks.retry_delivery, pid, hook["id"], failed["id"])
    assert retried["message"]
    with anyio.fail_after(20):
        got = (await receiver.wait_for_notifications(1))[0]
    assert hmac_verified(got, hook["secret"])["event"] == "session.created"
    await deliveries_settle(sdk, pid, hook["id"], "sent", 1)
    with pytest.raises(NotFoundError):
        await call(sdk.webhooks.retry_delivery, pid, hook["id"], "ntf_missing")
