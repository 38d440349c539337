"""Logging for `keyward serve` and `keyward worker`: text or JSON lines, each carrying the request id.

The request id lives in a context variable: the HTTP middleware (or a worker job run) sets it, and a filter
on the handler copies it onto every record made meanwhile, so core's own log lines carry it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from core.errors import KeywardError

LOG_FORMATS = ("text", "json")

REQUEST_ID: ContextVar[str | None] = ContextVar("keyward_request_id", default=None)

# What an incoming X-Request-Id may be: short and of safe characters, so it cannot forge log lines or
# smuggle markup. Anything else is replaced by a generated id.
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The caller's X-Request-Id when it is short and of safe characters, else a fresh one."""
    if value and _REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return new_request_id()


@contextlib.contextmanager
def bound_request_id(request_id: str) -> Iterator[str]:
    """Attach `request_id` to every record logged inside the block (in this task and tasks it starts)."""
    token = REQUEST_ID.set(request_id)
    try:
        yield request_id
    finally:
        REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for key, value in _fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message [request_id=...]`; control characters escaped so a line stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", record.getMessage())
        line = f"{_timestamp(record)} {record.levelname} {record.name} {message}"
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" request_id={request_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class GraphQLErrorRedactor(logging.Filter):
    """strawberry logs each GraphQL error with the document excerpt around it (an inline password
    included) and graphql-core's messages echo variable values. Keep our own errors' messages (written for
    clients), replace the others with their location, and log callers' mistakes at INFO, not ERROR.
    Unexpected exceptions keep their traceback (api/graphql/schema.py logs those too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.msg
        if not hasattr(error, "locations") or not hasattr(error, "message"):
            return True
        original = getattr(error, "original_error", None)
        path = ".".join(str(part) for part in (getattr(error, "path", None) or [])) or None
        where = ", ".join(f"{loc.line}:{loc.column}" for loc in (error.locations or []))
        if isinstance(original, KeywardError):
            text = f"GraphQL error at {path or where}: {error.message}"
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif original is None or path is None:  # parsing, validation, variable coercion: the caller's
            record.exc_info = None
            text = (
                f"GraphQL document or variables refused at {where or 'the request'} (details to the client)"
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        else:
            text = f"GraphQL resolver raised {type(original).__name__} at {path or where}"
        record.msg, record.args = text, None
        return logging.getLogger(record.name).isEnabledFor(record.levelno)


# Loggers that would write secrets: httpx logs every request URL at INFO (a Slack incoming-webhook URL is
# a secret), and the database drivers log SQL with its parameters at DEBUG. Never below WARNING / INFO.
QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "tortoise.db_client": logging.INFO,
    "aiosqlite": logging.INFO,
}


def configure_logging(*, level: str = "info", log_format: str = "text", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one on stderr; uvicorn's loggers propagate into it."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Requests are logged once, by api/middleware.py; uvicorn's own access line would repeat them with
    # the query string (which may carry secrets). Its startup and error messages still propagate.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # APScheduler announces every run at INFO; the worker logs its own line per job run instead.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
    strawberry_log = logging.getLogger("strawberry.execution")
    if not any(isinstance(f, GraphQLErrorRedactor) for f in strawberry_log.filters):
        strawberry_log.addFilter(GraphQLErrorRedactor())
