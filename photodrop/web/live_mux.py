"""The subscription multiplexer behind ``/graphql``'s websockets.

Subscribers of the same live field with the same document, variables and project form one group.
A group follows its channel on the event bus once, executes its document once per update,
serialises the result once, and hands every member's connection the shared bytes behind that
member's own operation id. Each connection has one writer task and a bounded queue: a state
update waiting for a slow socket is replaced by a newer one, an event feed that falls too far
behind is cut off, and neither ever holds up another socket. A subscription is a small record
in its group and in its connection: no task, generator chain or database session of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLField,
    OperationType,
    get_operation_ast,
    parse,
    specified_rules,
)
from graphql.execution import Executor, execute_subscription_event
from graphql.execution.values import get_argument_values
from starlette.websockets import WebSocket
from strawberry import Schema
from strawberry.schema.schema import validate_document

from photodrop.context import Principal, Services
from photodrop.errors import PhotodropError
from photodrop.events import Envelope, SharedMailbox
from photodrop.models import UploadSession
from photodrop.resolvers.live import (
    MAX_PENDING_EVENTS,
    MAX_PENDING_SESSIONS,
    EventWatch,
    SessionReads,
    SessionWatch,
    Watch,
)
from photodrop.schema import validation_rules
from photodrop.schema.context import GraphQLContext, Loaders
from photodrop.schema.errors import as_graphql_error, shape_errors
from photodrop.schema.operations import LIVE_FIELDS, live_view

log = logging.getLogger(__name__)

# Frames a subscription may have waiting for a slow socket (events, or sessions of a project feed)
# before it is cut off.
MAX_PENDING = max(MAX_PENDING_EVENTS, MAX_PENDING_SESSIONS)
PLANS = 256  # distinct documents whose parse and validation are remembered
# A project feed remembers this many sessions' newest versions, to drop a version it already sent.
REMEMBERED_SESSIONS = 10_000
TOO_SLOW = json.dumps(
    {
        "data": None,
        "errors": [{"message": "events arrived faster than they were read", "extensions": {"code": "TOO_SLOW"}}],
    },
    separators=(",", ":"),
)


UNEXPECTED = json.dumps(
    {"data": None, "errors": [{"message": "Unexpected error.", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]},
    separators=(",", ":"),
)


def _waiting(frames: list[tuple[str | None, str]], session_id: str) -> int | None:
    """Where a state of ``session_id`` still waits among ``frames``, newest first."""
    for index in range(len(frames) - 1, -1, -1):
        if frames[index][0] == session_id:
            return index
    return None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Plan:
    """A subscription document that passed parsing and validation, and the live field it asks for."""

    query: str  # the text, shared by every group keyed on it
    document: DocumentNode
    field_node: FieldNode
    field: GraphQLField
    name: str


@dataclass(frozen=True, slots=True)
class Operation:
    """A planned document with the variables and operation name one group runs it with."""

    plan: Plan
    variables: dict[str, Any] | None
    name: str | None


class Record:
    """One subscription: which connection and operation id it answers, and the newest version it was sent."""

    __slots__ = ("conn", "group", "op_id", "prefix", "version")

    def __init__(self, conn: LiveConnection, op_id: str, group: Group) -> None:
        self.conn = conn
        self.op_id = op_id
        self.group = group
        self.prefix = conn.next_prefix(op_id)
        self.version = 0


class LiveConnection:
    """One websocket's multiplexed subscriptions and the single task that writes their frames."""

    __slots__ = ("closed", "legacy", "ops", "queue", "websocket", "writer")

    def __init__(self, websocket: WebSocket, *, legacy: bool) -> None:
        self.websocket = websocket
        self.legacy = legacy  # graphql-ws ("data") rather than graphql-transport-ws ("next")
        self.ops: dict[str, Record] = {}
        # Frames not yet written, per subscription, in the order each first had something to send;
        # each with the session it shows, if a newer state of that session may replace it.
        self.queue: dict[Record, list[tuple[str | None, str]]] = {}
        self.writer: asyncio.Task[None] | None = None
        self.closed = False

    def next_prefix(self, op_id: str) -> str:
        if self.legacy:
            return f'{{"type":"data","id":{_json(op_id)},"payload":'
        return f'{{"id":{_json(op_id)},"type":"next","payload":'

    def complete_frame(self, op_id: str) -> str:
        if self.legacy:
            return f'{{"type":"complete","id":{_json(op_id)}}}'
        return f'{{"id":{_json(op_id)},"type":"complete"}}'

    def push(self, record: Record, frame: str, *, state_of: str | None = None) -> bool:
        """Queue ``frame`` for ``record``; False when it fell too far behind to keep (it is cut off).

        A frame showing the state of session ``state_of`` replaces one still waiting for the same
        session: a slow reader gets the newest state rather than a backlog.
        """
        if self.closed:
            return True
        frames = self.queue.get(record)
        if frames is None:
            self.queue[record] = [(state_of, frame)]
        elif state_of is not None and (waiting := _waiting(frames, state_of)) is not None:
            frames[waiting] = (state_of, frame)
        elif len(frames) >= MAX_PENDING:
            frames[:] = [(None, record.prefix + TOO_SLOW + "}")]
            return False
        else:
            frames.append((state_of, frame))
        if self.writer is None:
            self.writer = asyncio.create_task(self._write(), name="photodrop-live-writer")
        return True

    def end(self, record: Record, *, payload: str | None = None) -> None:
        """Send ``record`` its last ``payload`` (if any) and ``complete``, and forget its operation id."""
        if self.ops.get(record.op_id) is record:
            del self.ops[record.op_id]
        if payload is not None:
            self.push(record, record.prefix + payload + "}")
        frames = self.queue.get(record)
        if frames is not None:
            frames.append((None, self.complete_frame(record.op_id)))
        else:
            self.push(record, self.complete_frame(record.op_id))

    def forget(self, record: Record) -> None:
        """Drop ``record`` and whatever it still had to send: its subscriber asked to stop."""
        if self.ops.get(record.op_id) is record:
            del self.ops[record.op_id]
        self.queue.pop(record, None)

    async def _write(self) -> None:
        try:
            while self.queue:
                record = next(iter(self.queue))
                for _, frame in self.queue.pop(record):
                    await self.websocket.send_text(frame)
        except Exception as exc:  # the socket is gone; its reader notices and drops the connection
            log.debug("a live connection stopped taking frames: %s", exc)
            self.closed = True
            self.queue.clear()
        finally:
            self.writer = None


class Group(SharedMailbox):
    """The subscribers of one live field with the same document, variables and project.

    An update is executed, serialised and queued for every member as soon as the bus offers it,
    in the publisher's own turn of the event loop: no task of the group's stands between the
    publish and each connection's writer, unless an execution has to wait on something.
    """

    def __init__(
        self, hub: LiveHub, key: tuple[str, ...], watch: Watch, operation: Operation, principal: Principal
    ) -> None:
        self.hub = hub
        self.key = key
        self.watch = watch
        self.every_event = watch.every_event
        # What its executor is built from, per update: an executor kept per idle group costs kilobytes.
        self.operation = operation
        self.principal = principal
        self.channel = watch.channel(principal)
        self.records: dict[Record, None] = {}
        self.latest: str | None = None  # the newest payload of a one-session watch, for late joiners
        self.latest_version = 0
        # Built on the first update that needs them: most groups wait idle for most of their life.
        self.pending: OrderedDict[str, UploadSession | Envelope] | None = None
        self.delivered: OrderedDict[str, int] | None = None
        self.started: asyncio.Task[None] | None = None
        self.ready = False  # following the channel, its first state (if any) sent
        self.worker: asyncio.Task[None] | None = None  # finishing an execution that had to wait
        self.over = False

    @property
    def subscribers(self) -> int:
        return len(self.records)

    def offer(self, envelope: Envelope) -> None:
        delivered = self.delivered
        item: UploadSession | Envelope
        if isinstance(self.watch, EventWatch):
            if delivered is not None and envelope.id in delivered:
                return  # offered again after a reconnect, having arrived live already
            self._remember(envelope.id, 0)
            key, item = envelope.id, envelope
        else:
            session = self.watch.pick(envelope)
            if session is None:
                return
            held = self.pending.get(session.id) if self.pending else None
            newest = max(
                held.version if isinstance(held, UploadSession) else 0,
                delivered.get(session.id, 0) if delivered is not None else 0,
            )
            if session.version <= newest:
                return
            key, item = session.id, session
        if self.pending is None:
            self.pending = OrderedDict()
        self.pending[key] = item
        if self.ready and self.worker is None:
            self._drain()

    def _remember(self, key: str, version: int) -> None:
        if self.delivered is None:
            self.delivered = OrderedDict()
        self.delivered[key] = version
        self.delivered.move_to_end(key)
        if len(self.delivered) > (MAX_PENDING_EVENTS if self.every_event else REMEMBERED_SESSIONS):
            self.delivered.popitem(last=False)

    async def start(self) -> None:
        """Follow the channel, then take the watch's first state; members are told why if it failed."""
        services = self.hub.services
        try:
            await services.bus.attach(self.channel, self)
            if self.over:  # every member left before it was attached
                services.bus.detach(self.channel, self)
                return
            first = await self.watch.start(self.hub.reads.get, self.principal)
            if first is not None and not self.over:
                rendered = self.hub.render(self, first)
                self._send(first, rendered if isinstance(rendered, str) else await rendered)
        except PhotodropError as exc:
            self._fail(_json({"data": None, "errors": [as_graphql_error(exc).formatted]}))
            return
        except Exception:
            log.exception("could not start following %s", self.channel)
            self._fail(UNEXPECTED)
            return
        finally:
            self.started = None  # a finished task kept by every idle group would be memory for nothing
        self.ready = not self.over
        if self.ready:
            self._drain()

    def _fail(self, payload: str) -> None:
        for record in list(self.records):
            record.conn.end(record, payload=payload)
        self._close()

    def _drain(self) -> None:
        """Send every pending update, as far as executions go without waiting; a wait goes on in a task."""
        try:
            while self.pending and not self.over:
                _, item = self.pending.popitem(last=False)
                if isinstance(item, UploadSession):
                    self._remember(item.id, item.version)
                    if isinstance(self.watch, SessionWatch) and item.version <= self.latest_version:
                        self._send(item, None)
                        continue
                rendered = self.hub.render(self, item)
                if not isinstance(rendered, str):
                    self.worker = asyncio.create_task(
                        self._resume(item, rendered), name=f"photodrop-live:{self.channel}"
                    )
                    return
                self._send(item, rendered)
        except Exception:
            log.exception("a live group on %s failed", self.channel)
            self._fail(UNEXPECTED)

    async def _resume(self, item: UploadSession | Envelope, rendered: Awaitable[str]) -> None:
        try:
            payload = await rendered
            if not self.over:
                self._send(item, payload)
        except Exception:
            log.exception("a live group on %s failed", self.channel)
            self._fail(UNEXPECTED)
            return
        finally:
            self.worker = None
        self._drain()

    def _send(self, item: UploadSession | Envelope, payload: str | None) -> None:
        """Queue ``item``'s ``payload`` for every member that has not had it (or a newer version) yet.

        ``payload`` is None for a version of a one-session watch no newer than the one it holds.
        """
        if isinstance(item, Envelope):
            assert payload is not None
            for record in list(self.records):
                if not record.conn.push(record, record.prefix + payload + "}"):
                    self._cut_off(record)
            return
        session = item
        if isinstance(self.watch, SessionWatch):
            if payload is not None and session.version > self.latest_version:
                self.latest = payload
                self.latest_version = session.version
            if self.latest is None:
                return
            frame_payload = self.latest
            behind = [record for record in self.records if record.version < self.latest_version]
            final = self.watch.ends_with(session) and session.version >= self.latest_version
        else:
            assert payload is not None
            frame_payload = payload
            behind = list(self.records)
            final = False
        for record in behind:
            record.version = max(session.version, self.latest_version)
            if final:
                record.conn.end(record, payload=frame_payload)
            elif not record.conn.push(record, record.prefix + frame_payload + "}", state_of=session.id):
                self._cut_off(record)
        if final:
            self.records.clear()
            self._close()

    def _cut_off(self, record: Record) -> None:
        """A member too far behind: it ends with the error queued in place of what it missed."""
        self.leave(record)
        record.conn.end(record)

    def join(self, record: Record) -> None:
        self.records[record] = None
        watch = self.watch
        if isinstance(watch, SessionWatch) and self.latest is not None and self.ready:
            # Already following the channel: the newest state it has is as current as a read would be.
            record.version = self.latest_version
            record.conn.push(record, record.prefix + self.latest + "}", state_of=watch.session_id)

    def leave(self, record: Record) -> None:
        self.records.pop(record, None)
        if not self.records:
            self._close()

    def _close(self) -> None:
        if self.over:
            return
        self.over = True
        self.hub.groups.pop(self.key, None)
        self.hub.services.bus.detach(self.channel, self)


class LiveHub:
    """Every multiplexed subscription of this process, grouped; and the documents already planned."""

    def __init__(self, services: Services, schema: Schema) -> None:
        self.services = services
        self.schema = schema
        self.groups: dict[tuple[str, ...], Group] = {}
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self._rules = (*specified_rules, *validation_rules(services.settings))
        self.executions = 0  # how many times a group executed its document: what sharing saves
        self.reads = SessionReads(services)  # first states, read in batches for the groups starting
        self._request: WebSocket | None = None

    def _executor(self, operation: Operation, principal: Principal) -> Executor[GraphQLContext] | list[GraphQLError]:
        """An executor for one run of ``operation``, with a context of its own for the whole group."""
        assert self._request is not None
        context = GraphQLContext(
            services=self.services,
            request=self._request,
            response=None,
            loaders=Loaders.for_services(self.services),
            principal=principal,
        )
        executor: Executor[GraphQLContext] | list[GraphQLError] = self.schema.execution_context_class.build(
            self.schema._schema,
            operation.plan.document,
            context_value=context,
            raw_variable_values=operation.variables,
            operation_name=operation.name,
        )
        return executor

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        """The live field ``query`` subscribes to; None when Strawberry's own path should answer it.

        That path takes every document that fails to parse or validate, that is not a
        subscription, or whose one root field is not a plain live field, so those answers
        (errors included) stay exactly what they were.
        """
        key = (query, operation_name)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = self._plan(query, operation_name)
        self._plans[key] = plan
        if len(self._plans) > PLANS:
            self._plans.popitem(last=False)
        return plan

    def _plan(self, query: str, operation_name: str | None) -> Plan | None:
        try:
            document = parse(query, max_tokens=self.services.settings.graphql_max_tokens)
        except GraphQLError:
            return None
        if validate_document(self.schema._schema, document, self._rules):
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation != OperationType.SUBSCRIPTION:
            return None
        selections = operation.selection_set.selections
        if len(selections) != 1 or not isinstance(selections[0], FieldNode) or selections[0].directives:
            return None
        node = selections[0]
        subscription = self.schema._schema.subscription_type
        if node.name.value not in LIVE_FIELDS or subscription is None:
            return None
        return Plan(query, document, node, subscription.fields[node.name.value], node.name.value)

    def join(
        self,
        conn: LiveConnection,
        op_id: str,
        plan: Plan,
        payload: dict[str, Any],
        context: GraphQLContext,
    ) -> bool:
        """Add a subscription to its group; False when its variables do not fit (Strawberry says why)."""
        principal = context.principal
        if principal is None:
            return False
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        key = (principal.project_id, plan.query, str(operation_name), _json(variables))
        group = self.groups.get(key)
        if group is None:
            if self._request is None:
                # Live fields read nothing from the request; this stands in for it, reaching no socket.
                self._request = WebSocket(dict(context.request.scope), receive=_nothing, send=_nothing)
            operation = Operation(plan, variables, operation_name)
            executor = self._executor(operation, principal)
            if not isinstance(executor, Executor):
                return False  # the variables do not fit the document
            watch = LIVE_FIELDS[plan.name](get_argument_values(plan.field, plan.field_node, executor.variable_values))
            group = self.groups[key] = Group(self, key, watch, operation, principal)
            group.started = asyncio.create_task(group.start(), name=f"photodrop-live-start:{group.channel}")
        record = conn.ops[op_id] = Record(conn, op_id, group)
        group.join(record)
        return True

    def leave(self, conn: LiveConnection, op_id: str) -> None:
        """The subscriber stopped: free its record, and its group with the last one."""
        record = conn.ops.get(op_id)
        if record is not None:
            conn.forget(record)
            record.group.leave(record)

    def drop(self, conn: LiveConnection) -> None:
        """The connection is gone: free every subscription it held."""
        for op_id in list(conn.ops):
            self.leave(conn, op_id)
        conn.closed = True
        conn.queue.clear()
        if conn.writer is not None:
            conn.writer.cancel()

    def render(self, group: Group, item: UploadSession | Envelope) -> str | Awaitable[str]:
        """The group's document run on one update and serialised, once for every member.

        Live fields resolve from the update itself, so the answer is usually there at once; a
        selection that reads more returns what to await for it.
        """
        self.executions += 1
        executor = self._executor(group.operation, group.principal)
        assert isinstance(executor, Executor)  # the variables fitted when the group was made
        result = execute_subscription_event(executor.build_per_event_executor(live_view(item)))
        if isawaitable(result):
            return _serialised(result)
        return _serialise(result)


async def _nothing(*_: Any) -> Any:
    raise RuntimeError("a live group's context reaches no socket")


def _serialise(result: ExecutionResult) -> str:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in shape_errors(result.errors)]
    return _json(payload)


async def _serialised(result: Awaitable[ExecutionResult]) -> str:
    return _serialise(await result)
