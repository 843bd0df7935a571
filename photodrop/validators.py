"""Rules that input models of several resources share: partial updates, URLs photodrop sends
requests to, and HTTP headers a caller asks photodrop to send."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, ModelWrapValidatorHandler, model_validator
from pydantic_core import PydanticCustomError


def _drop_null(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The document of a Patch model says null only where null is accepted."""
    nullable: frozenset[str] = getattr(model, "nullable", frozenset())
    properties = schema.get("properties", {})
    for name, info in model.model_fields.items():
        if name in nullable:
            continue
        for key in _wire_names(name, info.alias, info.validation_alias):
            prop = properties.get(key)
            if prop is None or "anyOf" not in prop:
                continue
            branches = [branch for branch in prop["anyOf"] if branch != {"type": "null"}]
            del prop["anyOf"]
            if len(branches) == 1:
                prop.update(branches[0])
            else:
                prop["anyOf"] = branches
            if prop.get("default", ...) is None:
                del prop["default"]


class Patch(BaseModel):
    """A partial update: a field left out keeps its value. An explicit ``null`` is refused, naming
    the field, except on the fields listed in ``nullable``, where it means something ("no limit",
    "no password"). Without this rule a null would pass validation as "left out" on one field and
    be written as-is on another (a NOT NULL column, or a list every reader iterates)."""

    model_config = ConfigDict(json_schema_extra=_drop_null)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_null(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        model = handler(data)
        for name, info in cls.model_fields.items():
            if name in cls.nullable or name not in model.model_fields_set or getattr(model, name) is not None:
                continue
            names = _wire_names(name, info.alias, info.validation_alias)
            param = next((key for key in names if isinstance(data, Mapping) and key in data), name)
            raise PydanticCustomError(
                "null_refused", "{param} cannot be null: leave it out to keep it as it is", {"param": param}
            )
        return model


def _wire_names(name: str, alias: str | None, validation_alias: Any) -> list[str]:
    names = [alias] if alias else []
    if isinstance(validation_alias, str):
        names.append(validation_alias)
    elif isinstance(validation_alias, AliasChoices):
        names += [choice for choice in validation_alias.choices if isinstance(choice, str)]
    return [*names, name]


# RFC 9110 field names are tokens; values are visible ASCII with inner spaces or tabs. Anything
# else cannot be encoded on the wire (a UnicodeEncodeError at delivery time), or splits headers.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"([\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?)?")
# These frame the request itself; photodrop sets them, a caller's copy would corrupt it.
_FRAMING = {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "keep-alive"}


def _sendable(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name (letters, digits and !#$%&'*+.^_`|~-)")
        if name.lower() in _FRAMING:
            raise ValueError(f"the {name} header is set by photodrop itself")
        if not _VALUE.fullmatch(value):
            raise ValueError(
                f"the {name} header's value must be printable ASCII without leading or trailing spaces "
                "(encode other text first, e.g. percent-encoding)"
            )
    return headers


SendableHeaders = Annotated[dict[str, str], AfterValidator(_sendable)]
"""Extra HTTP headers photodrop sends to a receiver: names and values valid on the wire."""


# Where a field's upper bound is a deployment setting, its schema carries this key naming the
# setting, and the OpenAPI document of a running app replaces it with the setting's value.
SETTING_MAXIMUM = "x-maximum-setting"


def maximum_from_setting(setting: str) -> dict[str, Any]:
    """``json_schema_extra`` for a field bounded by ``Settings.<setting>`` rather than by a constant."""
    return {SETTING_MAXIMUM: setting}


def is_http_url(value: str) -> bool:
    """An absolute http or https URL with a host: somewhere photodrop can send a request."""
    url = urlsplit(value)
    return url.scheme in ("http", "https") and bool(url.hostname)
