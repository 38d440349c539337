"""A small RFC 1035 stub resolver for the A and AAAA lookups of ACME validation.

dnspython builds and parses a whole message object model per query; validation needs only the addresses of
one name from a recursive resolver it trusts (KEYWARD_ACME_DNS_RESOLVER), so this asks for exactly that.
Both queries leave at once on one UDP socket connected to the server (the kernel drops datagrams from
anyone else); a datagram counts as the reply only when it carries the query's random id and repeats its
question, anything else is dropped. A truncated reply is asked again over TCP. Only the answer section is
read, following the CNAME chain inside it. No search list, EDNS, cache or recursion of its own.
"""

from __future__ import annotations

import asyncio
import encodings.idna
import secrets
import socket
import struct
from dataclasses import dataclass, field

A, AAAA, CNAME, IN = 1, 28, 5, 1
# Per address type: its name, the size of its data and its address family.
_TYPES = {A: ("A", 4, socket.AF_INET), AAAA: ("AAAA", 16, socket.AF_INET6)}
# First resend after this (or a quarter of the budget if smaller), then twice as long each time: a lost
# datagram costs a short wait, not the whole budget.
FIRST_RESEND = 1.0


class DnsError(Exception):
    """A query that gave no usable answer."""


class InvalidName(DnsError, ValueError):
    """The host cannot be written as a DNS name."""


class NxDomain(DnsError):
    """The name does not exist (RCODE 3)."""


class ServerFailure(DnsError):
    """The server answered another error RCODE (SERVFAIL, REFUSED...) or could not be reached."""


class Timeout(DnsError):
    """No reply within the time budget."""


class MalformedReply(DnsError):
    """A reply to the question that cannot be read."""


@dataclass(frozen=True)
class AddressAnswer:
    """The addresses found and, keyed "A"/"AAAA", why a query found none (an NXDOMAIN raises instead)."""

    ipv4: list[str]
    ipv6: list[str]
    failures: dict[str, DnsError] = field(default_factory=dict)

    @property
    def addresses(self) -> list[str]:
        return self.ipv4 + self.ipv6


def encode_name(host: str) -> bytes:
    """`host` in wire form, lowercased; non-ASCII labels through IDNA. Limits of RFC 1035 §2.3.4."""
    if not host:
        raise InvalidName("empty name")
    text = host[:-1] if host.endswith(".") else host  # a final dot is the root's empty label
    wire = bytearray()
    for label in text.split(".") if text else []:
        try:
            raw = label.encode("ascii") if label.isascii() else encodings.idna.ToASCII(label)
        except UnicodeError as exc:
            raise InvalidName(f"label {label!r} is not a valid IDNA label ({exc})") from None
        if not 1 <= len(raw) <= 63:
            raise InvalidName(f"{host!r} has an empty label or one longer than 63 bytes")
        wire += bytes((len(raw),)) + raw.lower()
    wire.append(0)
    if len(wire) > 255:
        raise InvalidName(f"{host!r} is longer than 255 bytes")
    return bytes(wire)


def _read_name(message: bytes, offset: int) -> tuple[bytes, int]:
    """The (possibly compressed) name at `offset`, in lowercased wire form, and the offset after it.

    Each pointer must point before the previous one (or the name's start), so pointers cannot loop."""
    name = bytearray()
    after: int | None = None  # the name ends at its first pointer
    limit = offset
    while True:
        if offset >= len(message):
            raise MalformedReply("a name runs past the end of the message")
        length = message[offset]
        if length >= 0xC0:
            if offset + 1 >= len(message):
                raise MalformedReply("a compression pointer runs past the end of the message")
            target = (length & 0x3F) << 8 | message[offset + 1]
            if target >= limit:
                raise MalformedReply("a compression pointer does not point backwards")
            if after is None:
                after = offset + 2
            offset = limit = target
        elif length > 63:
            raise MalformedReply("unknown label type")
        elif length == 0:
            name.append(0)
            return bytes(name).lower(), offset + 1 if after is None else after
        else:
            name += message[offset : offset + 1 + length]
            offset += 1 + length
            if len(name) >= 255:
                raise MalformedReply("a name is longer than 255 bytes")


def _is_reply(message: bytes, qid: int, question: bytes) -> bool:
    """A response (QR) with our id and one question, ours. A server repeats the question as sent, never
    compressed (nothing precedes it to point at); the name compares without case, and .lower() leaves the
    label length bytes alone (at most 63, below b"A")."""
    size = len(question) - 4
    return (
        len(message) >= 12 + len(question)
        and message[:2] == qid.to_bytes(2, "big")
        and message[2] & 0x80 != 0
        and message[4:6] == b"\x00\x01"
        and message[12 : 12 + size].lower() == question[:size]
        and message[12 + size : 12 + len(question)] == question[size:]
    )


def _addresses(reply: bytes, name: bytes, qtype: int) -> list[str]:
    """The qtype addresses of class IN in the answer section for `name` or the CNAME chain from it."""
    type_name, data_size, family = _TYPES[qtype]
    rcode = reply[3] & 0x0F
    if rcode == 3:
        raise NxDomain("the server answered NXDOMAIN")
    if rcode:
        raise ServerFailure(f"the server answered RCODE {rcode}")
    count = struct.unpack_from("!H", reply, 6)[0]
    offset = 12 + len(name) + 4
    cnames: dict[bytes, bytes] = {}
    found: list[tuple[bytes, bytes]] = []
    for _ in range(count):  # each record takes at least 11 bytes or raises: the loop ends with the message
        owner, offset = _read_name(reply, offset)
        if offset + 10 > len(reply):
            raise MalformedReply("a record runs past the end of the message")
        rtype, rclass, _ttl, size = struct.unpack_from("!HHIH", reply, offset)
        start, offset = offset + 10, offset + 10 + size
        if offset > len(reply):
            raise MalformedReply("record data runs past the end of the message")
        if rclass != IN:
            continue
        if rtype == CNAME:
            target, end = _read_name(reply, start)
            if end != offset:
                raise MalformedReply("a CNAME record's data is not one name")
            cnames[owner] = target
        elif rtype == qtype:
            if size != data_size:
                raise MalformedReply(f"an {type_name} record has {size} bytes of data")
            found.append((owner, reply[start:offset]))
    # Our name and the names its CNAMEs lead to; each name once, so a CNAME loop ends the chain.
    chain, current = {name}, cnames.get(name)
    while current is not None and current not in chain:
        chain.add(current)
        current = cnames.get(current)
    return list(dict.fromkeys(socket.inet_ntop(family, data) for owner, data in found if owner in chain))


class _Udp(asyncio.DatagramProtocol):
    """Hands a datagram to the query it answers; strays, late duplicates and spoofs are dropped."""

    def __init__(self) -> None:
        self.waiting: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}

    def new_id(self) -> int:
        while (qid := secrets.randbits(16)) in self.waiting:
            pass
        return qid

    def datagram_received(self, data: bytes, addr: object) -> None:
        qid = int.from_bytes(data[:2], "big")
        entry = self.waiting.get(qid)
        if entry is not None and not entry[1].done() and _is_reply(data, qid, entry[0]):
            entry[1].set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable on the connected socket: nobody is listening there.
        for _, reply in self.waiting.values():
            if not reply.done():
                reply.set_exception(exc)


async def _over_tcp(server: tuple[str, int], qid: int, query: bytes, question: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server[0], server[1])
    try:
        writer.write(len(query).to_bytes(2, "big") + query)  # RFC 1035 §4.2.2: a 2-byte length first
        reply = await reader.readexactly(int.from_bytes(await reader.readexactly(2), "big"))
    except asyncio.IncompleteReadError:
        raise ServerFailure("the server closed the TCP connection before its reply") from None
    finally:
        writer.close()
    if not _is_reply(reply, qid, question):
        raise MalformedReply("the TCP reply does not answer the question")
    return reply


async def _ask(
    transport: asyncio.DatagramTransport,
    udp: _Udp,
    server: tuple[str, int],
    name: bytes,
    qtype: int,
    deadline: float,
) -> list[str]:
    loop = asyncio.get_running_loop()
    question = name + struct.pack("!HH", qtype, IN)
    qid = udp.new_id()
    query = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + question  # RD: the server recurses for us
    reply_future: asyncio.Future[bytes] = loop.create_future()
    udp.waiting[qid] = (question, reply_future)
    try:
        async with asyncio.timeout_at(deadline):
            wait = min(FIRST_RESEND, (deadline - loop.time()) / 4)
            while True:  # the same id each time, so a late reply to an earlier send still counts
                transport.sendto(query)
                done, _ = await asyncio.wait((reply_future,), timeout=wait)
                if done:
                    break
                wait *= 2
            reply = reply_future.result()
            if reply[2] & 0x02:  # TC: the answer does not fit a datagram; TCP carries all of it
                reply = await _over_tcp(server, qid, query, question)
    except TimeoutError:
        raise Timeout(f"no reply from {server[0]} port {server[1]} in time") from None
    except OSError as exc:
        raise ServerFailure(f"{server[0]} port {server[1]}: {exc}") from None
    finally:
        del udp.waiting[qid]
    return _addresses(reply, name, qtype)


def _connected_udp_socket(server: tuple[str, int]) -> socket.socket:
    """A fresh UDP socket connected to `server`, so the kernel gives each lookup a random source port (part
    of what keeps spoofed answers out). Handed over ready, the event loop skips resolving the address:
    half the cost of `remote_addr=` under uvloop."""
    sock = socket.socket(socket.AF_INET6 if ":" in server[0] else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(server)
    except OSError:
        sock.close()
        raise
    return sock


async def lookup_addresses(host: str, server: tuple[str, int], seconds: float) -> AddressAnswer:
    """The A and AAAA addresses of `host` from the DNS server `server` (IP address, port), both queries at
    once, within `seconds`. Raises InvalidName, or NxDomain when either query says the name does
    not exist; other failures are reported per query in `failures`."""
    name = encode_name(host)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        sock = _connected_udp_socket(server)
        try:
            transport, udp = await loop.create_datagram_endpoint(_Udp, sock=sock)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        failure = ServerFailure(f"cannot reach {server[0]} port {server[1]}: {exc}")
        return AddressAnswer([], [], {"A": failure, "AAAA": failure})
    try:
        results = await asyncio.gather(
            *(_ask(transport, udp, server, name, qtype, deadline) for qtype in (A, AAAA)),
            return_exceptions=True,
        )
    finally:
        transport.close()
    found: dict[int, list[str]] = {A: [], AAAA: []}
    failures: dict[str, DnsError] = {}
    for qtype, result in zip((A, AAAA), results, strict=True):
        if isinstance(result, NxDomain):
            raise result
        if isinstance(result, DnsError):
            failures[_TYPES[qtype][0]] = result
        elif isinstance(result, BaseException):
            raise result
        else:
            found[qtype] = result
    return AddressAnswer(found[A], found[AAAA], failures)
