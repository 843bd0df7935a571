"""``/graphql``: HTTP per the GraphQL-over-HTTP spec, and websockets in both subscription protocols."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ErrorMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage, StopMessage
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from photodrop.context import Services
from photodrop.errors import PhotodropError
from photodrop.resolvers.projects import authenticate
from photodrop.schema import build_schema
from photodrop.schema.context import GraphQLContext, Loaders
from photodrop.web import dashboard_auth
from photodrop.web.live_mux import LiveConnection, LiveHub

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header: None when neither JSON type is acceptable.

    A request that states no preference gets ``application/json``, as the spec asks for the
    sake of clients written before ``application/graphql-response+json`` existed.
    """
    if not accept:
        return JSON
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        offered = {
            GRAPHQL_RESPONSE: GRAPHQL_RESPONSE,
            JSON: JSON,
            # Wildcards are what older clients send by default, and they expect application/json.
            "application/*": JSON,
            "*/*": JSON,
        }.get(media.lower())
        if offered and quality > 0:
            ranked.append((-quality, position, offered))
    return min(ranked)[2] if ranked else None


LIMIT_REACHED = "Subscription limit reached"


class TransportWSHandler(BaseGraphQLTransportWSHandler[GraphQLContext, None]):
    """graphql-transport-ws, with live fields served by the multiplexer and the rest by Strawberry."""

    view: PhotodropGraphQL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live = LiveConnection(self.context.response, legacy=False)  # type: ignore[arg-type]

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        op_id = message["id"]
        if self.connection_acknowledged and op_id not in self.operations:
            if op_id in self.live.ops:
                await self.websocket.close(code=4409, reason=f"Subscriber for {op_id} already exists")
                return
            if self._full(len(self.operations) + len(self.live.ops)):
                await self.send_message(
                    ErrorMessage(id=op_id, type="error", payload=[GraphQLError(LIMIT_REACHED).formatted])
                )
                return
            plan = self.view.hub.plan(message["payload"]["query"], message["payload"].get("operationName"))
            if plan is not None and self.view.hub.join(self.live, op_id, plan, dict(message["payload"]), self.context):
                return
        await super().handle_subscribe(message)

    def _full(self, count: int) -> bool:
        return self.max_subscriptions_per_connection is not None and count >= self.max_subscriptions_per_connection

    async def handle_complete(self, message: CompleteMessage) -> None:
        if message["id"] in self.live.ops:
            self.view.hub.leave(self.live, message["id"])
        else:
            await super().handle_complete(message)

    async def shutdown(self) -> None:
        self.view.hub.drop(self.live)
        await super().shutdown()


class LegacyWSHandler(BaseGraphQLWSHandler[GraphQLContext, None]):
    """graphql-ws, with live fields served by the multiplexer and the rest by Strawberry."""

    view: PhotodropGraphQL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live = LiveConnection(self.context.response, legacy=True)  # type: ignore[arg-type]

    async def handle_start(self, message: StartMessage) -> None:
        op_id = message["id"]
        if self.connection_acknowledged:
            # A start with a live id stops that subscription first, as for Strawberry's own.
            self._stop_live(op_id)
            if op_id in self.tasks:
                await self.cleanup_operation(op_id)
            limit = self.max_subscriptions_per_connection
            if limit is not None and len(self.tasks) + len(self.live.ops) >= limit:
                await self.send_message({"type": "error", "id": op_id, "payload": {"message": LIMIT_REACHED}})
                return
            plan = self.view.hub.plan(message["payload"]["query"], message["payload"].get("operationName"))
            if plan is not None and self.view.hub.join(self.live, op_id, plan, dict(message["payload"]), self.context):
                return
        await super().handle_start(message)

    def _stop_live(self, op_id: str) -> None:
        record = self.live.ops.get(op_id)
        if record is not None:
            self.view.hub.leave(self.live, op_id)
            record.conn.push(record, self.live.complete_frame(op_id))

    async def handle_stop(self, message: StopMessage) -> None:
        if message["id"] in self.live.ops:
            self._stop_live(message["id"])
        else:
            await super().handle_stop(message)

    async def cleanup(self) -> None:
        self.view.hub.drop(self.live)
        await super().cleanup()


class PhotodropGraphQL(GraphQL[GraphQLContext, None]):
    """Strawberry's ASGI view with photodrop's context, key checks and HTTP semantics."""

    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, services: Services) -> None:
        settings = services.settings
        schema = build_schema(settings)
        super().__init__(
            schema,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            connection_init_wait_timeout=timedelta(seconds=settings.graphql_connection_init_timeout),
            max_subscriptions_per_connection=settings.graphql_max_subscriptions,
            keep_alive=True,
            keep_alive_interval=15,
            # Pages of this deployment may open websockets even when a proxy hands photodrop another Host.
            allowed_origins=(dashboard_auth.origin_of(settings.base_url),),
        )
        self.services = services
        self.hub = LiveHub(services, schema)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> GraphQLContext:
        context = GraphQLContext(
            services=self.services, request=request, response=response, loaders=Loaders.for_services(self.services)
        )
        if not isinstance(request, Request):
            return context
        try:
            if request.headers.get("authorization"):
                context.principal = await authenticate(self.services, request.headers["authorization"])
            elif dashboard_auth.COOKIE in request.cookies:
                context.principal = await dashboard_auth.graphql_principal(self.services, request)
        except PhotodropError as exc:
            context.auth_error = exc
        return context

    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType | dict[str, object] | None:
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        header = next((value for key, value in params.items() if key.lower() == "authorization"), None)
        if header is None:
            header = context.request.headers.get("authorization")
        try:
            if header is None and dashboard_auth.COOKIE in context.request.cookies:
                # The dashboard's pages: their signed cookie stands in for a key they never see.
                context.principal = await dashboard_auth.graphql_principal(self.services, context.request)
                return None
            context.principal = await authenticate(self.services, header if isinstance(header, str) else None)
        except PhotodropError as exc:
            raise ConnectionRejectionError({"message": exc.message, "code": "FORBIDDEN"}) from exc
        return None

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = negotiate(request.headers.get("accept"))
        return sub_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        request = Request(scope, receive)
        media_type = negotiate(request.headers.get("accept"))
        if media_type is None and not self._wants_ide(request):
            response: Response = _problem(406, JSON, f"send Accept: {GRAPHQL_RESPONSE} or {JSON}")
        else:
            try:
                response = await self.run(request)
            except HTTPException as exc:
                response = _problem(exc.status_code, media_type or JSON, exc.reason)
                if request.method == "GET" and "mutation" in exc.reason.lower():
                    # The spec: a mutation must not run over GET; the answer is 405 naming POST.
                    response = _problem(405, media_type or JSON, exc.reason, {"Allow": "POST"})
        await response(scope, receive, send)

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(_local_ide_page(self.graphql_ide_html))

    def _wants_ide(self, request: Request) -> bool:
        return request.method == "GET" and "text/html" in request.headers.get("accept", "")

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        processed = await super().process_result(request, result)
        if result.data is None and result.errors and all(error.path is None for error in result.errors):
            # Parsing or validation failed, so execution never started: a request error has no data.
            processed.pop("data", None)
        return processed

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        media_type = sub_response.media_type or JSON
        response.headers["content-type"] = f"{media_type}; charset=utf-8"
        if media_type == GRAPHQL_RESPONSE and isinstance(response_data, dict) and "data" not in response_data:
            # graphql-response+json answers a request error with a 4xx status.
            response.status_code = 400
        return response


# strawberry's GraphiQL page loads its scripts from a CDN; photodrop ships the same files itself.
_IDE_ASSETS = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": "react-dom.production.min.js",
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": "plugin-explorer.umd.js",
}


# GraphiQL sends the headers editor's contents with queries but not on its websocket; building the
# fetcher per operation lets subscriptions carry them as the connection_init payload too.
_FETCHER = """      const fetcher = GraphiQL.createFetcher({
        url: fetchURL,
        headers: defaultHeaders,
        subscriptionUrl,
      });"""
_FETCHER_WITH_KEY = """      const fetcher = (params, options) => GraphiQL.createFetcher({
        url: fetchURL,
        headers: defaultHeaders,
        subscriptionUrl,
        wsConnectionParams: (options && options.headers) || {},
      })(params, options);"""


def _local_ide_page(html: str) -> str:
    for remote, local in _IDE_ASSETS.items():
        html = html.replace(remote, f"/static/graphiql/{local}")
    return html.replace(_FETCHER, _FETCHER_WITH_KEY)


def _problem(status: int, media_type: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A request error as a GraphQL response body: no ``data``, one error saying what went wrong."""
    body = json.dumps({"errors": [{"message": message}]})
    return Response(body, status_code=status, media_type=media_type, headers=headers)
