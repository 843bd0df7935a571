"""A small router for the REST shim that documents what it routes.

Each operation is declared once, with its input and output models; the same declaration
builds the Starlette route and its entry in the OpenAPI 3.1 document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.errors import InvalidInput, PhotodropError, validated
from photodrop.validators import SETTING_MAXIMUM
from photodrop.web.shapes import ErrorOut

Endpoint = Callable[[Request], Awaitable[Response]]
M = TypeVar("M", bound=BaseModel)

MULTIPART_IMAGES = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"}},
        "source": {"type": "string", "maxLength": 64},
    },
}


@dataclass(frozen=True)
class Header:
    """A request header an operation reads, as its OpenAPI parameter says it."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False

    def parameter(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": "header",
            "required": self.required,
            "description": self.description,
            "schema": self.schema,
        }


# What an operation answers with: a model (JSON), one or more media types, or None (no body).
Shape = type[BaseModel] | str | tuple[str, ...] | None
# True: an API key is required. "optional": a public operation that also takes one (and checks
# it when given). False: no key is read at all.
Auth = bool | Literal["optional"]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    responses: dict[int, Shape]
    body: type[BaseModel] | dict[str, Any] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    auth: Auth = True
    headers: tuple[Header, ...] = ()
    # What a success status means when its phrase alone does not say it (a replay's 200, say).
    notes: dict[int, str] = field(default_factory=dict)

    def error_statuses(self) -> list[int]:
        """Every error status the operation can answer: those it declares, and those that follow
        from its declaration, so no route can forget one."""
        implied = set(self.errors)
        if self.body is not None or self.query is not None:
            implied.add(400)  # a body or query that does not validate
        if "{" in self.path:
            implied.add(404)  # an id that names nothing the caller may see
        if self.auth:
            # A key that is missing or wrong, and (through caller()) a key past its per-minute budget.
            implied |= {401, 429}
        return sorted(implied)


@dataclass
class ApiRouter:
    operations: list[Operation] = field(default_factory=list)
    # The models' JSON Schemas, the same for every app, and how many operations they were made for.
    _schemas: tuple[int, str] | None = field(default=None, repr=False)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        responses: dict[int, Shape],
        body: type[BaseModel] | dict[str, Any] | None = None,
        query: type[BaseModel] | None = None,
        errors: Sequence[int] = (),
        auth: Auth = True,
        headers: Sequence[Header] = (),
        notes: dict[int, str] | None = None,
    ) -> Callable[[Endpoint], Endpoint]:
        """Declare an operation. A ``responses`` value is a model, media types, or None (no body);
        ``headers`` are the request headers it reads, ``notes`` say what a response status means."""

        def decorate(endpoint: Endpoint) -> Endpoint:
            self.operations.append(
                Operation(
                    method,
                    path,
                    endpoint,
                    summary,
                    responses,
                    body,
                    query,
                    tuple(errors),
                    auth,
                    tuple(headers),
                    dict(notes or {}),
                )
            )
            return endpoint

        return decorate

    def routes(self) -> list[Route]:
        return [
            # Observability puts the caller's X-RateLimit-* headers (``BUDGET_SCOPE_KEY``) on each answer.
            Route(op.path, op.endpoint, methods=[op.method])
            for op in self.operations
        ]

    def openapi(self, *, prefixes: Sequence[str], title: str, version: str, settings: Settings) -> dict[str, Any]:
        """The OpenAPI 3.1 document of every operation under each prefix, with the limits ``settings`` set."""
        schemas = self._model_schemas()
        _fill_setting_maxima(schemas, settings)
        paths: dict[str, dict[str, Any]] = {}
        for prefix in prefixes:
            for op in self.operations:
                paths.setdefault(prefix + op.path, {})[op.method.lower()] = _describe(op, schemas, prefix)
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version},
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "aptr_live_..."}},
                "headers": RATE_LIMIT_HEADERS,
            },
        }

    def _model_schemas(self) -> dict[str, Any]:
        """A fresh copy of the JSON Schemas of every model the operations take or answer. Pydantic
        takes tens of milliseconds to make them, and every app (a test makes hundreds) needs the
        same, so they are made once and kept as JSON; each app fills its own limits into its copy."""
        if self._schemas is None or self._schemas[0] != len(self.operations):
            models: set[type[BaseModel]] = {ErrorOut}
            for op in self.operations:
                models.update(m for m in op.responses.values() if isinstance(m, type))
                models.update(m for m in (op.body, op.query) if isinstance(m, type))
            keyed = [(model, "serialization") for model in sorted(models, key=lambda m: m.__name__)]
            _, definitions = models_json_schema(keyed, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
            self._schemas = (len(self.operations), json.dumps(definitions.get("$defs", {})))
        schemas: dict[str, Any] = json.loads(self._schemas[1])
        return schemas


# Where ``caller()`` leaves what the request left of its key's rate-limit budget (a ratelimit.Budget);
# Observability adds its X-RateLimit-* headers to the answer, errors the endpoint's handlers answered included.
BUDGET_SCOPE_KEY = "photodrop.budget"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _describe(op: Operation, schemas: dict[str, Any], prefix: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": (prefix.strip("/").replace("/", "_") + "_" + op.endpoint.__name__),
        "summary": op.summary,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        + [header.parameter() for header in op.headers],
        "responses": {},
    }
    if op.query is not None:
        query = schemas[op.query.__name__]
        required = set(query.get("required", []))
        operation["parameters"] += [
            {"name": name, "in": "query", "required": name in required, "schema": schema}
            for name, schema in query["properties"].items()
        ]
    if isinstance(op.body, dict):
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": op.body}}}
    elif op.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    if op.auth == "optional":
        operation["security"] = [{"apiKey": []}, {}]
    elif op.auth:
        operation["security"] = [{"apiKey": []}]
    for status, shape in op.responses.items():
        described: dict[str, Any] = {"description": op.notes.get(status, HTTPStatus(status).phrase)}
        if isinstance(shape, type):
            described["content"] = {"application/json": {"schema": _ref(shape)}}
        elif shape is not None:
            kinds = (shape,) if isinstance(shape, str) else shape
            described["content"] = {kind: {"schema": {"type": "string"}} for kind in kinds}
        operation["responses"][str(status)] = described
    for status in op.error_statuses():
        described = {
            "description": _ERROR_DESCRIPTIONS.get(status, phrase(status)),
            "content": {"application/json": {"schema": _ref(ErrorOut)}},
        }
        if status == 429:
            described["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
        operation["responses"][str(status)] = described
    return operation


# Statuses some protocol defines that HTTP's registry does not (tus's checksum mismatch).
_EXTRA_PHRASES = {460: "Checksum Mismatch"}


def phrase(status: int) -> str:
    """The reason phrase of ``status``, including those only a protocol photodrop speaks defines."""
    return _EXTRA_PHRASES.get(status) or HTTPStatus(status).phrase


_ERROR_DESCRIPTIONS = {
    401: "No API key, or one that is wrong, revoked, unsigned or not allowed here (AUTHENTICATION_FAILED); "
    "on uploads, a missing or wrong session password (INVALID_PASSWORD)",
    429: "Too many requests: the key's per-minute budget is spent, or too many wrong passwords; see Retry-After",
}

RATE_LIMIT_HEADERS = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
}


def _fill_setting_maxima(node: Any, settings: Settings) -> None:
    """Replace each ``x-maximum-setting`` marker with the bound this deployment's settings give."""
    if isinstance(node, list):
        for item in node:
            _fill_setting_maxima(item, settings)
        return
    if not isinstance(node, dict):
        return
    setting = node.pop(SETTING_MAXIMUM, None)
    if setting is not None:
        maximum = getattr(settings, setting)
        for branch in node.get("anyOf", [node]):
            if branch.get("type") in ("integer", "number"):
                branch["maximum"] = maximum
    for value in node.values():
        _fill_setting_maxima(value, settings)


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def respond(model: BaseModel | None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if model is None:
        return Response(status_code=status, headers=headers)
    # pydantic writes the JSON itself: the same bytes as dumping to Python values for json.dumps, a third the cost.
    return Response(model.model_dump_json(), status_code=status, headers=headers, media_type="application/json")


def error_response(exc: PhotodropError) -> JSONResponse:
    # Every 429 says when to come back, as the document promises (at least a second).
    wait = max(1, exc.retry_after or 1) if exc.status_code == 429 else exc.retry_after
    headers = {"Retry-After": str(wait)} if wait else None
    return error_body(exc.status_code, exc.code, exc.message, exc.param, headers)


def error_body(
    status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The REST error shape, ``{statusCode, error, code, message, param}``."""
    body = ErrorOut(statusCode=status, error=phrase(status), code=code, message=message, param=param)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def parse_query(request: Request, model: type[M]) -> M:
    """Read query parameters into ``model``; list fields take repeated or comma-separated values."""
    raw: dict[str, Any] = {}
    # Parsed here, not kept on the request as ``request.query_params`` would: a held long poll would keep it.
    params = QueryParams(request.scope["query_string"])
    for field_name, info in model.model_fields.items():
        # A camelCase alias (pageSize) is the name on the wire; the field's own name is read too.
        name = next((n for n in (info.alias, field_name) if n and n in params), None)
        if name is None:
            continue
        values = params.getlist(name)
        if _is_list(info.annotation):
            raw[name] = [part for value in values for part in value.split(",") if part]
        else:
            raw[name] = values[-1]
    return validated(model, raw)


def _is_list(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    return origin is list


async def read_json(request: Request) -> Any:
    """The JSON body, or a 400 that says what is wrong with it."""
    body = await request.body()
    if not body:
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc


def parse_body(data: Any, model: type[M]) -> M:
    return validated(model, data)
