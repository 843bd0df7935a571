"""A webhook receiver on a real socket that records what arrives and answers as a test tells it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.live import serving


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each image POST with the next queued (status, headers), then 200 once the queue is
    empty. Status notifications (they carry ``X-Aptr-Event``) are kept apart and answered 200."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    notified: list[Received] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    hold: asyncio.Event | None = None  # when set up, requests wait here before answering
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if "x-aptr-event" in request.headers:
            async with self.arrived:
                self.notified.append(Received(dict(request.headers), body))
                self.arrived.notify_all()
            return Response(status_code=200)
        async with self.arrived:
            self.received.append(Received(dict(request.headers), body))
            self.arrived.notify_all()
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return Response(status_code=status, headers=headers)

    async def wait_for(self, count: int) -> list[Received]:
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def wait_for_notifications(self, count: int) -> list[Received]:
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.notified) >= count)
        return self.notified


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    async with serving(app) as address:
        receiver.url = f"http://{address}/hook"
        yield receiver
