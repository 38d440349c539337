"""One HTTP/1.1 GET for http-01 validation, on asyncio streams: connect to a given address, read at most a
capped body, close.

Validation fetches one small document from a host it resolved itself, never reusing the connection; a
general HTTP client spent about a millisecond of CPU per fetch on machinery this does not need (pools,
proxies, content decoding). Understood here: status line, headers, Content-Length, chunked transfer
encoding, a body up to the close of the connection, informational (1xx) answers skipped, https with SNI and
without certificate checks (an https redirect target is only read, as RFC 8555 §8.3 allows).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

MAX_HEADER_BYTES = 16 * 1024
_READ = 16 * 1024


class FetchError(Exception):
    """The exchange failed: no connection, a broken or malformed answer, or a body over the cap."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None
    body: bytes


_tls_context: ssl.SSLContext | None = None


def _insecure_tls() -> ssl.SSLContext:
    global _tls_context
    if _tls_context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _tls_context = context
    return _tls_context


def _request(path: str, host_header: str) -> bytes:
    for text in (path, host_header):
        if any(char in text for char in "\r\n\x00 "):
            raise FetchError("the URL cannot be sent in an HTTP request line")
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: Keyward-ACME-validation\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii", "strict")


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers (names lower-cased; a repeated header keeps its last value)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise FetchError("the answer's headers are too long") from None
    except asyncio.IncompleteReadError:
        raise FetchError("the connection closed before a complete HTTP answer") from None
    if len(raw) > MAX_HEADER_BYTES:
        raise FetchError("the answer's headers are too long")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise FetchError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, separator, value = line.partition(":")
        if not separator or not name or name != name.strip():
            raise FetchError(f"malformed header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return int(parts[1]), headers


async def _chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise FetchError("malformed chunked encoding") from None
        if size < 0:
            raise FetchError("malformed chunked encoding")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise FetchError(f"more than {limit} bytes", too_large=True)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise FetchError("malformed chunked encoding")


async def _until_close(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        chunk = await reader.read(_READ)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise FetchError(f"more than {limit} bytes", too_large=True)


async def _body(reader: asyncio.StreamReader, status: int, headers: dict[str, str], limit: int) -> bytes:
    if status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _chunked(reader, limit)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise FetchError(f"malformed Content-Length {length[:40]!r}")
        size = int(length)
        if size > limit:
            raise FetchError(f"more than {limit} bytes", too_large=True)
        return await reader.readexactly(size)
    return await _until_close(reader, limit)


async def _exchange(
    scheme: str, address: str, port: int, request: bytes, server_name: str, limit: int
) -> Answer:
    tls = _insecure_tls() if scheme == "https" else None
    reader, writer = await asyncio.open_connection(
        address,
        port,
        ssl=tls,
        server_hostname=server_name if tls is not None else None,
        limit=MAX_HEADER_BYTES * 2,
    )
    try:
        writer.write(request)
        await writer.drain()
        status, headers = await _head(reader)
        while 100 <= status < 200:  # 100 Continue and the like precede the answer
            status, headers = await _head(reader)
        body = await _body(reader, status, headers, limit)
        return Answer(status, headers.get("location"), body)
    finally:
        writer.close()


async def fetch(
    *,
    scheme: str,
    address: str,
    port: int,
    path: str,
    host_header: str,
    server_name: str,
    seconds: float,
    limit: int,
) -> Answer:
    """GET `path` from address:port (`host_header` as Host, `server_name` as TLS SNI); raises FetchError
    (TimeoutError past `seconds` for the whole exchange)."""
    request = _request(path, host_header)
    try:
        async with asyncio.timeout(seconds):
            return await _exchange(scheme, address, port, request, server_name, limit)
    except TimeoutError:
        raise
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise FetchError("the connection closed in the middle of the answer") from None
    except ssl.SSLError as exc:
        raise FetchError(f"TLS failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise FetchError(exc.strerror or str(exc) or exc.__class__.__name__) from None
