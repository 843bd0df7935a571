"""An unexpected failure is answered like any other error, on a connection the client keeps."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.live import serving

pytestmark = pytest.mark.anyio


async def _fails(request: Request) -> Response:
    raise RuntimeError("a bug")


async def test_a_500_keeps_the_keep_alive_connection(app: Starlette, caplog: pytest.LogCaptureFixture) -> None:
    # A handler with a bug, mounted beside the real routes so every middleware of the app runs.
    app.router.routes.insert(0, Route("/v1/fails", _fails))
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        with caplog.at_level(logging.ERROR, logger="photodrop"):
            failed = await http.get("/v1/fails")
        after = await http.get("/healthz")
    # One socket carried both requests: the server did not drop the connection after the 500.
    assert after.extensions["network_stream"] is failed.extensions["network_stream"]
    assert failed.status_code == 500
    assert failed.json() == {
        "statusCode": 500,
        "error": "Internal Server Error",
        "code": "INTERNAL",
        "message": "unexpected error",
        "param": None,
    }
    assert "x-request-id" in failed.headers
    assert "a bug" in caplog.text
    assert failed.headers.get("connection") != "close"
    assert after.status_code == 200
