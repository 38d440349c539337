"""Real peers on loopback for the channel tests: an HTTP receiver in a thread, aiosmtpd SMTP servers (plain,
STARTTLS, implicit TLS) with a throwaway certificate made by pki, and settings overrides."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from core import runtime
from core.channel import Notification
from pki.certificate import IssuerUrls, build_root_ca, certificate_pem, sign_leaf_certificate
from pki.key import KeyAlgorithm, generate_private_key, serialize_private_key
from pki.name import build_name
from pki.san import make_san


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def settings_override(**changes: Any) -> Iterator[None]:
    """Swap runtime settings for one test (the KEK stays)."""
    before, kek = runtime.settings(), runtime.kek()
    runtime.configure(dataclasses.replace(before, **changes), kek=kek)
    try:
        yield
    finally:
        runtime.configure(before, kek=kek)


def sample_notification(event_type: str = "certificate.expiring", count: int = 3) -> Notification:
    now = datetime.now(UTC)
    certificates = [
        {
            "id": str(uuid.uuid4()),
            "commonName": f"api{i}.example.com",
            "sans": [f"DNS:api{i}.example.com", f"DNS:www.api{i}.example.com"],
            "serialNumber": f"{0x1234ABCD + i:x}",
            "notBefore": (now - timedelta(days=80)).isoformat(),
            "notAfter": (now + timedelta(days=6, hours=12)).isoformat(),
            "status": "active",
            "profileName": "tls-server",
        }
        for i in range(count)
    ]
    return Notification(
        event_id=uuid.uuid4(),
        event_type=event_type,
        occurred_at=now,
        organization_id=uuid.uuid4(),
        application_id=uuid.uuid4(),
        application_name="payments-api",
        alert_name="expiry-watch",
        certificates=certificates,
        details={"thresholdDays": 7, "daysLeft": 6},
    )


# ---------------------------------------------------------------- HTTP


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records every POST; `mode`: "answer" (status + body), "hang" (never answers) or "close" (drops it)."""

    status: int = 200
    body: bytes = b"ok"
    mode: str = "answer"
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(
                    Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                if receiver.mode == "hang":
                    receiver._release.wait(30)
                    return
                if receiver.mode == "close":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextlib.contextmanager
def http_receiver(**options: Any) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(**options).start()
    try:
        yield receiver
    finally:
        receiver.stop()


# ---------------------------------------------------------------- SMTP


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())


class _Collect:
    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.tls_seen: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's API
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        transport = server.transport
        self.tls_seen.append(session.ssl is not None or transport.get_extra_info("ssl_object") is not None)
        return "250 Message accepted for delivery"


@dataclass
class TlsFiles:
    ca_file: Path
    context: ssl.SSLContext


def throwaway_tls(directory: Path) -> TlsFiles:
    """A root CA and a server certificate for 127.0.0.1 / localhost, made with pki's own functions."""
    root_key = generate_private_key(KeyAlgorithm.EC_P256)
    root = build_root_ca(
        key=root_key,
        subject=build_name([("CN", "Keyward SMTP test root")]),
        not_after=datetime.now(UTC) + timedelta(days=2),
        path_length=0,
    )
    leaf_key = generate_private_key(KeyAlgorithm.EC_P256)
    leaf = sign_leaf_certificate(
        issuer_cert=root,
        issuer_key=root_key,
        public_key=leaf_key.public_key(),
        subject=build_name([("CN", "localhost")]),
        sans=[make_san(san_type="DNS", value="localhost"), make_san(san_type="IP", value="127.0.0.1")],
        key_usages=frozenset(),
        extended_key_usages=frozenset({"serverAuth"}),
        not_after=datetime.now(UTC) + timedelta(days=1),
        urls=IssuerUrls(
            ca_issuers="http://127.0.0.1/ca", ocsp="http://127.0.0.1/ocsp", crl="http://127.0.0.1/crl"
        ),
    )
    ca_file = directory / "smtp-ca.pem"
    ca_file.write_text(certificate_pem(root))
    cert_file, key_file = directory / "smtp.pem", directory / "smtp.key"
    cert_file.write_text(certificate_pem(leaf))
    key_file.write_bytes(serialize_private_key(leaf_key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return TlsFiles(ca_file, context)


@dataclass
class SmtpServer:
    port: int
    collected: _Collect

    @property
    def mails(self) -> list[Mail]:
        return self.collected.mails


@contextlib.contextmanager
def smtp_server(mode: str = "none", tls: TlsFiles | None = None, **kwargs: Any) -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1 in its own thread: mode none | starttls (required) | implicit."""
    collect = _Collect()
    port = free_port()
    options: dict[str, Any] = dict(kwargs)
    if mode == "starttls":
        assert tls is not None
        options.update(tls_context=tls.context, require_starttls=True)
    elif mode == "implicit":
        assert tls is not None
        options.update(ssl_context=tls.context)
    controller = Controller(collect, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield SmtpServer(port, collect)
    finally:
        controller.stop()
