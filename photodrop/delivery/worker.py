"""The outbox worker: leases due deliveries, sends them a bounded number at a time, records outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

from photodrop.context import Services
from photodrop.delivery.base import Receipt, open_destination
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable
from photodrop.models import Delivery, utcnow
from photodrop.resolvers.deliveries import claim_due, prepare, record_attempt, release_leases

log = logging.getLogger(__name__)


class DeliveryWorker:
    """Runs until cancelled; on the way out it hands back the deliveries it still holds."""

    def __init__(self, services: Services, *, concurrency: int | None = None, name: str | None = None) -> None:
        self.services = services
        self.concurrency = concurrency or services.settings.delivery_concurrency
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._active: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """New deliveries are due: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        interval = self.services.settings.delivery_poll_interval
        try:
            while True:
                self._wake.clear()
                free = self.concurrency - len(self._active)
                claimed = await self._claim(free) if free > 0 else []
                for delivery in claimed:
                    task = asyncio.create_task(self._attempt(delivery), name=f"photodrop-delivery:{delivery.id}")
                    self._active.add(task)
                    task.add_done_callback(self._finished)
                if claimed and len(claimed) == free:
                    continue  # there may be more due; claim again once a slot frees
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
        finally:
            for task in self._active:
                task.cancel()
            await asyncio.gather(*self._active, return_exceptions=True)
            with contextlib.suppress(Exception):
                released = await asyncio.shield(release_leases(self.services, worker=self.name))
                if released:
                    log.info("handed back %d unfinished deliveries", released)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._wake.set()

    async def _claim(self, limit: int) -> list[Delivery]:
        try:
            return await claim_due(self.services, worker=self.name, limit=limit)
        except Exception:
            log.exception("could not lease deliveries; trying again")
            return []

    async def _attempt(self, delivery: Delivery) -> None:
        started = utcnow()
        clock = time.monotonic()
        outcome: Receipt | DeliveryError
        try:
            job = await prepare(self.services, delivery)
            outcome = await open_destination(job.kind, job.config, job.context).deliver(job.payload)
        except DeliveryError as exc:
            outcome = exc
        except Exception as exc:
            # A bug or an untranslated SDK error: keep the delivery, retry it, and say what happened.
            log.exception("delivery %s failed unexpectedly", delivery.id)
            outcome = DestinationUnavailable(f"unexpected error: {type(exc).__name__}: {exc}")
        duration_ms = int((time.monotonic() - clock) * 1000)
        await record_attempt(
            self.services, delivery, worker=self.name, started=started, duration_ms=duration_ms, outcome=outcome
        )
