"""bench.http11, the load generators' HTTP/1.1 client: bodies of every framing, kept-alive connections
(and one the server closed meanwhile), TLS, and failures reported as HttpError.

The servers here answer scripted bytes, so each framing is exactly what the test says; the ACME bench's
live test (tests/acme/test_acme_serve_workers.py) drives the client against Keyward's uvicorn."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager

import pytest

from bench.http11 import Http11Client, HttpError
from bench.processes import free_port

Answer = Callable[[bytes], bytes]  # the request's head -> the bytes to send back


@asynccontextmanager
async def scripted_server(
    answers: list[Answer], *, close_after: Collection[int] = (), tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """Answers the n-th request with answers[n] (closing the connection after the requests numbered in
    `close_after`, from 1); yields the base URL, the requests as received, and the connections accepted."""
    received: list[bytes] = []
    connections = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                received.append(head + body)
                writer.write(answers[len(received) - 1](head))
                await writer.drain()
                if len(received) in close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=tls)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", received, connections
    finally:
        server.close()
        await server.wait_closed()


def fixed(raw: bytes) -> Answer:
    return lambda head: raw


async def test_content_length_chunked_and_read_to_close_bodies() -> None:
    answers = [
        fixed(b'HTTP/1.1 201 Created\r\nLocation: /a/1\r\nContent-Length: 7\r\n\r\n{"a":1}'),
        fixed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        ),
        fixed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end"),
    ]
    async with (
        scripted_server(answers, close_after={3}) as (url, received, connections),
        Http11Client() as http,
    ):
        created = await http.post(
            f"{url}/new?x=1", content='{"k":"v"}', headers={"Content-Type": "application/jose+json"}
        )
        assert (created.status_code, created.headers["location"], created.json()) == (201, "/a/1", {"a": 1})
        assert received[0].startswith(b"POST /new?x=1 HTTP/1.1\r\n")
        assert b"\r\nContent-Type: application/jose+json\r\n" in received[0]
        assert b"\r\nContent-Length: 9\r\n" in received[0]
        assert received[0].endswith(b'\r\n\r\n{"k":"v"}')
        chunked = await http.get(f"{url}/chunked")
        assert chunked.text == "hello, world"
        to_close = await http.get(f"{url}/close")
        assert to_close.text == "to the end"
    assert connections == [1]  # kept alive until the body that ran to the end of the connection


async def test_head_reads_no_body_though_content_length_is_given() -> None:
    nonce = b"HTTP/1.1 200 OK\r\nReplay-Nonce: n1\r\nContent-Length: 12\r\n\r\n"
    answers = [
        fixed(nonce),
        fixed(b"HTTP/1.1 204 No Content\r\n\r\n"),
        fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ]
    async with scripted_server(answers) as (url, received, connections), Http11Client() as http:
        head = await http.head(f"{url}/nonce")
        assert (head.headers["replay-nonce"], head.content) == ("n1", b"")
        assert (await http.get(f"{url}/empty")).status_code == 204
        assert (await http.get(f"{url}/next")).text == "ok"  # nothing of the earlier answers was left unread
    assert connections == [1]


async def test_a_kept_alive_connection_the_server_closed_is_replaced_once() -> None:
    ok = fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    async with scripted_server([ok, ok], close_after={1, 2}) as (url, received, connections):
        async with Http11Client() as http:
            assert (await http.get(f"{url}/1")).text == "ok"
            await asyncio.sleep(0.05)  # the server has closed its end by now
            assert (await http.post(f"{url}/2", content=b"x")).text == "ok"
    assert connections == [2]
    assert [request.split(b" ", 2)[1] for request in received] == [b"/1", b"/2"]  # each sent once


async def test_connection_close_from_the_server_opens_a_new_connection_next_time() -> None:
    closing = fixed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1")
    async with scripted_server([closing, closing], close_after={1, 2}) as (url, _, connections):
        async with Http11Client() as http:
            assert (await http.get(f"{url}/a")).text == "1"
            assert (await http.get(f"{url}/b")).text == "1"
    assert connections == [2]


async def test_failures_are_http_errors() -> None:
    async with Http11Client() as http:
        with pytest.raises(HttpError, match="refused|Connect"):
            await http.get(f"http://127.0.0.1:{free_port()}/nothing-listens")
        with pytest.raises(HttpError, match="absolute"):
            await http.get("/relative")
    truncated = fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    async with scripted_server([truncated], close_after={1}) as (url, _, _), Http11Client() as http:
        with pytest.raises(HttpError, match="IncompleteRead"):
            await http.get(f"{url}/truncated")
    garbage = fixed(b"SSH-2.0-OpenSSH\r\n\r\n")
    async with scripted_server([garbage]) as (url, _, _), Http11Client() as http:
        with pytest.raises(HttpError, match="not an HTTP"):
            await http.get(f"{url}/")


async def test_tls_with_the_callers_trust(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bench.acme_load import _pebble_tls

    root, cert, key = _pebble_tls(tmp_path)  # a root and a 127.0.0.1 server certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    ok = fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
    async with scripted_server([ok, ok], tls=server_side) as (url, _, connections):
        async with Http11Client(ssl.create_default_context(cafile=str(root))) as http:
            assert (await http.get(f"{url}/over-tls")).text == "secret"
        async with Http11Client() as untrusting:  # the system's roots do not know this one
            with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"{url}/over-tls")
