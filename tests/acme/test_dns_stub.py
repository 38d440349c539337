"""core/dns_stub.py against real DNS servers on loopback: pebble-challtestsrv for ordinary answers (A, AAAA,
CNAME, SERVFAIL), and a small UDP+TCP server here for what challtestsrv cannot send (NXDOMAIN, truncation,
stray and spoofed datagrams, malformed compression, silence). Replies are built with dnslib, not with the
code under test; the malformed ones by hand."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from acme_clients_support import ChallTestSrv, challtestsrv
from acme_order_support import settings_override
from conftest import tool_or_skip
from dnslib import AAAA, CNAME, QTYPE, RR, TXT, A, DNSRecord

from core import acme_validation, dns_stub
from core.acme_validation import ValidationFailure

# What a handler sends back for one query: the request parsed, its bytes, "udp" or "tcp".
Handler = Callable[[DNSRecord, bytes, str], list[bytes]]


class FakeDns(asyncio.DatagramProtocol):
    """A DNS server on loopback, UDP and TCP on one port, answering each query through `handler`."""

    def __init__(self, handler: Handler, host: str) -> None:
        self.handler = handler
        self.host = host
        self.queries: list[tuple[str, str, str]] = []  # (name, type, "udp"/"tcp")
        self.source_ports: list[int] = []  # of each UDP query
        self.port = 0

    async def start(self) -> FakeDns:
        # The TCP port is the system's pick; the same number may already be someone's UDP port (another
        # test's lookup, say): then pick again.
        for _ in range(20):
            self.tcp = await asyncio.start_server(self._serve_tcp, self.host, 0)
            self.port = self.tcp.sockets[0].getsockname()[1]
            try:
                self.udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: self, local_addr=(self.host, self.port)
                )
                return self
            except OSError:
                self.tcp.close()
                await self.tcp.wait_closed()
        raise RuntimeError("no port free for both UDP and TCP")

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def _answer(self, data: bytes, transport: str) -> list[bytes]:
        request = DNSRecord.parse(data)
        self.queries.append((str(request.q.qname).rstrip(".").lower(), QTYPE[request.q.qtype], transport))
        return self.handler(request, data, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.source_ports.append(addr[1])
        for reply in self._answer(data, "udp"):
            self.udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = int.from_bytes(await reader.readexactly(2), "big")
            for reply in self._answer(await reader.readexactly(size), "tcp"):
                writer.write(len(reply).to_bytes(2, "big") + reply)
            await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        self.udp.close()
        self.tcp.close()
        await self.tcp.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[FakeDns]]]:
    servers: list[FakeDns] = []

    async def start(handler: Handler, host: str = "127.0.0.1") -> FakeDns:
        servers.append(await FakeDns(handler, host).start())
        return servers[-1]

    yield start
    for server in servers:
        await server.stop()


def reply_with(*records: RR, rcode: int = 0, tc: bool = False) -> Handler:
    """Every query answered with `records`, whatever type it asked for (the resolver picks its own)."""

    def handler(request: DNSRecord, _data: bytes, _transport: str) -> list[bytes]:
        reply = request.reply()
        reply.header.rcode, reply.header.tc = rcode, int(tc)
        for record in records:
            reply.add_answer(record)
        return [reply.pack()]

    return handler


def a(name: str, address: str, rclass: int = 1) -> RR:
    return RR(name, QTYPE.A, rclass=rclass, ttl=60, rdata=A(address))


def aaaa(name: str, address: str) -> RR:
    return RR(name, QTYPE.AAAA, ttl=60, rdata=AAAA(address))


def cname(name: str, target: str) -> RR:
    return RR(name, QTYPE.CNAME, ttl=60, rdata=CNAME(target))


def silent(_request: DNSRecord, _data: bytes, _transport: str) -> list[bytes]:
    return []


async def lookup(server: tuple[str, int], host: str, seconds: float = 2.0) -> dns_stub.AddressAnswer:
    return await dns_stub.lookup_addresses(host, server, seconds)


# ---------------------------------------------------------------- names


def test_names_in_wire_form() -> None:
    assert dns_stub.encode_name("WWW.Example.com") == b"\x03www\x07example\x03com\x00"
    assert dns_stub.encode_name("www.example.com.") == b"\x03www\x07example\x03com\x00"
    assert dns_stub.encode_name("_acme-challenge.x") == b"\x0f_acme-challenge\x01x\x00"
    assert dns_stub.encode_name("Bücher.example") == b"\x0dxn--bcher-kva\x07example\x00"
    assert dns_stub.encode_name(".") == b"\x00"
    longest = ".".join(["a" * 63] * 3 + ["a" * 61])  # 253 characters, 255 bytes in wire form
    assert len(dns_stub.encode_name(longest)) == 255


@pytest.mark.parametrize(
    "host",
    [
        "",
        "a..b",
        ".a",
        "a.b..",
        "a" * 64 + ".com",
        ".".join(["a" * 63] * 3 + ["a" * 62]),
        "a\u0080b.example",
        "\u00fc" * 60 + ".example",
    ],
)
def test_invalid_names_are_refused(host: str) -> None:
    with pytest.raises(dns_stub.InvalidName):
        dns_stub.encode_name(host)


# ---------------------------------------------------------------- pebble-challtestsrv


@pytest.fixture(scope="module")
def challtest() -> Iterator[ChallTestSrv]:
    with challtestsrv(tool_or_skip("pebble-challtestsrv")) as server:
        yield server


def manage(server: ChallTestSrv, path: str, **body: Any) -> None:
    request = urllib.request.Request(
        server.management_url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def address_of(server: ChallTestSrv) -> tuple[str, int]:
    host, _, port = server.dns_address.rpartition(":")
    return host, int(port)


async def test_challtestsrv_default_answer(challtest: ChallTestSrv) -> None:
    answer = await lookup(address_of(challtest), "anything.example.com")
    assert (answer.ipv4, answer.ipv6, answer.failures) == (["127.0.0.1"], [], {})


async def test_challtestsrv_a_and_aaaa_records(challtest: ChallTestSrv) -> None:
    manage(challtest, "/add-a", host="dual.example.com.", addresses=["192.0.2.1", "192.0.2.2"])
    manage(challtest, "/add-aaaa", host="dual.example.com.", addresses=["2001:db8::1", "2001:db8::2"])
    try:
        answer = await lookup(address_of(challtest), "Dual.Example.COM.")
    finally:
        manage(challtest, "/clear-a", host="dual.example.com.")
        manage(challtest, "/clear-aaaa", host="dual.example.com.")
    assert answer.ipv4 == ["192.0.2.1", "192.0.2.2"] and answer.ipv6 == ["2001:db8::1", "2001:db8::2"]
    assert answer.addresses == ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"]


async def test_challtestsrv_cname(challtest: ChallTestSrv) -> None:
    manage(challtest, "/set-cname", host="www.alias.test.", target="target.example.net.")
    manage(challtest, "/add-a", host="target.example.net.", addresses=["192.0.2.7"])
    manage(challtest, "/add-aaaa", host="target.example.net.", addresses=["2001:db8::7"])
    try:
        answer = await lookup(address_of(challtest), "www.alias.test")
    finally:
        manage(challtest, "/clear-cname", host="www.alias.test.")
        manage(challtest, "/clear-a", host="target.example.net.")
        manage(challtest, "/clear-aaaa", host="target.example.net.")
    assert answer.addresses == ["192.0.2.7", "2001:db8::7"] and answer.failures == {}


async def test_challtestsrv_servfail(challtest: ChallTestSrv) -> None:
    manage(challtest, "/set-servfail", host="broken.example.com.")
    try:
        answer = await lookup(address_of(challtest), "broken.example.com")
    finally:
        manage(challtest, "/clear-servfail", host="broken.example.com.")
    assert answer.addresses == [] and set(answer.failures) == {"A", "AAAA"}
    assert all(isinstance(failure, dns_stub.ServerFailure) for failure in answer.failures.values())
    assert "RCODE 2" in str(answer.failures["A"])


async def test_many_lookups_at_once(challtest: ChallTestSrv) -> None:
    answers = await asyncio.gather(*(lookup(address_of(challtest), f"n{i}.example.com") for i in range(100)))
    assert all(answer.addresses == ["127.0.0.1"] and not answer.failures for answer in answers)


# ---------------------------------------------------------------- our own server


async def test_nxdomain(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    server = await serve(reply_with(rcode=3))
    with pytest.raises(dns_stub.NxDomain):
        await lookup(server.address, "gone.example.com")

    def only_aaaa_says_nxdomain(request: DNSRecord, data: bytes, transport: str) -> list[bytes]:
        if request.q.qtype == QTYPE.AAAA:
            return reply_with(rcode=3)(request, data, transport)
        return reply_with(a("half.example.com", "192.0.2.1"))(request, data, transport)

    server = await serve(only_aaaa_says_nxdomain)
    with pytest.raises(dns_stub.NxDomain):  # one authoritative "no such name" settles it
        await lookup(server.address, "half.example.com")


async def test_refused_is_a_server_failure(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    server = await serve(reply_with(rcode=5))
    answer = await lookup(server.address, "www.example.com")
    assert answer.addresses == [] and "RCODE 5" in str(answer.failures["AAAA"])


async def test_truncated_reply_is_asked_again_over_tcp(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    many = [f"192.0.2.{i}" for i in range(1, 61)]  # 60 records: well over 512 bytes

    def handler(request: DNSRecord, data: bytes, transport: str) -> list[bytes]:
        if transport == "udp":
            return reply_with(a("big.example.com", "198.51.100.1"), tc=True)(request, data, transport)
        return reply_with(*(a("big.example.com", address) for address in many))(request, data, transport)

    server = await serve(handler)
    answer = await lookup(server.address, "big.example.com")
    assert answer.ipv4 == many and answer.failures == {}  # the partial UDP answer is not used
    assert sorted(server.queries) == [
        ("big.example.com", "A", "tcp"),
        ("big.example.com", "A", "udp"),
        ("big.example.com", "AAAA", "tcp"),
        ("big.example.com", "AAAA", "udp"),
    ]


async def test_cname_chain_inside_the_answer(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    server = await serve(
        reply_with(
            cname("www.example.com", "Hop.Example.NET"),
            RR("www.example.com", QTYPE.TXT, ttl=60, rdata=TXT("not an address")),
            a("unrelated.example.org", "192.0.2.99"),  # not on the chain: skipped
            cname("hop.example.net", "end.example.org"),
            a("END.example.org", "192.0.2.10"),
            a("end.example.org", "192.0.2.10"),  # a duplicate counts once
            a("end.example.org", "192.0.2.50", rclass=3),  # class CH: skipped
            aaaa("end.example.org", "2001:db8::10"),
        )
    )
    answer = await lookup(server.address, "www.example.com")
    assert (answer.ipv4, answer.ipv6, answer.failures) == (["192.0.2.10"], ["2001:db8::10"], {})


async def test_cname_loop_gives_no_address(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    server = await serve(
        reply_with(cname("www.example.com", "x.example.com"), cname("x.example.com", "www.example.com"))
    )
    answer = await lookup(server.address, "www.example.com")
    assert answer.addresses == [] and answer.failures == {}


def _raw(query: bytes, answers: bytes, count: int) -> bytes:
    """A reply by hand: the query's id and question, then `answers` (in wire form)."""
    return query[:2] + struct.pack("!5H", 0x8180, 1, count, 0, 0) + query[12:] + answers


async def test_stray_and_spoofed_datagrams_are_ignored(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    def handler(request: DNSRecord, data: bytes, transport: str) -> list[bytes]:
        qtype = QTYPE[request.q.qtype]
        spoof = reply_with(a("www.example.com", "203.0.113.1"))(request, data, transport)[0]
        other_name = DNSRecord.question("www.example.net", qtype)  # as long as ours: only the name differs
        other_type = DNSRecord.question("www.example.com", "TXT")
        other_name.header.id = other_type.header.id = request.header.id
        return [
            b"\x00\x01",  # too short to be anything
            bytes([spoof[0] ^ 0x01]) + spoof[1:],  # a wrong id, arriving first
            reply_with(a("www.example.net", "203.0.113.2"))(other_name, b"", transport)[0],
            reply_with(a("www.example.com", "203.0.113.3"))(other_type, b"", transport)[0],
            data,  # our own query reflected: QR clear
            data[:2] + struct.pack("!5H", 0x8180, 1, 1, 0, 0) + b"\xc0\x0c" + data[-4:],  # a looping question
            reply_with(a("www.example.com", "192.0.2.1"))(request, data, transport)[0],
        ]

    server = await serve(handler)
    answer = await lookup(server.address, "www.example.com")
    assert answer.ipv4 == ["192.0.2.1"] and answer.failures == {}


RECORD = struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)  # type A, class IN, TTL, 4 bytes of data


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


# Answer sections whose second record's owner name loops; `start` is where the section begins.
LOOPS = {
    "a pointer to itself": lambda start: b"\x00" + RECORD + pointer(start + 15) + RECORD,
    "a label, then back": lambda start: b"\x00" + RECORD + b"\x01x" + pointer(start + 15) + RECORD,
    # The first record's data (not read: type 99) is a pointer to itself; the owner name points there,
    # before itself, so only the rule "each pointer before the previous one" stops it.
    "an earlier loop": lambda start: (
        b"\x00" + struct.pack("!HHIH", 99, 1, 60, 2) + pointer(start + 11) + pointer(start + 11) + RECORD
    ),
}


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
async def test_compression_pointer_loops_fail_at_once(
    serve: Callable[..., Awaitable[FakeDns]], loop: Callable[[int], bytes]
) -> None:
    def handler(_request: DNSRecord, data: bytes, _transport: str) -> list[bytes]:
        return [_raw(data, answers=loop(len(data)), count=2)]

    server = await serve(handler)
    began = time.monotonic()
    answer = await lookup(server.address, "www.example.com", seconds=5)
    assert time.monotonic() - began < 1  # refused on sight, not waited out
    assert answer.addresses == [] and set(answer.failures) == {"A", "AAAA"}
    assert all(isinstance(failure, dns_stub.MalformedReply) for failure in answer.failures.values())


@pytest.mark.parametrize(
    "answers",
    [
        lambda start: pointer(start + 2) + b"\x00" + RECORD,  # a forward pointer
        lambda start: pointer(0x3FFF) + RECORD,  # a pointer past the end
        lambda start: b"\xc0",  # half a pointer
        lambda start: b"\x05ab",  # a label past the end
        lambda start: b"\x41abc\x00" + RECORD,  # a reserved label type
        lambda start: b"\x00" + struct.pack("!HHIH", 1, 1, 60, 16) + bytes(16),  # A with 16 bytes
        lambda start: b"\x00" + struct.pack("!HHIH", 1, 1, 60, 40) + bytes(4),  # data past the end
        lambda start: b"\x00" + struct.pack("!HHI", 1, 1, 60),  # record header cut short
        lambda start: (b"\x3f" + b"a" * 63) * 5 + b"\x00" + RECORD,  # a name over 255 bytes
        lambda start: b"\x00" + struct.pack("!HHIH", 5, 1, 60, 4) + b"\x01x\x00\x00",  # CNAME with extra data
    ],
)
async def test_malformed_answers(
    serve: Callable[..., Awaitable[FakeDns]], answers: Callable[[int], bytes]
) -> None:
    def handler(request: DNSRecord, data: bytes, transport: str) -> list[bytes]:
        if request.q.qtype != QTYPE.A:
            return reply_with()(request, data, transport)
        return [_raw(data, answers=answers(len(data)), count=1)]

    server = await serve(handler)
    answer = await lookup(server.address, "www.example.com")
    assert isinstance(answer.failures["A"], dns_stub.MalformedReply) and "AAAA" not in answer.failures


async def test_a_silent_server_times_out_within_the_budget(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    server = await serve(silent)
    began = time.monotonic()
    answer = await lookup(server.address, "quiet.example.com", seconds=0.6)
    elapsed = time.monotonic() - began
    assert 0.55 <= elapsed < 1.0
    assert answer.addresses == [] and set(answer.failures) == {"A", "AAAA"}
    assert all(isinstance(failure, dns_stub.Timeout) for failure in answer.failures.values())
    # Sent, then resent after 0.15 s and 0.3 s more; the next would fall after the budget.
    assert server.queries.count(("quiet.example.com", "A", "udp")) == 3


async def test_a_lost_datagram_is_resent(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    seen: set[int] = set()

    def drop_the_first(request: DNSRecord, data: bytes, transport: str) -> list[bytes]:
        if request.q.qtype not in seen:
            seen.add(request.q.qtype)
            return []
        return reply_with(a("lossy.example.com", "192.0.2.3"))(request, data, transport)

    server = await serve(drop_the_first)
    answer = await lookup(server.address, "lossy.example.com", seconds=2)
    assert answer.ipv4 == ["192.0.2.3"] and answer.failures == {}
    assert server.queries.count(("lossy.example.com", "A", "udp")) == 2


async def test_nobody_listening_fails_fast() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()
    began = time.monotonic()
    answer = await lookup(closed, "www.example.com", seconds=5)
    assert time.monotonic() - began < 1
    assert all(isinstance(failure, dns_stub.ServerFailure) for failure in answer.failures.values())


async def test_each_lookup_asks_from_a_port_of_its_own(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    """A spoofer must guess the port as well as the query id: a fresh socket per lookup, the kernel's
    random pick; A and AAAA of one lookup share it."""
    server = await serve(reply_with(a("ports.example.com", "192.0.2.7")))
    for _ in range(8):
        assert (await lookup(server.address, "ports.example.com")).ipv4 == ["192.0.2.7"]
    assert len(server.source_ports) == 16
    assert len(set(server.source_ports)) >= 7  # one repeat allowed: the kernel's pick may repeat by chance


async def test_an_ipv6_server(serve: Callable[..., Awaitable[FakeDns]]) -> None:
    try:
        server = await serve(
            reply_with(a("v6.example.com", "192.0.2.6"), aaaa("v6.example.com", "2001:db8::6")), "::1"
        )
    except OSError:
        pytest.skip("no IPv6 loopback here")
    answer = await lookup(server.address, "v6.example.com")
    assert answer.addresses == ["192.0.2.6", "2001:db8::6"]


# ---------------------------------------------------------------- through ACME validation


@pytest.fixture
def resolver_at(database_url: str) -> Iterator[Callable[[tuple[str, int]], None]]:
    """Point acme_validation at a DNS server (the session's settings are configured by `database_url`)."""
    apply = settings_override()
    yield lambda address: apply(acme_dns_resolver=address, acme_allow_private_identifiers=True)
    apply()


async def test_validation_addresses_ipv4_first(
    challtest: ChallTestSrv, resolver_at: Callable[[tuple[str, int]], None]
) -> None:
    manage(challtest, "/add-a", host="both.example.com.", addresses=["192.0.2.1"])
    manage(challtest, "/add-aaaa", host="both.example.com.", addresses=["2001:db8::1"])
    resolver_at(address_of(challtest))
    try:
        assert await acme_validation.resolve_addresses("both.example.com") == ["192.0.2.1", "2001:db8::1"]
    finally:
        manage(challtest, "/clear-a", host="both.example.com.")
        manage(challtest, "/clear-aaaa", host="both.example.com.")


async def test_validation_errors_keep_their_wording(
    serve: Callable[..., Awaitable[FakeDns]],
    resolver_at: Callable[[tuple[str, int]], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver_at((await serve(reply_with(rcode=3))).address)
    with pytest.raises(ValidationFailure) as failure:
        await acme_validation.resolve_addresses("gone.example.com")
    assert (failure.value.kind, failure.value.detail) == ("dns", "gone.example.com does not exist (NXDOMAIN)")

    resolver_at((await serve(reply_with(rcode=2))).address)  # a failing server adds no detail
    with pytest.raises(ValidationFailure) as failure:
        await acme_validation.resolve_addresses("broken.example.com")
    assert failure.value.detail == "no A or AAAA record found for broken.example.com"

    resolver_at((await serve(reply_with())).address)
    with pytest.raises(ValidationFailure) as failure:
        await acme_validation.resolve_addresses("empty.example.com")
    assert failure.value.detail == "no A or AAAA record found for empty.example.com"

    monkeypatch.setattr(acme_validation, "DNS_TIMEOUT", 0.3)
    resolver_at((await serve(silent)).address)
    with pytest.raises(ValidationFailure) as failure:
        await acme_validation.resolve_addresses("quiet.example.com")
    assert (
        failure.value.detail == "no A or AAAA record found for quiet.example.com (AAAA: Timeout; A: Timeout)"
    )
