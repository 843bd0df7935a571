"""GraphQL over HTTP: the spec's media types and status codes, auth, queries, mutations and limits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.resolvers import sessions as session_resolvers
from tests.conftest import bearer, image_bytes, make_settings, new_session, upload

pytestmark = pytest.mark.anyio

GQL_RESPONSE = "application/graphql-response+json"


async def gql(
    client: httpx.AsyncClient, key: str | None, query: str, variables: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    sent = {**(bearer(key) if key else {}), **{name.replace("_", "-"): value for name, value in headers.items()}}
    return await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=sent)


CREATE = """
mutation Create($input: CreateSessionInput!) {
  createSession(input: $input) {
    session { id status url qrCodeUrl maxImages imageCount allowedMimeTypes deliveryMode webhookUrl tags
              passwordProtected version expiresAt timeRemaining }
    userErrors { field message code }
  }
}"""


async def test_create_session_over_graphql(client: httpx.AsyncClient, key: str) -> None:
    response = await gql(client, key, CREATE, {"input": {"deliveryMode": "POLL", "maxImages": 4, "tags": ["a:b"]}})
    assert response.status_code == 200
    payload = response.json()["data"]["createSession"]
    assert payload["userErrors"] == []
    session = payload["session"]
    assert session["status"] == "PENDING" and session["maxImages"] == 4 and session["tags"] == ["a:b"]
    assert session["url"] == f"http://127.0.0.1:8000/s/{session['id']}"
    assert 3590 <= session["timeRemaining"] <= 3600
    rest = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert rest["max_images"] == 4 and rest["tags"] == ["a:b"] and rest["version"] == session["version"]


async def test_complete_session_over_graphql(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    created = await new_session(client, key)
    query = "mutation($id: ID!) { completeSession(id: $id) { session { status completedAt } userErrors { code } } }"
    done = (await gql(client, key, query, {"id": created["id"]})).json()["data"]["completeSession"]
    assert done["session"]["status"] == "COMPLETED" and done["userErrors"] == []
    foreign = (await gql(client, other_key, query, {"id": created["id"]})).json()["data"]["completeSession"]
    assert foreign == {"session": None, "userErrors": [{"code": "NOT_FOUND"}]}


SESSION_TREE = """
query($id: ID!) {
  session(id: $id) {
    id imageCount qrCodeSvg(size: 240)
    images { id index filename mimeType sizeBytes width height sha256 deliveries { kind status attempts } }
    deliveries { status }
    events { type data }
  }
}"""


async def test_a_session_with_its_images_deliveries_and_audit_trail(client: httpx.AsyncClient, key: str) -> None:
    created = await new_session(client, key, max_images=3)
    await upload(client, created["id"], ("one.png", image_bytes("PNG", (30, 20)), "image/png"))
    await upload(client, created["id"], ("two.jpg", image_bytes("JPEG", (40, 10)), "image/jpeg"))
    session = (await gql(client, key, SESSION_TREE, {"id": created["id"]})).json()["data"]["session"]
    assert session["imageCount"] == 2
    assert [(i["index"], i["filename"], i["width"]) for i in session["images"]] == [
        (0, "one.png", 30),
        (1, "two.jpg", 40),
    ]
    assert all(i["deliveries"] == [{"kind": "POLL", "status": "PENDING", "attempts": 0}] for i in session["images"])
    assert len(session["deliveries"]) == 2
    assert [e["type"] for e in session["events"]] == [
        "session.created",
        "image.uploaded",
        "session.active",
        "image.uploaded",
    ]
    assert session["qrCodeSvg"].startswith("<svg") and 'width="240' in session["qrCodeSvg"]
    image_id = session["images"][0]["id"]
    image = (
        await gql(client, key, "query($id: ID!) { image(id: $id) { filename sessionId } }", {"id": image_id})
    ).json()
    assert image["data"]["image"] == {"filename": "one.png", "sessionId": created["id"]}


async def test_other_projects_objects_are_null(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    created = await new_session(client, key)
    await upload(client, created["id"])
    image_id = (await gql(client, key, SESSION_TREE, {"id": created["id"]})).json()["data"]["session"]["images"][0][
        "id"
    ]
    query = "query($s: ID!, $i: ID!) { session(id: $s) { id } image(id: $i) { id } }"
    foreign = (await gql(client, other_key, query, {"s": created["id"], "i": image_id})).json()
    assert foreign == {"data": {"session": None, "image": None}}
    missing = (await gql(client, key, query, {"s": "sess_nope", "i": "img_nope"})).json()
    assert missing == foreign
    listing = (await gql(client, other_key, "{ sessions { edges { node { id } } } }")).json()
    assert listing["data"]["sessions"]["edges"] == []


async def test_sessions_connection_pages_newest_first(client: httpx.AsyncClient, key: str) -> None:
    ids = [(await new_session(client, key))["id"] for _ in range(5)]
    await client.post(f"/v1/sessions/{ids[0]}/complete", headers=bearer(key))
    query = """query($after: String, $status: [SessionStatus!]) {
      sessions(first: 2, after: $after, status: $status) {
        edges { cursor node { id } }
        pageInfo { hasNextPage endCursor }
      }
    }"""
    seen: list[str] = []
    after = None
    while True:
        page = (await gql(client, key, query, {"after": after})).json()["data"]["sessions"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ids[::-1]
    completed = (await gql(client, key, query, {"status": ["COMPLETED"]})).json()["data"]["sessions"]
    assert [edge["node"]["id"] for edge in completed["edges"]] == [ids[0]]
    wrong = (await gql(client, key, "{ sessions(first: 0) { edges { cursor } } }")).json()
    assert wrong["errors"][0]["extensions"] == {
        "code": "BAD_USER_INPUT",
        "reason": "VALIDATION_ERROR",
        "field": "first",
    }


@pytest.mark.parametrize(
    ("authorization", "message"),
    [(None, "missing API key"), ("Bearer aptr_live_nope", "invalid API key"), ("Token x", "missing API key")],
)
async def test_calls_without_a_valid_key_are_unauthenticated(
    client: httpx.AsyncClient, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for query in ("{ sessions { edges { cursor } } }", 'mutation { completeSession(id: "x") { session { id } } }'):
        response = await client.post("/graphql", json={"query": query}, headers=headers)
        errors = response.json()["errors"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert message in errors[0]["message"]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        (GQL_RESPONSE, GQL_RESPONSE),
        ("application/json;q=0.5, application/graphql-response+json", GQL_RESPONSE),
        ("application/graphql-response+json;q=0.2, application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/html;q=0.9, application/graphql-response+json;q=0.8, */*;q=0.1", GQL_RESPONSE),
    ],
)
async def test_response_media_type_follows_accept(
    client: httpx.AsyncClient, key: str, accept: str | None, media_type: str
) -> None:
    request = client.build_request("POST", "/graphql", json={"query": "{ __typename }"}, headers=bearer(key))
    del request.headers["accept"]
    if accept:
        request.headers["accept"] = accept
    response = await client.send(request)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_an_unacceptable_accept_is_a_406(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={**bearer(key), "Accept": "text/csv"}
    )
    assert response.status_code == 406


@pytest.mark.parametrize("query", ["{ session(id: ", "{ nosuchfield }", "query { session(id: true) { id } }"])
async def test_request_errors_are_400_with_graphql_response_json_and_200_with_json(
    client: httpx.AsyncClient, key: str, query: str
) -> None:
    modern = await client.post("/graphql", json={"query": query}, headers={**bearer(key), "Accept": GQL_RESPONSE})
    assert modern.status_code == 400
    assert "data" not in modern.json() and modern.json()["errors"]
    legacy = await client.post("/graphql", json={"query": query}, headers={**bearer(key), "Accept": "application/json"})
    assert legacy.status_code == 200 and legacy.json()["errors"]


async def test_a_field_error_keeps_status_200_with_graphql_response_json(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post(
        "/graphql",
        json={"query": "{ sessions(first: 0) { edges { cursor } } }"},
        headers={**bearer(key), "Accept": GQL_RESPONSE},
    )
    assert response.status_code == 200
    assert response.json()["data"] is None and response.json()["errors"]


async def test_get_runs_queries_and_refuses_mutations(client: httpx.AsyncClient, key: str) -> None:
    query = await client.get("/graphql", params={"query": "{ __typename }"}, headers=bearer(key))
    assert query.status_code == 200 and query.json() == {"data": {"__typename": "Query"}}
    mutation = await client.get(
        "/graphql", params={"query": 'mutation { completeSession(id: "x") { session { id } } }'}, headers=bearer(key)
    )
    assert mutation.status_code == 405 and mutation.headers["allow"] == "POST"
    assert mutation.json()["errors"]


@pytest.mark.parametrize(("content", "content_type"), [(b"{not json", "application/json"), (b"query=1", "text/plain")])
async def test_malformed_post_bodies_are_refused(
    client: httpx.AsyncClient, key: str, content: bytes, content_type: str
) -> None:
    response = await client.post("/graphql", content=content, headers={**bearer(key), "Content-Type": content_type})
    assert 400 <= response.status_code < 500
    assert response.json()["errors"]


async def test_graphiql_is_served_to_browsers_from_this_host_alone(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    assets = [url for url in re.findall(r'(?:src|href)="([^"]+)"', page.text) if not url.startswith("data:")]
    assert len(assets) == 7 and all(asset.startswith("/static/graphiql/") for asset in assets)
    assert "https://" not in page.text
    for asset in assets:
        assert (await client.get(asset)).status_code == 200


async def test_too_many_aliases_are_refused(client: httpx.AsyncClient, key: str) -> None:
    response = (await gql(client, key, "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }")).json()
    assert "aliases" in response["errors"][0]["message"].lower()
    fine = (await gql(client, key, "{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }")).json()
    assert "errors" not in fine


async def test_too_many_tokens_are_refused(client: httpx.AsyncClient, key: str) -> None:
    response = (await gql(client, key, "{ " + "__typename " * 2100 + "}")).json()
    assert "token" in response["errors"][0]["message"].lower()


class TestDepthLimit:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return make_settings(tmp_path, graphql_max_depth=4)

    async def test_queries_deeper_than_the_limit_are_refused(self, client: httpx.AsyncClient, key: str) -> None:
        # Depth counts from the root field at 0: images sits at 3 and its id at 4.
        four = "{ sessions { edges { node { images { id } } } } }"
        assert "errors" not in (await gql(client, key, four)).json()
        five = "{ sessions { edges { node { images { deliveries { id } } } } } }"
        response = (await gql(client, key, five)).json()
        assert "exceeds maximum operation depth" in response["errors"][0]["message"]


async def test_unexpected_errors_are_masked(
    client: httpx.AsyncClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("connection to /var/secret failed")

    monkeypatch.setattr(session_resolvers, "get_session", broken)
    response = (await gql(client, key, '{ session(id: "x") { id } }')).json()
    assert response["errors"] == [
        {
            "message": "Unexpected error.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["session"],
            "extensions": {"code": "INTERNAL_SERVER_ERROR"},
        }
    ]


class TestNoNPlusOne:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        # No background sweeper, so every statement counted below is the query's own.
        return make_settings(tmp_path, sweep_interval=3600)

    async def test_a_page_of_fifty_sessions_with_images_takes_a_fixed_number_of_queries(
        self, client: httpx.AsyncClient, key: str, services: Services
    ) -> None:
        for _ in range(50):
            created = await new_session(client, key)
            await upload(client, created["id"])
        statements: list[str] = []

        def count(conn: object, cursor: object, statement: str, *args: object) -> None:
            statements.append(statement)

        query = "{ sessions(first: 50) { edges { node { id images { id deliveries { status } } events { type } } } } }"
        services.caches.keys.clear()  # the key is read once more, so the count does not hang on the copy's age
        event.listen(services.db.engine.sync_engine, "before_cursor_execute", count)
        try:
            response = (await gql(client, key, query)).json()
        finally:
            event.remove(services.db.engine.sync_engine, "before_cursor_execute", count)
        edges = response["data"]["sessions"]["edges"]
        assert len(edges) == 50 and all(len(edge["node"]["images"]) == 1 for edge in edges)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        # key lookup, due-expiry check, the page, then one batch each for images, deliveries and events
        assert len(selects) == 6, [s[:100] for s in selects]


class TestIntrospectionSwitch:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return make_settings(tmp_path, graphql_introspection=False)

    async def test_introspection_can_be_turned_off(self, client: httpx.AsyncClient, key: str) -> None:
        response = (await gql(client, key, "{ __schema { types { name } } }")).json()
        assert "introspection" in response["errors"][0]["message"].lower()
        assert (await gql(client, key, "{ __typename }")).json() == {"data": {"__typename": "Query"}}
