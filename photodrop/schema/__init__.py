"""The GraphQL schema: types, inputs and the root operations, with the limits settings ask for."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from photodrop.config import Settings
from photodrop.schema.errors import ShapeErrors
from photodrop.schema.operations import Mutation, Query, Subscription


class PhotodropSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Log nothing here: ShapeErrors logs the unexpected errors; the others are the caller's."""


def validation_rules(settings: Settings) -> list[type[ASTValidationRule]]:
    """The rules photodrop adds to GraphQL's own: depth and alias limits, and introspection if it is off."""
    rules = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    if not settings.graphql_introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules


def build_schema(settings: Settings) -> strawberry.Schema:
    # The limiters build a validation rule class each time they are made; make them once, since a
    # subscription keeps its operation's extensions (and their rules) for as long as it lives,
    # and the validation cache only hits for the very same rules.
    rules = validation_rules(settings)
    # Factories, so every operation gets extension instances of its own.
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: AddValidationRules(rules),
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        ParserCache,
        # A document parsed from the cache is the same object each time, so validating it once will do.
        ValidationCache,
        ShapeErrors,
    ]
    return PhotodropSchema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)
