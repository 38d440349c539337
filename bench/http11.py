"""A lean HTTP/1.1 client for the load generators: one kept-alive connection per origin, nothing else.

The ACME bench's clients share the machine's two cores with the servers they measure. With httpx they
spent about 7 ms of CPU per order, more than half of it in httpx and httpcore (pool, events, cookies,
streams); that CPU was taken from whichever server was measured. Each bench client sends one request at a
time, so this one keeps a connection per origin, writes the request in one piece and reads the answer
with Content-Length, chunked or read-to-close bodies; nothing more is needed of it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    """The exchange failed: connection refused or lost, or an answer that is not HTTP/1.1."""


@dataclass
class Response:
    status_code: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False  # has answered a request: the server may have closed it since

    def close(self) -> None:
        self.writer.close()


class Http11Client:
    """Requests to absolute http:// and https:// URLs, one at a time per origin."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        if verify is True:
            self._ssl: ssl.SSLContext = ssl.create_default_context()
        elif verify is False:
            self._ssl = ssl.create_default_context()
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        else:
            self._ssl = verify
        self._connections: dict[tuple[str, str, int], _Connection] = {}

    async def __aenter__(self) -> Http11Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    async def get(self, url: str) -> Response:
        return await self.request("GET", url)

    async def head(self, url: str) -> Response:
        return await self.request("HEAD", url)

    async def post(
        self, url: str, *, content: bytes | str, headers: dict[str, str] | None = None
    ) -> Response:
        return await self.request("POST", url, content=content, headers=headers)

    async def request(
        self, method: str, url: str, *, content: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an absolute http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        body = content.encode() if isinstance(content, str) else content
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept-Encoding: identity"]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            return await self._exchange(origin, method, message)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            self._drop(origin)
            raise HttpError(f"{method} {url}: {error!r}") from error

    async def _exchange(self, origin: tuple[str, str, int], method: str, message: bytes) -> Response:
        connection = self._connections.get(origin)
        if connection is not None and connection.used:
            # A kept-alive connection the server closed meanwhile fails before any answer: send it again,
            # once, on a new connection (the server never saw it).
            try:
                return await self._send(origin, connection, method, message)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                if isinstance(error, asyncio.IncompleteReadError) and error.partial:
                    raise
                self._drop(origin)
        return await self._send(origin, await self._connect(origin), method, message)

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        tls = self._ssl if scheme == "https" else None
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=1 << 20)
        connection = self._connections[origin] = _Connection(reader, writer)
        return connection

    def _drop(self, origin: tuple[str, str, int]) -> None:
        connection = self._connections.pop(origin, None)
        if connection is not None:
            connection.close()

    async def _send(
        self, origin: tuple[str, str, int], connection: _Connection, method: str, message: bytes
    ) -> Response:
        connection.writer.write(message)
        await connection.writer.drain()
        head = await connection.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        status = rest[:3]
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise ValueError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status_code = int(status)
        body = await self._body(connection.reader, method, status_code, headers)
        connection.used = True
        if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
            self._drop(origin)
        return Response(status_code, headers, body)

    @staticmethod
    async def _body(
        reader: asyncio.StreamReader, method: str, status_code: int, headers: dict[str, str]
    ) -> bytes:
        if method == "HEAD" or status_code in (204, 304) or 100 <= status_code < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        headers["connection"] = "close"  # the body runs to the end of the connection
        return await reader.read()
