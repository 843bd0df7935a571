"""JSON log lines: one object per line, tagged with the request id (echoed to the caller), project and session."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from photodrop import logs
from photodrop.logs import ContextFilter, JsonFormatter
from tests.conftest import bearer, new_session, upload

pytestmark = pytest.mark.anyio


AccessLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> AccessLines:
    """The access lines logged so far, each formatted as photodrop writes it and parsed back."""
    caplog.handler.addFilter(ContextFilter())  # as logs.configure does: stamp the context when logged
    caplog.set_level(logging.DEBUG, logger="photodrop.access")
    formatter = JsonFormatter()

    def lines() -> list[dict[str, Any]]:
        return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "photodrop.access"]

    return lines


def _only(lines: list[dict[str, Any]], route: str) -> dict[str, Any]:
    (line,) = [line for line in lines if line["route"] == route]
    return line


async def test_a_given_request_id_is_echoed_and_logged(client: httpx.AsyncClient, access: AccessLines) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "req-7f3a.42"})
    assert response.headers["x-request-id"] == "req-7f3a.42"
    line = _only(access(), "/healthz")
    assert line["request_id"] == "req-7f3a.42"
    assert line["level"] == "debug"  # probes stay out of the way at INFO
    assert line["method"] == "GET" and line["status"] == 200 and line["path"] == "/healthz"


@pytest.mark.parametrize("given", [None, "", "has spaces", "x" * 129, 'quote"and\nnewline'])
async def test_a_missing_or_unsafe_request_id_is_replaced(client: httpx.AsyncClient, given: str | None) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    first = (await client.get("/healthz", headers=headers)).headers["x-request-id"]
    second = (await client.get("/healthz", headers=headers)).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second


async def test_an_upload_is_logged_with_its_project_and_session(
    client: httpx.AsyncClient, key: str, access: AccessLines
) -> None:
    session = await new_session(client, key)
    response = await upload(client, session["id"])
    assert response.status_code == 201
    await client.get("/healthz")
    lines = access()
    line = _only(lines, "/api/v1/upload/{id}/images")
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["session_id"] == session["id"]
    assert line["project_id"].startswith("proj_")
    assert line["status"] == 201 and line["request_bytes"] > 0 and line["level"] == "info"
    assert line["path"] == f"/api/v1/upload/{session['id']}/images"
    assert "session_id" not in _only(lines, "/healthz")  # one request's context never leaks into the next


async def test_a_refused_upload_is_logged_with_its_status(
    client: httpx.AsyncClient, key: str, access: AccessLines
) -> None:
    session = await new_session(client, key)
    refused = await upload(client, session["id"], ("a.jpg", b"not a photo", "image/jpeg"))
    assert refused.status_code == 415
    line = _only(access(), "/api/v1/upload/{id}/images")
    assert line["status"] == 415 and line["session_id"] == session["id"]


def test_exceptions_and_odd_values_still_make_one_json_line() -> None:
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        record = logging.LogRecord("photodrop.x", logging.ERROR, __file__, 1, "failed: %s", ("why",), None)
        record.exc_info = sys.exc_info()
    record.__dict__["when"] = object()  # not JSON: written as its text
    text = JsonFormatter().format(record)
    assert "\n" not in text
    entry = json.loads(text)
    assert entry["message"] == "failed: why" and entry["level"] == "error" and entry["logger"] == "photodrop.x"
    assert "ValueError: broken" in entry["exc"] and entry["when"].startswith("<object")


async def test_an_authenticated_request_is_logged_with_the_key_s_project(
    client: httpx.AsyncClient, key: str, access: AccessLines
) -> None:
    assert (await client.get("/v1/sessions", headers=bearer(key))).status_code == 200
    assert (await client.get("/v1/sessions", headers=bearer("aptr_live_" + "0" * 32))).status_code == 401
    listed, refused = [line for line in access() if line["route"] == "/v1/sessions"]
    assert listed["project_id"].startswith("proj_") and "session_id" not in listed
    assert "project_id" not in refused and refused["status"] == 401


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root, quiet = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, quiet_level = root.handlers[:], root.level, quiet.level
    yield
    root.handlers[:], quiet.level = handlers, quiet_level
    root.setLevel(level)


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize(("level", "announced"), [("INFO", False), ("DEBUG", True)])
def test_httpx_announces_each_request_only_at_debug(level: str, announced: bool) -> None:
    """A delivery's request line from httpx is noise at INFO (one per delivery); its warnings still show."""
    logs.configure(level)
    httpx_log = logging.getLogger("httpx")
    assert httpx_log.isEnabledFor(logging.INFO) is announced
    assert httpx_log.isEnabledFor(logging.WARNING)
