"""Shared by the real-client ACME tests (certbot, lego, the Python `acme` library): an ACME-enabled
attachment with EAB, runtime ACME settings for the live server, a loopback DNS server
(pebble-challtestsrv), an http-01 responder, and inventory/CRL look-ups."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from factories import DEFAULT_RULES, Pki, make_application, make_pki

from core import application as application_service
from core import runtime
from core.authz import Actor
from core.config import load_settings
from models import Application, ApplicationProfile, Certificate, Organization

# The test profile's policy: DNS names under example.com (wildcards too), P-256/P-384/RSA keys.
ACME_RULES: dict[str, Any] = {
    **DEFAULT_RULES,
    "keyAlgorithms": ["EC_P256", "EC_P384", "RSA_2048", "RSA_3072", "RSA_4096"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class AcmeTarget:
    """One application + profile with ACME on and EAB required, and the credentials a client needs."""

    org: Organization
    pki: Pki
    application: Application
    attachment: ApplicationProfile
    directory_url: str
    eab_kid: str
    eab_hmac_key: str  # base64url, no padding, as certbot and lego take it


async def make_acme_target(organization_id: uuid.UUID, *, rules: dict[str, Any] | None = None) -> AcmeTarget:
    """PKI rows from tests/factories.py; ACME enabled and the EAB credentials revealed by core.application."""
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org, rules=ACME_RULES if rules is None else rules)
    application = await make_application(org, profiles=[pki.profile])
    actor = Actor.system(org.id, "tests")
    attachment = await application_service.enable_acme(
        actor=actor, application_id=application.id, profile_id=pki.profile.id
    )
    kid = application_service.acme_eab_kid(actor=actor, attachment=attachment, organization_id=org.id)
    hmac_key = application_service.acme_eab_hmac_key(
        actor=actor, attachment=attachment, organization_id=org.id
    )
    assert kid and hmac_key
    public_url = runtime.settings().public_url
    directory = f"{public_url}/acme/applications/{application.id}/profiles/{pki.profile.id}/directory"
    return AcmeTarget(org, pki, application, attachment, directory, kid, hmac_key)


@contextlib.contextmanager
def acme_settings(
    *,
    http01_port: int | None = None,
    tlsalpn01_port: int | None = None,
    dns_resolver: str | None = None,
    allow_private: bool = True,
) -> Iterator[None]:
    """Override the ACME runtime settings (parsed from KEYWARD_ACME_* as the server would) and restore them.

    Parsing the variables through core.config keeps this independent of the Settings field names.
    """
    env = {"KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS": "true" if allow_private else "false"}
    if http01_port is not None:
        env["KEYWARD_ACME_HTTP01_PORT"] = str(http01_port)
    if tlsalpn01_port is not None:
        env["KEYWARD_ACME_TLSALPN01_PORT"] = str(tlsalpn01_port)
    if dns_resolver is not None:
        env["KEYWARD_ACME_DNS_RESOLVER"] = dns_resolver
    parsed = load_settings(env)
    previous = runtime.settings()
    acme_fields = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed) if "acme" in f.name}
    assert acme_fields, "core.config.Settings has no ACME fields yet"
    runtime.configure(dataclasses.replace(previous, **acme_fields), kek=runtime.kek())
    try:
        yield
    finally:
        runtime.configure(previous, kek=runtime.kek())


# ----------------------------------------------------------------------------------------- DNS on loopback


@dataclass
class ChallTestSrv:
    """pebble-challtestsrv: answers every A query with 127.0.0.1 (no AAAA) and serves TXT records set
    through its management API."""

    dns_address: str  # host:port
    management_url: str

    def _post(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self.management_url}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, response.status

    def set_txt(self, host: str, value: str) -> None:
        self._post("/set-txt", {"host": host.rstrip(".") + ".", "value": value})

    def clear_txt(self, host: str) -> None:
        self._post("/clear-txt", {"host": host.rstrip(".") + "."})


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


@contextlib.contextmanager
def challtestsrv(binary: str) -> Iterator[ChallTestSrv]:
    dns_port, management_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            binary,
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-management",
            f"127.0.0.1:{management_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(management_port, process, "pebble-challtestsrv")
        yield ChallTestSrv(f"127.0.0.1:{dns_port}", f"http://127.0.0.1:{management_port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ----------------------------------------------------------------------------------------- http-01 responder


class Http01Responder:
    """Serves /.well-known/acme-challenge/<token> on 127.0.0.1:<port> from a dict, in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tokens: dict[str, str] = {}
        self.requests: list[str] = []
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                responder.requests.append(self.path)
                prefix = "/.well-known/acme-challenge/"
                body = (
                    responder.tokens.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
                )
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Http01Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------------------- assertions


async def acme_certificates(application_id: uuid.UUID) -> list[Certificate]:
    """The application's inventory rows, oldest first."""
    return await Certificate.filter(application_id=application_id).order_by("created_at", "id")


def serial_of_pem(pem: bytes | str) -> int:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data).serial_number


def serial_of_file(path: Path) -> int:
    """Serial of the first certificate in a PEM file (a client's cert.pem or .crt bundle)."""
    return serial_of_pem(path.read_bytes())


def crl_serials(public_url: str, ca_id: uuid.UUID) -> set[int]:
    """Serials listed in the CA's CRL as served over HTTP (DER or PEM)."""
    with urllib.request.urlopen(f"{public_url}/pki/cas/{ca_id}/crl", timeout=10) as response:
        data = response.read()
    crl = x509.load_pem_x509_crl(data) if data.startswith(b"-----BEGIN") else x509.load_der_x509_crl(data)
    return {entry.serial_number for entry in crl}


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run a client to completion; on failure raise with its whole output (the only useful diagnosis)."""
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    output = f"$ {' '.join(argv)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{output}")
    return output
