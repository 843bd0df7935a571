"""Schemathesis against a live ``photodrop serve``: every REST operation under both prefixes, and
every GraphQL root field, with valid and invalid data. No answer may be a 5xx, and every answer
must be one the documents list (status, content type, body schema).

The run is bounded: a fixed, small number of examples per operation, from a fixed seed, so each
leg takes about a minute and fails the same way twice.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import graphql as gql
import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, checks
from schemathesis.graphql import nodes

from photodrop import __version__
from photodrop.config import Settings
from photodrop.schema import build_schema
from photodrop.web.rest import PREFIXES, api
from tests.conftest import engine_env, image_bytes, make_settings
from tests.live import LiveServer

# What the fuzzed server runs with: long polls and waits cut short so a generated timeout cannot
# stall the run, no per-key budget (the fuzzer would spend it in a second), no delivery worker.
SERVER_SETTINGS = {
    "long_poll_max_seconds": "1",
    "delivery_status_wait_seconds": "1",
    "rate_limit_per_minute": "0",
    "run_worker": "false",
}
EXAMPLES_PER_OPERATION = 5
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261201,
        # No example database either: a run never replays what an earlier one found, so every run is the same.
        "generation": {
            "mode": "all",
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "no-shrink": True,
            "database": "none",
        },
        # Examples-from-the-document and coverage phases would multiply the cases; fuzzing alone is bounded.
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
REST_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]

# The documents fuzzed are built here, from the same declarations and settings as the server's;
# test_the_server_serves_the_documents_fuzzed checks the live server answers exactly these.
_settings = Settings(_env_file=None, **SERVER_SETTINGS)  # type: ignore[arg-type]
REST_DOCUMENT = api.openapi(prefixes=PREFIXES, title="photodrop", version=__version__, settings=_settings)
GRAPHQL_DOCUMENT = build_schema(_settings).introspect()

# The JSON scalar (a destination's config, a session's tags): a small object of plain values.
_plain = st.one_of(
    st.text(max_size=30).map(nodes.String),
    st.integers(-(2**31), 2**31 - 1).map(nodes.Int),
    st.booleans().map(nodes.Boolean),
)
_field = st.tuples(st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True), _plain).map(
    lambda pair: gql.ObjectFieldNode(name=gql.NameNode(value=pair[0]), value=pair[1])
)
schemathesis.graphql.scalar("JSON", st.lists(_field, max_size=4).map(nodes.Object))
rest = schemathesis.openapi.from_dict(REST_DOCUMENT, config=CONFIG)
graphql = schemathesis.graphql.from_dict(GRAPHQL_DOCUMENT, config=CONFIG)


@dataclass
class Target:
    """The live server, its key, and real ids for the fuzzer's path parameters to hit."""

    url: str
    key: str
    ids: dict[str, str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {**engine_env(make_settings(tmp)), **{f"PHOTODROP_{k.upper()}": v for k, v in SERVER_SETTINGS.items()}}
    server = LiveServer(tmp / "data", env=env).start()
    try:
        key = next(line.strip() for line in server.lines if line.strip().startswith("aptr_live_"))
        yield Target(server.url, key, _seed_objects(server.url, key))
    finally:
        server.stop()
    # Whatever the fuzzer sent, nothing went wrong inside the server either.
    assert not [line for line in server.lines if "unhandled error" in line or "Traceback" in line]


def _seed_objects(url: str, key: str) -> dict[str, str]:
    """One of each object a path can name, so generated requests reach past the 404."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        project = http.get("/v1/project").json()["id"]
        session = http.post("/v1/sessions", json={"delivery_mode": "poll", "max_images": 50}).json()["id"]
        image = http.post(f"/v1/upload/{session}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")})
        hook = {"kind": "webhook", "name": "hook", "config": {"url": "https://receiver.invalid/hook"}}
        destination = http.post("/v1/destinations", json=hook).json()["id"]
        webhook = {"url": "https://receiver.invalid/events", "topics": ["session.*"]}
        event_hook = http.post(f"/v1/projects/{project}/webhooks", json=webhook).json()["id"]
        # The fuzzer may revoke, delete or make signing a key: never the one it calls with.
        spare = http.post(f"/v1/projects/{project}/keys", json={"label": "spare"}).json()["key"]["id"]
    return {
        "project_id": project,
        "session": session,
        "image_id": image.json()["id"],
        "destination": destination,
        "webhook": event_hook,
        "key_id": spare,
    }


def _aim(case: Case, ids: dict[str, str]) -> None:
    """Point three in four generated path parameters at real objects (which ones follows from the
    generated value, so the run stays deterministic); the project is always the caller's own."""
    path = case.operation.path
    for name, value in list((case.path_parameters or {}).items()):
        if name == "project_id":
            case.path_parameters[name] = ids["project_id"]
            continue
        if zlib.crc32(str(value).encode()) % 4 == 0:
            continue
        if name == "id":
            kind = next((k for k in ("webhook", "destination") if f"/{k}s/" in path), "session")
            case.path_parameters[name] = ids[kind]
        elif name in ids:
            case.path_parameters[name] = ids[name]


def test_the_server_serves_the_documents_fuzzed(target: Target) -> None:
    with httpx.Client(base_url=target.url) as http:
        for prefix in PREFIXES:
            assert http.get(f"{prefix}/openapi.json").json() == REST_DOCUMENT
        introspected = http.post("/graphql", json={"query": _INTROSPECTION}).json()["data"]
    assert introspected == GRAPHQL_DOCUMENT


_INTROSPECTION = schemathesis.graphql.loaders.get_introspection_query()


@rest.parametrize()
def test_rest_operations_hold_under_fuzzing(case: Case, target: Target) -> None:
    _aim(case, target.ids)
    case.call_and_validate(base_url=target.url, headers=target.auth, checks=REST_CHECKS, timeout=30)


@graphql.parametrize()
def test_graphql_fields_hold_under_fuzzing(case: Case, target: Target) -> None:
    response = case.call(base_url=f"{target.url}/graphql", headers=target.auth, timeout=30)
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    for error in body.get("errors") or []:
        # Nothing internal leaks: an unexpected failure is masked, never a traceback or a class name.
        assert "Traceback" not in str(error) and "Error:" not in error.get("message", ""), error
