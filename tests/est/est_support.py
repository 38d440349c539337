"""Shared by the EST tests: an EST-enabled attachment, throwaway TLS material, `keyward serve` started through
its real CLI flags as a subprocess on a free loopback port, and the curl/openssl invocations."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from factories import Pki, make_application, make_pki

from core import est as est_service
from core import runtime
from core.authz import Actor
from models import Application, ApplicationProfile, Organization
from pki.certificate import certificate_pem

USERNAME = "device-fleet"
PASSPHRASE = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EstTarget:
    org: Organization
    pki: Pki
    application: Application
    attachment: ApplicationProfile
    # A second PKI of the same organization, whose certificates must not re-enroll here.
    other: Pki | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, op: str) -> str:
        return f"/.well-known/est/applications/{self.application.id}/profiles/{self.pki.profile.id}/{op}"

    def alias_path(self, op: str) -> str:
        return f"/.well-known/est/{self.application.name}.{self.pki.profile.name}/{op}"

    def ca_pems(self) -> str:
        """The profile's issuing CA and root (what a TLS server must trust to accept its certificates)."""
        return certificate_pem(self.pki.intermediate_certificate) + certificate_pem(self.pki.root_certificate)


async def make_est_target(
    organization_id: uuid.UUID, *, client_ca_pem: str | None = None, with_other: bool = False
) -> EstTarget:
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org)
    application = await make_application(org, profiles=[pki.profile])
    attachment = await est_service.enable_est(
        actor=Actor.system(org.id, "test"),
        application_id=application.id,
        profile_id=pki.profile.id,
        username=USERNAME,
        passphrase=PASSPHRASE,
        client_ca_pem=client_ca_pem,
    )
    other = None
    if with_other:
        from pki.key import KeyAlgorithm

        other = await make_pki(org, key_algorithm=KeyAlgorithm.EC_P384)
    return EstTarget(org, pki, application, attachment, other)


# ---------------------------------------------------------------- throwaway TLS material


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    *,
    server: bool = False,
    not_after: datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(common_name)]
    if server:
        import ipaddress

        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@dataclass
class TlsFiles:
    ca: Path  # the TLS server's CA: clients trust it (curl --cacert)
    cert: Path
    key: Path


def write_server_tls(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("Keyward Test TLS CA")
    cert, key = make_leaf(ca, "localhost", server=True)
    files = TlsFiles(directory / "tls-ca.pem", directory / "tls-cert.pem", directory / "tls-key.pem")
    files.ca.write_text(certificate_pem(ca[0]))
    files.cert.write_text(certificate_pem(cert))
    files.key.write_bytes(key_pem(key))
    files.key.chmod(0o600)
    return files


# ---------------------------------------------------------------- the server through its CLI


@dataclass
class RunningServer:
    url: str
    process: asyncio.subprocess.Process
    log: Path


def _prepare(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


def _kek_file(directory: Path) -> Path:
    path = directory / "kek.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(runtime.kek()).decode() + "\n")
    return path


@contextlib.asynccontextmanager
async def keyward_serve(
    directory: Path,
    *,
    tls: TlsFiles | None = None,
    client_ca: Path | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[RunningServer]:
    """`keyward serve [--tls-cert --tls-key [--tls-client-ca]]` on a free port against the test database."""
    _prepare(directory)
    port = free_port()
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    environment.update(
        KEYWARD_DATABASE_URL=runtime.settings().database_url,
        KEYWARD_KEK_FILE=str(_kek_file(directory)),
        KEYWARD_PUBLIC_URL=url,
        KEYWARD_LOG_LEVEL="warning",
        **(env or {}),
    )
    argv = [str(Path(sys.executable).parent / "keyward"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if tls:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    if client_ca:
        argv += ["--tls-client-ca", str(client_ca)]
    log = directory / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *argv, env=environment, stdout=sink, stderr=subprocess.STDOUT, cwd=str(directory)
        )
    try:
        verify: Any = ssl.create_default_context(cafile=str(tls.ca)) if tls else False
        async with httpx.AsyncClient(verify=verify, timeout=2) as http:
            for _ in range(600):
                if process.returncode is not None:
                    raise AssertionError(f"keyward serve exited {process.returncode}:\n{log.read_text()}")
                try:
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"keyward serve did not start:\n{log.read_text()}")
        yield RunningServer(url, process, log)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


# ---------------------------------------------------------------- curl and openssl


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Result:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self


async def sh(command: str, *, cwd: Path) -> Result:
    """A shell pipeline (the RFC's own curl | openssl recipes), run without blocking the loop."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-o",
        "pipefail",
        "-c",
        command,
        cwd=str(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return Result(int(process.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace"))


async def make_csr(
    cwd: Path, name: str, subject: str, sans: str | None = None, *, key: str | None = None
) -> Path:
    """`openssl req` writes NAME.key (new P-256 key unless `key`) and NAME.b64 (base64 DER CSR)."""
    key_path = key or f"{name}.key"
    new_key = "" if key else f"-newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout {name}.key -nodes"
    extension = f"-addext 'subjectAltName={sans}'" if sans else ""
    signing = f"-key {key_path}" if key else new_key
    result = await sh(
        f"openssl req -new {signing} -subj '{subject}' {extension} -outform DER -out {name}.der "
        f"&& openssl base64 -in {name}.der -out {name}.b64",
        cwd=cwd,
    )
    result.ok()
    return cwd / f"{name}.b64"


async def curl(cwd: Path, url: str, *args: str, output: str = "response.out") -> tuple[int, str]:
    """curl with the given options; returns (HTTP status, response headers); the body goes to `output`."""
    quoted = " ".join(f"'{arg}'" for arg in args)
    result = await sh(
        f"curl -sS -o {output} -D {output}.headers -w '%{{http_code}}' {quoted} '{url}'",
        cwd=cwd,
    )
    result.ok()
    return int(result.stdout.strip()[-3:]), (cwd / f"{output}.headers").read_text()
