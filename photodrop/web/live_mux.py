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
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
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
from photodrop.resolvers.live import MAX_PENDING_EVENTS, MAX_PENDING_SESSIONS, EventWatch, SessionWatch, Watch
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
    """The subscribers of one live field with the same document, variables and project."""

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
        self.pending: OrderedDict[str, UploadSession | Envelope] = OrderedDict()
        self.delivered: OrderedDict[str, int] = OrderedDict()
        self.started: asyncio.Task[bool] | None = None
        self.ready = False  # following the channel, its first state (if any) sent
        self.worker: asyncio.Task[None] | None = None
        self.over = False

    @property
    def subscribers(self) -> int:
        return len(self.records)

    def offer(self, envelope: Envelope) -> None:
        if isinstance(self.watch, EventWatch):
            if envelope.id in self.delivered:
                return  # offered again after a reconnect, having arrived live already
            self._remember(envelope.id, 0)
            self.pending[envelope.id] = envelope
        else:
            session = self.watch.pick(envelope)
            if session is None:
                return
            held = self.pending.get(session.id)
            newest = max(held.version if isinstance(held, UploadSession) else 0, self.delivered.get(session.id, 0))
            if session.version <= newest:
                return
            self.pending[session.id] = session
        if self.worker is None:
            self.worker = asyncio.create_task(self._work(), name=f"photodrop-live:{self.channel}")

    def _remember(self, key: str, version: int) -> None:
        self.delivered[key] = version
        self.delivered.move_to_end(key)
        if len(self.delivered) > (MAX_PENDING_EVENTS if self.every_event else REMEMBERED_SESSIONS):
            self.delivered.popitem(last=False)

    async def start(self) -> bool:
        """Follow the channel, then take the watch's first state; False (members told why) if it failed."""
        services = self.hub.services
        try:
            await services.bus.attach(self.channel, self)
            if self.over:  # every member left before it was attached
                services.bus.detach(self.channel, self)
                return False
            first = await self.watch.start(services, self.principal)
        except PhotodropError as exc:
            self._fail(_json({"data": None, "errors": [as_graphql_error(exc).formatted]}))
            return False
        except Exception:
            log.exception("could not start following %s", self.channel)
            self._fail(UNEXPECTED)
            return False
        if first is not None:
            await self._advance(first)
        self.ready = not self.over
        self.started = None  # a finished task kept by every idle group would be memory for nothing
        return self.ready

    def _fail(self, payload: str) -> None:
        for record in list(self.records):
            record.conn.end(record, payload=payload)
        self._close()

    async def _work(self) -> None:
        try:
            if not self.ready:
                if self.started is None or not await self.started:
                    return
            while self.pending and not self.over:
                _, item = self.pending.popitem(last=False)
                if isinstance(item, Envelope):
                    payload = await self.hub.execute(self, item)
                    for record in list(self.records):
                        if not record.conn.push(record, record.prefix + payload + "}"):
                            self._cut_off(record)
                else:
                    self._remember(item.id, item.version)
                    await self._advance(item)
        except Exception:
            log.exception("a live group on %s failed", self.channel)
            self._fail(UNEXPECTED)
        finally:
            self.worker = None

    async def _advance(self, session: UploadSession) -> None:
        """Send ``session`` to every member that has not had it (or a newer version) yet."""
        if isinstance(self.watch, SessionWatch):
            if session.version > self.latest_version:
                self.latest = await self.hub.execute(self, session)
                self.latest_version = session.version
            if self.latest is None:
                return
            frame_payload = self.latest
            behind = [record for record in self.records if record.version < self.latest_version]
            final = self.watch.ends_with(session) and session.version >= self.latest_version
        else:
            frame_payload = await self.hub.execute(self, session)
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
        if self.worker is not None and self.worker is not asyncio.current_task():
            self.worker.cancel()


class LiveHub:
    """Every multiplexed subscription of this process, grouped; and the documents already planned."""

    def __init__(self, services: Services, schema: Schema) -> None:
        self.services = services
        self.schema = schema
        self.groups: dict[tuple[str, ...], Group] = {}
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self._rules = (*specified_rules, *validation_rules(services.settings))
        self.executions = 0  # how many times a group executed its document: what sharing saves
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
        return Plan(document, node, subscription.fields[node.name.value], node.name.value)

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
        key = (principal.project_id, payload["query"], str(operation_name), _json(variables))
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

    async def execute(self, group: Group, item: UploadSession | Envelope) -> str:
        """Run the group's document on one update and serialise the result, once for every member."""
        self.executions += 1
        executor = self._executor(group.operation, group.principal)
        assert isinstance(executor, Executor)  # the variables fitted when the group was made
        result = execute_subscription_event(executor.build_per_event_executor(live_view(item)))
        if isawaitable(result):
            result = await result
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in shape_errors(result.errors)]
        return _json(payload)


async def _nothing(*_: Any) -> Any:
    raise RuntimeError("a live group's context reaches no socket")
