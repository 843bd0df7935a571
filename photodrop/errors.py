"""The failures photodrop reports to callers, each with its HTTP status and stable code.

Resolvers raise these; the REST shim renders them as JSON error bodies and GraphQL turns
them into ``userErrors``. Anything else escaping a resolver is a bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class PhotodropError(Exception):
    status_code = 400
    code = "VALIDATION_ERROR"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        if code is not None:
            self.code = code


class InvalidInput(PhotodropError):
    status_code = 400
    code = "VALIDATION_ERROR"


class Unauthenticated(PhotodropError):
    status_code = 401
    code = "AUTHENTICATION_FAILED"


class WrongPassword(PhotodropError):
    status_code = 401
    code = "INVALID_PASSWORD"


class NotFound(PhotodropError):
    status_code = 404
    code = "NOT_FOUND"


class StateConflict(PhotodropError):
    status_code = 409
    code = "SESSION_CLOSED"


class Expired(PhotodropError):
    status_code = 410
    code = "SESSION_EXPIRED"


class OffsetMismatch(PhotodropError):
    """A resumable upload's chunk does not start where the bytes received so far end."""

    status_code = 409
    code = "UPLOAD_OFFSET_MISMATCH"


class VersionUnsupported(PhotodropError):
    """A resumable-upload request that speaks a version of the protocol photodrop does not."""

    status_code = 412
    code = "TUS_VERSION_UNSUPPORTED"


class ChecksumMismatch(PhotodropError):
    """A resumable upload's chunk does not match the checksum sent with it (tus's own status)."""

    status_code = 460
    code = "CHECKSUM_MISMATCH"


class TooLarge(PhotodropError):
    status_code = 413
    code = "FILE_TOO_LARGE"


class UnsupportedType(PhotodropError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class SessionFull(PhotodropError):
    status_code = 422
    code = "SESSION_FULL"


class TooManyAttempts(PhotodropError):
    status_code = 429
    code = "RATE_LIMIT"


def validated(model: type[M], data: Any, context: Mapping[str, Any] | None = None) -> M:
    """``data`` as ``model``, or an InvalidInput naming the first parameter that is wrong."""
    if not isinstance(data, Mapping):
        raise InvalidInput("the input must be an object of named fields")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def from_validation_error(exc: ValidationError) -> InvalidInput:
    """The first problem pydantic found, named by the parameter it concerns."""
    first = exc.errors(include_url=False)[0]
    context = first.get("ctx") or {}
    param = context.get("param") or (str(first["loc"][0]) if first["loc"] else None)
    message = first["msg"].removeprefix("Value error, ")
    if param and first["type"] != "missing" and not message.startswith(str(param)):
        message = f"{param}: {message}"
    return InvalidInput(message, param=param)
