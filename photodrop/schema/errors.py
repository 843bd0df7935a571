"""How failures leave the GraphQL API: expected ones with a code, unexpected ones masked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from photodrop.errors import PhotodropError

log = logging.getLogger(__name__)
T = TypeVar("T")

# extensions.code for each HTTP-like status an operation can fail with.
CODES = {
    400: "BAD_USER_INPUT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    409: "CONFLICT",
    410: "GONE",
    429: "RATE_LIMITED",
}


def as_graphql_error(exc: PhotodropError) -> GraphQLError:
    extensions: dict[str, object] = {"code": CODES.get(exc.status_code, exc.code), "reason": exc.code}
    if exc.param:
        extensions["field"] = exc.param
    return GraphQLError(exc.message, extensions=extensions, original_error=exc)


class ShapeErrors(MaskErrors):
    """Gives photodrop's own failures their code and hides everything else behind one message."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=self._unexpected, error_message="Unexpected error.")

    @staticmethod
    def _unexpected(error: GraphQLError) -> bool:
        original = error.original_error
        if original is None or isinstance(original, GraphQLError | PhotodropError):
            return False
        log.error("unexpected error in a GraphQL resolver", exc_info=original)
        return True

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL_SERVER_ERROR"}
        return masked

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        shaped = [
            _located(as_graphql_error(error.original_error), error)
            if isinstance(error.original_error, PhotodropError)
            else error
            for error in errors
        ]
        return super()._process_errors(shaped)


def _located(shaped: GraphQLError, where: GraphQLError) -> GraphQLError:
    return GraphQLError(
        shaped.message,
        nodes=where.nodes,
        source=where.source,
        positions=where.positions,
        path=where.path,
        original_error=None,
        extensions=shaped.extensions,
    )


async def expected_errors(updates: AsyncIterator[T]) -> AsyncIterator[T]:
    """A subscription's updates, with photodrop's failures turned into coded GraphQL errors."""
    try:
        async for update in updates:
            yield update
    except PhotodropError as exc:
        raise as_graphql_error(exc) from exc


def shape_errors(errors: list[GraphQLError]) -> list[GraphQLError]:
    """What ShapeErrors makes of ``errors``, for results executed outside Strawberry's own pipeline."""
    return ShapeErrors()._process_errors(errors)
