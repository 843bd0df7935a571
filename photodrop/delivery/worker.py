"""The outbox worker: leases due deliveries, sends them a bounded number at a time, records outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Coroutine
from typing import Any

from photodrop import logs
from photodrop.context import Services
from photodrop.delivery.base import Receipt, open_destination
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable
from photodrop.models import Delivery, Notification, utcnow
from photodrop.resolvers import notifications, outbox
from photodrop.resolvers.deliveries import claim_due, prepare, record_attempt
from photodrop.resolvers.destinations import store_rotated_config

log = logging.getLogger(__name__)


class DeliveryWorker:
    """Runs until stopped or cancelled; on the way out it hands back the deliveries it still holds.

    ``stop()`` is the graceful way (SIGTERM): no new claims, the attempts in flight get up to
    ``grace`` seconds to finish, and only what is still unfinished then is cancelled and handed
    back. Cancelling ``run()`` hands everything back at once.
    """

    def __init__(
        self,
        services: Services,
        *,
        concurrency: int | None = None,
        name: str | None = None,
        grace: float | None = None,
    ) -> None:
        self.services = services
        self.concurrency = concurrency or services.settings.delivery_concurrency
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.grace = services.settings.shutdown_timeout if grace is None else grace
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._active: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """New deliveries are due: look now rather than at the next poll."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Claim nothing more; ``run()`` returns once the attempts in flight finish or the grace runs out."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        interval = self.services.settings.delivery_poll_interval
        graceful = False
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                free = self.concurrency - len(self._active)
                jobs = await self._claim(free) if free > 0 else []
                for job in jobs:
                    task = asyncio.create_task(job)
                    self._active.add(task)
                    task.add_done_callback(self._finished)
                if jobs and len(jobs) == free:
                    continue  # there may be more due; claim again once a slot frees
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
            graceful = True
        finally:
            await self._hand_back(self.grace if graceful else 0)

    async def _hand_back(self, grace: float) -> None:
        """Let attempts in flight finish for up to ``grace`` seconds, then cancel the rest and release them."""
        if self._active:
            log.info("stopping: waiting up to %gs for %d deliveries in flight", grace, len(self._active))
            if grace > 0:
                await asyncio.wait(set(self._active), timeout=grace)
        for task in self._active:
            task.cancel()
        await asyncio.gather(*self._active, return_exceptions=True)
        with contextlib.suppress(Exception):
            handed = {
                "deliveries": await asyncio.shield(outbox.release(self.services, Delivery, worker=self.name)),
                "notifications": await asyncio.shield(outbox.release(self.services, Notification, worker=self.name)),
            }
            if any(handed.values()):
                log.info("handed back unfinished work to other workers", extra=handed)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._wake.set()

    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        """Attempts for what is due: image deliveries first, then status notifications."""
        try:
            deliveries = await claim_due(self.services, worker=self.name, limit=limit)
            jobs = [self._attempt(delivery) for delivery in deliveries]
            if len(jobs) < limit:
                due = await notifications.claim_due(self.services, worker=self.name, limit=limit - len(jobs))
                jobs += [self._notify(notification) for notification in due]
        except Exception:
            log.exception("could not lease work; trying again")
            return []
        return jobs

    async def _notify(self, notification: Notification) -> None:
        error: DeliveryError | None = None
        try:
            await notifications.send(self.services, notification)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:
            log.exception("notification %s failed unexpectedly", notification.id)
            error = DestinationUnavailable(f"unexpected error: {type(exc).__name__}: {exc}")
        await notifications.record_outcome(self.services, notification, worker=self.name, error=error)

    async def _attempt(self, delivery: Delivery) -> None:
        logs.bind(project=delivery.project_id, session=delivery.session_id)  # each attempt runs in its own task
        started = utcnow()
        clock = time.monotonic()
        outcome: Receipt | DeliveryError
        try:
            job = await prepare(self.services, delivery)
            destination = open_destination(job.kind, job.config, job.context)
            try:
                outcome = await destination.deliver(job.payload)
            finally:
                rotated = destination.rotated_config()
                if rotated is not None and delivery.destination_id is not None:
                    await store_rotated_config(self.services, delivery.destination_id, rotated)
        except DeliveryError as exc:
            outcome = exc
        except Exception as exc:
            # A bug or an untranslated SDK error: keep the delivery, retry it, and say what happened.
            log.exception("delivery %s failed unexpectedly", delivery.id)
            outcome = DestinationUnavailable(f"unexpected error: {type(exc).__name__}: {exc}")
        duration_ms = int((time.monotonic() - clock) * 1000)
        settled = await record_attempt(
            self.services, delivery, worker=self.name, started=started, duration_ms=duration_ms, outcome=outcome
        )
        self.services.metrics.delivery_attempted(delivery.kind, settled)
