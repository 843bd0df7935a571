"""Project event webhooks: topic subscriptions, both signature methods, failures, and the REST surface."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from standardwebhooks import Webhook

from photodrop.config import Settings
from tests.conftest import bearer, make_settings, new_session, upload
from tests.delivery.receiver import Receiver

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, run_worker=True, webhook_allow_private=True, delivery_poll_interval=0.1)


async def _project(client: httpx.AsyncClient, key: str) -> str:
    project_id: str = (await client.get("/v1/project", headers=bearer(key))).json()["id"]
    return project_id


async def _subscribe(client: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    url = f"/v1/projects/{await _project(client, key)}/webhooks"
    response = await client.post(url, json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_matching_events_arrive_signed_with_hmac(client: httpx.AsyncClient, key: str, receiver: Receiver) -> None:
    hook = await _subscribe(
        client, key, url=receiver.url, topics=["session.*"], customHeaders={"Authorization": "Bearer rcv-1"}
    )
    assert hook["signatureMethod"] == "hmac_sha256" and len(hook["secret"]) == 64 and hook["isActive"] is True
    assert hook["customHeaders"] == {"Authorization": "Bearer rcv-1"}
    session = await new_session(client, key, max_images=1, tags={"claim": "C-1"})
    await upload(client, session["id"])
    with anyio.fail_after(20):
        notified = await receiver.wait_for_notifications(2)
    documents = []
    for got in notified:
        assert got.headers["authorization"] == "Bearer rcv-1"  # opened from its sealed column
        stamp = got.headers["x-apertur-timestamp"]
        expected = hmac.new(hook["secret"].encode(), f"{stamp}.".encode() + got.body, hashlib.sha256).hexdigest()
        assert got.headers["x-apertur-signature"] == f"sha256={expected}"
        documents.append(json.loads(got.body))
    # The worker sends notifications concurrently, so they may arrive in either order.
    assert sorted(d["event"] for d in documents) == ["session.completed", "session.created"]
    completed = next(d for d in documents if d["event"] == "session.completed")
    assert completed["topic"] == "session.completed" and completed["project_id"] == hook["projectId"]
    assert completed["data"]["tags"] == {"claim": "C-1"} and len(completed["data"]["images"]) == 1
    url = f"/v1/projects/{hook['projectId']}/webhooks/{hook['id']}/deliveries"
    with anyio.fail_after(20):
        # The receiver has answered; the worker records it a moment later, and signals nothing a test can await.
        while True:
            listed = (await client.get(url, headers=bearer(key))).json()
            if {d["status"] for d in listed["deliveries"]} == {"sent"}:
                break
            await anyio.sleep(0.05)
    assert listed["total"] == 2


async def test_svix_signatures_and_wildcards(client: httpx.AsyncClient, key: str, receiver: Receiver) -> None:
    hook = await _subscribe(client, key, url=receiver.url, topics=["*.uploaded"], signatureMethod="svix")
    session = await new_session(client, key, max_images=3)
    await upload(client, session["id"])
    with anyio.fail_after(20):
        (got,) = await receiver.wait_for_notifications(1)
    headers = {
        "webhook-id": got.headers["svix-id"],
        "webhook-timestamp": got.headers["svix-timestamp"],
        "webhook-signature": got.headers["svix-signature"],
    }
    document = Webhook(bytes.fromhex(hook["secret"])).verify(got.body, headers)
    assert document["event"] == "image.uploaded"


async def test_a_failing_webhook_is_disabled_and_can_be_retried(client: httpx.AsyncClient, key: str) -> None:
    hook = await _subscribe(
        client, key, url="http://127.0.0.1:9/nothing", topics=["session.created"], maxRetries=0, disableAfterFailures=1
    )
    base = f"/v1/projects/{hook['projectId']}/webhooks/{hook['id']}"
    await new_session(client, key)
    with anyio.fail_after(20):
        while True:
            deliveries = (await client.get(f"{base}/deliveries", headers=bearer(key))).json()["deliveries"]
            if deliveries and deliveries[0]["status"] == "failed":
                break
            await anyio.sleep(0.05)  # the worker runs in this process but signals nothing a test can await here
    (webhooks,) = (await client.get(f"/v1/projects/{hook['projectId']}/webhooks", headers=bearer(key))).json()
    assert webhooks["isActive"] is False and webhooks["disabledAt"] is not None and webhooks["consecutiveFailures"] == 1
    retried = await client.post(f"{base}/deliveries/{deliveries[0]['id']}/retry", headers=bearer(key))
    assert retried.status_code == 200
    again = await client.post(f"{base}/deliveries/{deliveries[0]['id']}/retry", headers=bearer(key))
    assert again.status_code in (200, 409)
    reactivated = await client.patch(base, json={"isActive": True}, headers=bearer(key))
    assert reactivated.json()["isActive"] is True and reactivated.json()["consecutiveFailures"] == 0


async def test_the_test_action_sends_a_signed_event(client: httpx.AsyncClient, key: str, receiver: Receiver) -> None:
    hook = await _subscribe(client, key, url=receiver.url, topics=["session.completed"])
    base = f"/v1/projects/{hook['projectId']}/webhooks/{hook['id']}"
    result = await client.post(f"{base}/test", headers=bearer(key))
    assert result.json() == {"message": "test event delivered (200)"}
    (got,) = receiver.notified
    assert json.loads(got.body)["event"] == "webhook.test"
    assert (await client.delete(base, headers=bearer(key))).status_code == 204
    assert (await client.post(f"{base}/test", headers=bearer(key))).status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"topics": ["session.*"]}, "url"),
        ({"url": "ftp://x", "topics": ["a"]}, "url"),
        ({"url": "http://", "topics": ["a"]}, "url"),  # no host: the session's webhook_url refuses it too
        ({"url": "https:///path-only", "topics": ["a"]}, "url"),
        ({"url": "http://x.test", "topics": []}, "topics"),
        ({"url": "http://x.test", "topics": ["Not A Topic"]}, "topics"),
        ({"url": "http://x.test", "topics": ["a"], "signatureMethod": "md5"}, "signatureMethod"),
        ({"url": "http://x.test", "topics": ["a"], "maxRetries": -1}, "maxRetries"),
        ({"url": "http://x.test", "topics": ["a"], "surprise": 1}, "surprise"),
    ],
)
async def test_invalid_webhooks_are_a_400(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], param: str
) -> None:
    response = await client.post(f"/v1/projects/{await _project(client, key)}/webhooks", json=body, headers=bearer(key))
    assert response.status_code == 400 and response.json()["param"] == param


async def test_another_projects_webhooks_are_out_of_reach(
    client: httpx.AsyncClient, key: str, other_key: str, receiver: Receiver
) -> None:
    hook = await _subscribe(client, key, url=receiver.url, topics=["session.*"])
    project = hook["projectId"]
    assert (await client.get(f"/v1/projects/{project}/webhooks", headers=bearer(other_key))).status_code == 404
    own = await _project(client, other_key)
    foreign = await client.patch(
        f"/v1/projects/{own}/webhooks/{hook['id']}", json={"url": "http://x.test"}, headers=bearer(other_key)
    )
    assert foreign.status_code == 404
    await new_session(client, other_key)
    assert receiver.notified == []
