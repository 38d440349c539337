"""The worker's own GET /metrics (KEYWARD_WORKER_METRICS_PORT): its job runs, durations, the issuances of
its renewals and its failed deliveries. A few lines of asyncio on the worker's loop; the worker never
imports the web stack. The database-derived inventory gauges are the API's /metrics, not repeated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from core import metrics

log = logging.getLogger("keyward.worker.metrics")

_MAX_HEAD = 16 * 1024


def _response(status: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str | None) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        if len(head) > _MAX_HEAD:
            raise ValueError("head too large")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        if method not in {"GET", "HEAD"} or path != "/metrics":
            out = _response("404 Not Found", b"not found; GET /metrics\n", "text/plain; charset=utf-8")
        elif not metrics.authorized(token, headers.get("authorization")):
            out = _response(
                "401 Unauthorized",
                b"metrics need `Authorization: Bearer <KEYWARD_METRICS_TOKEN>`\n",
                "text/plain; charset=utf-8",
                'WWW-Authenticate: Bearer realm="keyward-metrics"\r\n',
            )
        else:
            body, content_type = await metrics.exposition(headers.get("accept", ""), inventory=False)
            out = _response("200 OK", b"" if method == "HEAD" else body, content_type)
        writer.write(out)
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving_metrics(host: str, port: int | None, token: str | None) -> AsyncIterator[None]:
    """Serve /metrics on host:port while the block runs; nothing when port is None."""
    if port is None:
        yield
        return
    server = await asyncio.start_server(lambda r, w: _handle(r, w, token), host, port, limit=_MAX_HEAD)
    log.info("worker metrics at http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
