"""The outbox worker: leases due deliveries in batches, sends a bounded number at a time, records
outcomes in batches, and keeps its leases alive while it works."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

# anyio loads its asyncio backend on first use, which blocked the event loop for about 0.15 s at a
# fresh worker's first attempt (each attempt reads its bytes through anyio.to_thread, and every
# webhook POST runs on httpcore's anyio backend): it loads with the worker, before it is ready.
import anyio._backends._asyncio  # noqa: F401

from photodrop import logs
from photodrop.context import Services
from photodrop.delivery import webhook
from photodrop.delivery.base import Receipt, open_destination
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable
from photodrop.models import Delivery, Notification, utcnow
from photodrop.resolvers import notifications, outbox
from photodrop.resolvers.deliveries import Attempted, Failed, Job, claim_jobs, prepare_statements, record_attempts
from photodrop.resolvers.destinations import store_rotated_config

log = logging.getLogger(__name__)

RECORD_GATHER = 0.02  # seconds an outcome may wait for others to share its transaction (see _recorder)


class DeliveryWorker:
    """Runs until stopped or cancelled; on the way out it hands back the deliveries it still holds.

    The worker holds up to twice its concurrency: the attempts in flight and a local queue of
    leased work that starts the moment a slot frees, so a slot never waits for a claim. It claims
    again, in one statement, once a concurrency's worth of room has opened (fewer, fuller claims).
    Finished attempts are recorded together (one transaction for all that finished meanwhile), and
    a heartbeat renews every lease the worker holds each third of PHOTODROP_DELIVERY_LEASE_SECONDS.

    ``stop()`` is the graceful way (SIGTERM): no new claims, the attempts in flight get up to
    ``grace`` seconds to finish, and only what is still unfinished then is cancelled and handed
    back, with what was queued. Cancelling ``run()`` hands everything back at once.
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
        self._queue: deque[Coroutine[Any, Any, None]] = deque()
        self._drained = False  # the last claim found less than it asked for: wait for news or the poll
        self._outcomes: list[Attempted] = []
        self._outcome_waiting = asyncio.Event()  # some finished attempt awaits recording
        self._outcome_ready = asyncio.Event()  # record now: a batch's worth, nothing else in flight, or closing
        self._closing = False
        self._prepared = False
        self._http = webhook.new_client(services.settings)

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

    async def prepare(self) -> None:
        """Ready what every claim and outcome uses (``prepare_statements``); ``run`` does it first
        too, so calling this is only a way to pay for it before the worker says it is ready. A
        database that cannot be reached now is no reason not to start: the claims retry it."""
        if self._prepared:
            return
        try:
            await self.services.db.run(prepare_statements)
        except Exception as exc:
            log.warning("could not prepare the outbox statements yet: %s", exc)
            return
        self._prepared = True

    async def run(self) -> None:
        await self.prepare()
        interval = self.services.settings.delivery_poll_interval
        hold, threshold = 2 * self.concurrency, self.concurrency
        helpers = asyncio.create_task(self._heartbeat()), asyncio.create_task(self._recorder())
        graceful = False
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                room = hold - len(self._active) - len(self._queue)
                if room >= threshold:
                    jobs = await self._claim(room)
                    self._queue.extend(jobs)
                    self._start_queued()
                    self._drained = len(jobs) < room
                    if not self._drained:
                        continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval if self._drained else None)
            graceful = True
        finally:
            await self._hand_back(self.grace if graceful else 0, helpers)

    def _start_queued(self) -> None:
        while self._queue and len(self._active) < self.concurrency and not self._stopping.is_set():
            task = asyncio.create_task(self._queue.popleft())
            self._active.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._start_queued()
        if not self._drained:
            self._wake.set()  # room for a claim, and more may be due

    async def _hand_back(self, grace: float, helpers: tuple[asyncio.Task[None], asyncio.Task[None]]) -> None:
        """Let attempts in flight finish for up to ``grace`` seconds, cancel the rest, record what
        finished, then release everything still held (the queue included)."""
        if self._active:
            log.info("stopping: waiting up to %gs for %d deliveries in flight", grace, len(self._active))
            if grace > 0:
                await asyncio.wait(set(self._active), timeout=grace)
        for task in self._active:
            task.cancel()
        await asyncio.gather(*self._active, return_exceptions=True)
        for queued in self._queue:
            queued.close()  # never started: nothing to cancel
        self._queue.clear()
        heartbeat, recorder = helpers
        heartbeat.cancel()
        self._closing = True
        self._outcome_waiting.set()
        self._outcome_ready.set()
        await asyncio.gather(asyncio.shield(recorder), heartbeat, return_exceptions=True)
        await asyncio.shield(self._record_pending())  # what finished while the recorder was writing
        with contextlib.suppress(Exception):
            handed = {
                "deliveries": await asyncio.shield(outbox.release(self.services, Delivery, worker=self.name)),
                "notifications": await asyncio.shield(outbox.release(self.services, Notification, worker=self.name)),
            }
            if any(handed.values()):
                log.info("handed back unfinished work to other workers", extra=handed)
        with contextlib.suppress(Exception):
            await asyncio.shield(self._http.aclose())

    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        """Attempts for what is due: image deliveries first, then status notifications."""
        try:
            jobs = [self._attempt(job) for job in await claim_jobs(self.services, worker=self.name, limit=limit)]
            if len(jobs) < limit:
                due = await notifications.claim_due(self.services, worker=self.name, limit=limit - len(jobs))
                jobs += [self._notify(notification) for notification in due]
        except Exception:
            log.exception("could not lease work; trying again")
            return []
        return jobs

    async def _heartbeat(self) -> None:
        """Renew this worker's leases while it lives; a worker that dies stops renewing them."""
        period = self.services.settings.delivery_lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            try:
                await outbox.renew(self.services, worker=self.name)
            except Exception:
                log.exception("could not renew the leases this worker holds; trying again")

    async def _recorder(self) -> None:
        """Record finished attempts, many in one transaction, until closing.

        A transaction's fixed cost (the trip to the writer, BEGIN and COMMIT) is most of a small
        one's, so an outcome waits, up to RECORD_GATHER seconds, for others to share it: until a
        concurrency's worth has finished, or none is left in flight (nothing more is coming soon)."""
        while True:
            await self._outcome_waiting.wait()
            if not self._outcome_ready.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outcome_ready.wait(), RECORD_GATHER)
            recorded = await self._record_pending()
            if self._closing:
                return
            if not recorded:
                await asyncio.sleep(self.services.settings.delivery_poll_interval)

    async def _record_pending(self) -> bool:
        """Record what has finished; on failure keep it for the next try (a row stays leased, the
        heartbeat renewing it, until its outcome is stored)."""
        batch, self._outcomes = self._outcomes, []
        self._outcome_waiting.clear()
        self._outcome_ready.clear()
        if not batch:
            return True
        try:
            settled = await record_attempts(self.services, batch, worker=self.name)
        except Exception:
            log.exception("could not record %d delivery attempts; trying again", len(batch))
            self._outcomes[:0] = batch
            self._outcome_waiting.set()
            self._outcome_ready.set()
            return False
        for attempted, stored in zip(batch, settled, strict=True):
            self.services.metrics.delivery_attempted(attempted.delivery.kind, stored)
        return True

    async def _notify(self, notification: Notification) -> None:
        error: DeliveryError | None = None
        try:
            await notifications.send(self.services, notification, http=self._http)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:
            log.exception("notification %s failed unexpectedly", notification.id)
            error = DestinationUnavailable(f"unexpected error: {type(exc).__name__}: {exc}")
        await notifications.record_outcome(self.services, notification, worker=self.name, error=error)

    async def _attempt(self, job: Job | Failed) -> None:
        delivery = job.delivery
        logs.bind(project=delivery.project_id, session=delivery.session_id)  # each attempt runs in its own task
        started = utcnow()
        clock = time.monotonic()
        outcome: Receipt | DeliveryError
        try:
            if isinstance(job, Failed):
                raise job.error
            destination = open_destination(job.kind, job.config, dataclasses.replace(job.context, http=self._http))
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
        self._outcomes.append(Attempted(delivery, started=started, duration_ms=duration_ms, outcome=outcome))
        self._outcome_waiting.set()
        if len(self._outcomes) >= self.concurrency or len(self._active) <= 1:  # this attempt's task is still active
            self._outcome_ready.set()
