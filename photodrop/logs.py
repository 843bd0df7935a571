"""Structured logs: one JSON object per line, carrying the request, project and session in hand.

Context travels in contextvars, so whatever logs while a request or a delivery is being handled
(a resolver, the database layer, a destination) is tagged without passing anything down.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("photodrop_request_id", default=None)
project_id: ContextVar[str | None] = ContextVar("photodrop_project_id", default=None)
session_id: ContextVar[str | None] = ContextVar("photodrop_session_id", default=None)
_CONTEXT = {"request_id": request_id, "project_id": project_id, "session_id": session_id}

# What every LogRecord has; anything else on a record came in through ``extra=`` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def bind(*, project: str | None = None, session: str | None = None) -> None:
    """Tag the rest of this request's or this delivery's log lines with its project and session."""
    if project is not None:
        project_id.set(project)
    if session is not None:
        session_id.set(session)


class ContextFilter(logging.Filter):
    """Stamps each record with the request, project and session in hand when it is logged, so the
    line is right even when it is formatted later or elsewhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", request_id?, project_id?, session_id?, ...extra, "exc"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO") -> None:
    """Send every logger's records, uvicorn's included, to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx announces every request it sends at INFO: a line per delivery, costing the worker more
    # than the rest of the delivery's bookkeeping. Its warnings still come through, and DEBUG shows all.
    logging.getLogger("httpx").setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn may have given its loggers their own handlers; ours at the root should be the only ones.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
