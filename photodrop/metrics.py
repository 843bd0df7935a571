"""Prometheus metrics: what photodrop counts, and the text a scrape of ``/metrics`` answers.

Each app (each ``Services``) has its own registry, so tests and several apps in one process
never share counts. When ``PHOTODROP_METRICS_DIR`` is set, values live in prometheus_client's
multi-process files instead, and a scrape of any ``serve`` worker process reports the sum over all
of them (the directory is emptied when ``serve`` starts).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from sqlalchemy import func
from sqlmodel import col, select

from photodrop.errors import PhotodropError
from photodrop.models import Delivery, DeliveryMode, DeliveryStatus, utcnow

if TYPE_CHECKING:
    from photodrop.context import Services

P = ParamSpec("P")
T = TypeVar("T")
QUEUED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
# Seconds buckets for request latency: from a cached read to a long poll held to its limit.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every instrument photodrop updates; resolvers and the worker call the small methods below."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.registry = CollectorRegistry(auto_describe=True)
        own: CollectorRegistry | None = self.registry
        if directory is not None:
            _share_values_through(directory)
            multiprocess.MultiProcessCollector(self.registry, path=str(directory))  # type: ignore[no-untyped-call]
            own = None  # the collector reads every process's files; registering ours too would count twice
        self.requests = Counter(
            "photodrop_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=own
        )
        self.request_seconds = Histogram(
            "photodrop_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.request_bytes = Counter(
            "photodrop_http_request_body_bytes",
            "Request body bytes received (uploads among them)",
            ["route"],
            registry=own,
        )
        self.images_accepted = Counter("photodrop_images_accepted", "Photos accepted into sessions", registry=own)
        self.image_bytes = Counter("photodrop_image_bytes", "Bytes of the photos accepted", registry=own)
        self.uploads_refused = Counter(
            "photodrop_uploads_refused", "Upload requests refused, by error code", ["reason"], registry=own
        )
        self.deliveries = Counter(
            "photodrop_delivery_attempts",
            "Delivery attempts by destination kind and what became of the delivery",
            ["kind", "outcome"],
            registry=own,
        )
        self.queue_depth = Gauge(
            "photodrop_delivery_queue_depth",
            "Deliveries waiting or being sent, read from the database at scrape time",
            ["status"],
            multiprocess_mode="mostrecent",
            registry=own,
        )
        self.queue_oldest = Gauge(
            "photodrop_delivery_queue_oldest_seconds",
            "Age of the oldest delivery not yet done, read from the database at scrape time",
            multiprocess_mode="mostrecent",
            registry=own,
        )
        self.subscriptions = Gauge(
            "photodrop_live_subscriptions",
            "Live status subscribers attached (GraphQL subscriptions, long polls, the dashboard)",
            multiprocess_mode="livesum",
            registry=own,
        )
        self.long_polls = Gauge(
            "photodrop_long_polls_held", "Long polls waiting for a change", multiprocess_mode="livesum", registry=own
        )

    def image_accepted(self, size_bytes: int) -> None:
        self.images_accepted.inc()
        self.image_bytes.inc(size_bytes)

    def delivery_attempted(self, kind: DeliveryMode, settled: Delivery | None) -> None:
        """Count one attempt by what it left behind: succeeded, retrying, failed (for good), or lease_lost."""
        if settled is None:
            outcome = "lease_lost"
        elif settled.status is DeliveryStatus.PENDING:
            outcome = "retrying"
        else:
            outcome = settled.status.value
        self.deliveries.labels(kind.value, outcome).inc()

    def note_live_state(self, services: Services) -> None:
        """Copy what only this process knows (its subscribers) into the gauge other processes read."""
        self.subscriptions.set(services.bus.live_subscriptions)

    async def render(self, services: Services) -> bytes:
        """The exposition text, with the gauges that are read at scrape time brought up to date.

        The subscriber count is taken last, with no await before the text is generated, so it
        agrees with the live gauges (held long polls) that the same text reports."""
        await self._note_queue(services)
        self.note_live_state(services)
        return generate_latest(self.registry)

    async def _note_queue(self, services: Services) -> None:
        query = (
            select(Delivery.status, func.count(), func.min(Delivery.created_at))
            .where(col(Delivery.status).in_(QUEUED))
            .group_by(col(Delivery.status))
        )
        async with services.db.read() as s:
            rows = list((await s.exec(query)).all())
        counts = {status: 0 for status in QUEUED}
        oldest = None
        for status, count, created in rows:
            counts[DeliveryStatus(status)] = count
            oldest = created if oldest is None else min(oldest, created)
        for status, count in counts.items():
            self.queue_depth.labels(status.value).set(count)
        self.queue_oldest.set((utcnow() - oldest).total_seconds() if oldest is not None else 0)

    def close(self) -> None:
        """This process is done: its live gauges no longer count in a multi-process scrape."""
        if self.directory is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.directory))  # type: ignore[no-untyped-call]


def counts_refusals(
    accept: Callable[Concatenate[Services, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Services, P], Coroutine[Any, Any, T]]:
    """Count an upload's refusal by its error code, whichever door (REST, page) it came through."""

    @functools.wraps(accept)
    async def counted(services: Services, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await accept(services, *args, **kwargs)
        except PhotodropError as exc:
            services.metrics.uploads_refused.labels(exc.code).inc()
            raise

    return counted


def empty_directory(directory: Path) -> None:
    """Start a run with no counts left over from an earlier one (prometheus_client's advice)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def _share_values_through(directory: Path) -> None:
    """Make every metric created from now on keep its value in ``directory``'s mmap files.

    prometheus_client decides this when it is imported, from PROMETHEUS_MULTIPROC_DIR; photodrop
    decides it from its own settings, possibly after the import, so it makes the same choice here.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # where the mmap values open their files
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
