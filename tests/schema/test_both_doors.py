"""One table of session inputs through REST and GraphQL: both doors must decide alike."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import SEED_SESSION, bearer
from tests.shared_app import SharedApp
from tests.web.test_rest_sessions import BAD_CREATES

pytestmark = pytest.mark.anyio
# These tests only read what they make: one app for the module, each test in a project of its own.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()

GOOD_CREATES: list[dict[str, Any]] = [
    SEED_SESSION,
    {"delivery_mode": "poll"},
    {"delivery_mode": "poll", "max_images": 50, "expires_in": 604800, "tags": ["a", "b:c"]},
    {"delivery_mode": "webhook", "webhook_url": "http://hooks.test/x", "webhook_format": "multipart"},
    {"delivery_mode": "poll", "allowed_mime_types": ["image/JPG", "image/heic", "image/heic"]},
]

# GraphQL's input coercion turns a single value where a list is expected into a list of one,
# so this one input means something to GraphQL that it cannot mean in JSON.
GRAPHQL_COERCES = [({"delivery_mode": "poll", "allowed_mime_types": "image/jpeg"}, "allowed_mime_types")]

CREATE = """mutation($input: CreateSessionInput!) {
  createSession(input: $input) {
    session { maxImages expiresAt allowedMimeTypes deliveryMode webhookUrl webhookFormat tags passwordProtected }
    userErrors { field message code }
  }
}"""


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda match: match.group(1).upper(), name)


def _graphql_input(body: dict[str, Any]) -> dict[str, Any]:
    enums = {"delivery_mode", "webhook_format"}
    return {
        _camel(name): value.upper() if name in enums and isinstance(value, str) else value
        for name, value in body.items()
    }


async def _through_both(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> tuple[httpx.Response, Any]:
    rest = await client.post("/v1/sessions", json=body, headers=bearer(key))
    graphql = await client.post(
        "/graphql", json={"query": CREATE, "variables": {"input": _graphql_input(body)}}, headers=bearer(key)
    )
    return rest, graphql.json()


@pytest.mark.parametrize("body", GOOD_CREATES)
async def test_valid_inputs_create_the_same_session(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> None:
    rest, graphql = await _through_both(client, key, body)
    assert rest.status_code == 201
    payload = graphql["data"]["createSession"]
    assert payload["userErrors"] == []
    made, expected = payload["session"], rest.json()
    assert made["maxImages"] == expected["max_images"]
    assert made["allowedMimeTypes"] == expected["allowed_mime_types"]
    assert made["deliveryMode"] == expected["delivery_mode"].upper()
    assert made["webhookUrl"] == expected["webhook_url"]
    assert made["webhookFormat"] == expected["webhook_format"].upper()
    assert made["tags"] == expected["tags"]
    assert made["passwordProtected"] == expected["password_protected"]


@pytest.mark.parametrize(("body", "param"), [case for case in BAD_CREATES if case not in GRAPHQL_COERCES])
async def test_invalid_inputs_are_refused_by_both_naming_the_same_field(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], param: str
) -> None:
    rest, graphql = await _through_both(client, key, body)
    assert rest.status_code == 400 and rest.json()["param"] == param
    if "errors" in graphql:
        # The value's GraphQL type was already wrong, so validation refused it before any resolver ran.
        assert _camel(param) in graphql["errors"][0]["message"]
        return
    payload = graphql["data"]["createSession"]
    assert payload["session"] is None
    assert payload["userErrors"] == [
        {"field": _camel(param), "message": rest.json()["message"], "code": rest.json()["code"]}
    ]


async def test_the_one_input_only_graphql_can_read_is_still_validated_alike(
    client: httpx.AsyncClient, key: str
) -> None:
    ((body, _),) = GRAPHQL_COERCES
    rest, graphql = await _through_both(client, key, body)
    assert rest.status_code == 400
    as_list = await client.post(
        "/v1/sessions", json={**body, "allowed_mime_types": ["image/jpeg"]}, headers=bearer(key)
    )
    assert graphql["data"]["createSession"]["session"]["allowedMimeTypes"] == as_list.json()["allowed_mime_types"]
