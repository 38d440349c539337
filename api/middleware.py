"""HTTP middleware: the request id and one log line per request (pure ASGI, so streaming is untouched), CORS.

The log line has method, path (never the query string: SCEP and others carry messages there), status,
duration, request id and remote address, and nothing from headers or bodies (no Authorization, no EAB,
no passphrase can reach it).
"""

from __future__ import annotations

import logging
import re
import time

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import runtime
from core.config import Settings
from core.logs import accept_request_id, bound_request_id

log = logging.getLogger("keyward.http")

REQUEST_ID_HEADER = b"x-request-id"
_MAX_LOGGED_PATH = 512
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def _logged_path(scope: Scope) -> str:
    """The path as sent (percent-encoded: one line, whatever it decodes to), without the query string."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope.get("path", "")
    path = path.split("?", 1)[0]
    path = _UNPRINTABLE.sub(lambda m: f"%{ord(m.group()) & 0xFF:02X}", path)
    return path if len(path) <= _MAX_LOGGED_PATH else path[:_MAX_LOGGED_PATH] + "..."


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == REQUEST_ID_HEADER:
            return str(value.decode("latin-1"))
    return None


class RequestLogMiddleware:
    """Sets the request id (X-Request-Id in, validated, or generated), returns it, logs the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(_incoming_request_id(scope))
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with bound_request_id(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if log.isEnabledFor(logging.INFO):  # at warning (a busy server's choice) nothing to build
                    self._log(scope, status, started)

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        method = scope.get("method", "")
        path = _logged_path(scope)
        client = scope.get("client")
        remote = client[0] if client else None
        log.info(
            "%s %s %d %.1fms",
            method,
            path,
            status,
            duration_ms,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "remote_addr": remote,
            },
        )


def http_middleware(settings: Settings | None = None) -> list[Middleware]:
    """Outermost first: the request log sees every answer, CORS preflights included.

    Without settings, the process's (none configured yet, as when a test builds the app early: no CORS).
    """
    if settings is None:
        try:
            settings = runtime.settings()
        except RuntimeError:
            settings = Settings()
    middleware = [Middleware(RequestLogMiddleware)]
    if settings.cors_origins:
        # Exact origins only; bearer tokens, not cookies, so no credentials mode.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                expose_headers=["X-Request-Id"],
                allow_credentials=False,
                max_age=600,
            )
        )
    return middleware
