"""Shared pieces of the ACME order and validation tests: an ACME-enabled attachment with accounts, settings
overrides, CSRs in ACME's encoding, and real loopback peers (HTTP responder, DNS server, TLS-ALPN server)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import ssl
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord
from factories import DEFAULT_RULES, Pki, attach, make_application, make_csr_pem, make_pki

from core import runtime
from core.acme_account import load_acme_attachment
from models import AcmeAccount, AcmeAuthorization, Application, Organization
from models.application import ApplicationProfile
from pki.acme.challenge import ACME_TLS_ALPN_PROTOCOL, b64url, build_tls_alpn01_certificate, public_key_jwk
from pki.key import KeyAlgorithm, PrivateKey, generate_private_key, serialize_private_key

# The factories' rules plus loopback addresses, so IP identifiers can be validated against local peers.
ACME_RULES: dict[str, Any] = {
    **DEFAULT_RULES,
    "sans": [
        {"type": "DNS", "allowed": ["**.example.com", "*.example.com", "example.com"]},
        {"type": "IP", "allowed": ["10.0.0.0/8", "127.0.0.0/8"]},
    ],
}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638."""
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    return b64url(hashlib.sha256(canonical).digest())


@dataclass
class Scene:
    org: Organization
    pki: Pki
    application: Application
    attachment: ApplicationProfile
    account: AcmeAccount
    other: AcmeAccount  # a second account of the same directory
    account_key: PrivateKey


async def make_account(attachment: ApplicationProfile, key: PrivateKey | None = None) -> AcmeAccount:
    key = key or generate_private_key(KeyAlgorithm.EC_P256)
    jwk = public_key_jwk(key.public_key())
    assert jwk is not None
    return await AcmeAccount.create(
        attachment_id=attachment.id, key_thumbprint=thumbprint(jwk), jwk=jwk, status="valid", contact=[]
    )


async def make_scene(organization_id: uuid.UUID, rules: dict[str, Any] | None = None) -> Scene:
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org, rules=ACME_RULES if rules is None else rules)
    application = await make_application(org)
    await attach(application, pki.profile, acme_enabled=True, acme_eab_required=False)
    attachment = await load_acme_attachment(str(application.id), str(pki.profile.id))
    key = generate_private_key(KeyAlgorithm.EC_P256)
    account = await make_account(attachment, key)
    other = await make_account(attachment)
    return Scene(org, pki, application, attachment, account, other, key)


def settings_override() -> Callable[..., None]:
    """Replace runtime settings fields; the returned function called with no arguments restores them."""
    original = runtime.settings()

    def apply(**changes: Any) -> None:
        runtime.configure(dataclasses.replace(original, **changes), kek=runtime.kek())

    return apply


def acme_csr(names: list[str], *, common_name: str | None = None, key: PrivateKey | None = None) -> str:
    """base64url DER of a CSR for `names` (SANs), as finalize takes it."""
    pem, _ = make_csr_pem(common_name=common_name, sans=names, key=key)
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    return b64url(der)


async def make_authorizations_valid(order_authorization_ids: list[str]) -> None:
    """What a successful validation does, without the network (for tests of the order rules)."""
    from datetime import UTC, datetime, timedelta

    await AcmeAuthorization.filter(id__in=[uuid.UUID(i) for i in order_authorization_ids]).update(
        status="valid", expires_at=datetime.now(UTC) + timedelta(days=30)
    )


# ---------------------------------------------------------------- loopback peers


@dataclass
class HttpResponder:
    """A tiny HTTP/1.1 server: path -> (status, body, extra headers); records the Host headers it saw and
    answers `delay` seconds after reading a request."""

    routes: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    delay: float = 0.0
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> HttpResponder:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            lines = request.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            for line in lines[1:]:
                if line.lower().startswith("host:"):
                    self.hosts.append(line.split(":", 1)[1].strip())
            status, body, headers = self.routes.get(path, (404, b"not found", {}))
            if self.delay:
                await asyncio.sleep(self.delay)
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class DnsServer(asyncio.DatagramProtocol):
    """A UDP DNS server on loopback: every name under example.com has A 127.0.0.1 unless listed in `nx`,
    `txt` maps names to TXT values, `a` overrides addresses."""

    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.a: dict[str, str] = {}
        self.nx: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = DNSRecord.parse(data)
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        known = name in self.txt or name in self.a or name == "example.com" or name.endswith(".example.com")
        if name in self.nx or not known:
            reply.header.rcode = RCODE.NXDOMAIN
        elif qtype == "A" and not name.startswith("_acme-challenge."):
            reply.add_answer(RR(name, QTYPE.A, rdata=A(self.a.get(name, "127.0.0.1")), ttl=1))
        elif qtype == "TXT":
            for value in self.txt.get(name, []):
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(value), ttl=1))
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class TlsAlpnServer:
    """A TLS server on loopback answering ALPN acme-tls/1 with a given certificate; records the SNI seen."""

    certificate: x509.Certificate
    key: PrivateKey
    alpn: list[str] | None = dataclasses.field(default_factory=lambda: [ACME_TLS_ALPN_PROTOCOL])
    server_names: list[str | None] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> TlsAlpnServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
            key_path.write_bytes(serialize_private_key(self.key))
            context.load_cert_chain(cert_path, key_path)
        if self.alpn is not None:
            context.set_alpn_protocols(self.alpn)

        def sni(_sock: Any, name: str | None, _context: Any) -> None:
            self.server_names.append(name)

        context.sni_callback = sni
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1)  # the validator closes after the handshake
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def tls_alpn_server(identifier_type: str, identifier_value: str, key_authorization: str) -> TlsAlpnServer:
    key = generate_private_key(KeyAlgorithm.EC_P256)
    certificate = build_tls_alpn01_certificate(
        key,
        identifier_type=identifier_type,
        identifier_value=identifier_value,
        key_authorization_text=key_authorization,
    )
    return TlsAlpnServer(certificate, key)


def b64url_der(certificate_pem: str) -> str:
    der = x509.load_pem_x509_certificate(certificate_pem.encode()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(der).rstrip(b"=").decode()
