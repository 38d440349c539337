"""EST enrollment throughput against the raw `cryptography` signing rate measured in the same run.

    .venv/bin/python -m bench.est_load [--n 400] [--clients 8] [--backend sqlite|postgres] [--plain]

Sets up a P-256 issuing CA, policy, profile and application with EST enabled (HTTP Basic passphrase) on a
temporary SQLite file or a scratch PostgreSQL database (127.0.0.1:5432), measures (a) `cryptography`
signing a prepared leaf with the CA key in a loop, then starts `keyward serve --tls-cert --tls-key` (the
real CLI, one process) and runs N /simpleenroll requests from `--clients` concurrent HTTPS clients
(keep-alive, base64 P-256 CSRs prepared beforehand), and prints enrollments per second, the raw rate and
their ratio. `--plain` serves plain HTTP instead (KEYWARD_EST_ALLOW_PLAIN_HTTP) to show the TLS share.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.issuance import POSTGRES_ADMIN_URL, _make_fixture, _raw_signing_rate
from bench.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "bench-est-passphrase"
USERNAME = "bench"


def _tls_files(workdir: Path) -> tuple[Path, Path]:
    """A throwaway self-signed server certificate for 127.0.0.1."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyward-bench")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "tls-cert.pem", workdir / "tls-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def _csrs(n: int) -> list[bytes]:
    """Base64 DER P-256 CSRs made before timing: the client's work is not the server's."""
    from pki.csr import build_csr
    from pki.key import KeyAlgorithm, generate_private_key
    from pki.san import SubjectAltName

    out = []
    for index in range(n):
        name = f"device{index}.bench.example.com"
        csr = build_csr(
            key=generate_private_key(KeyAlgorithm.EC_P256),
            subject=[("CN", name)],
            sans=[SubjectAltName("DNS", name)],
        )
        out.append(base64.b64encode(csr.public_bytes(serialization.Encoding.DER)))
    return out


async def _prepare(url: str, kek: bytes, kek_file: Path, public_url: str) -> tuple[str, float]:
    """Schema, organization, CA and EST-enabled attachment; returns (simpleenroll path, raw signs/s)."""
    from tortoise import Tortoise

    from core import est, runtime
    from core.authz import Actor
    from core.bootstrap import init_organization
    from core.config import Settings
    from core.db import generate_schema, tortoise_config

    runtime.configure(Settings(database_url=url, public_url=public_url, kek_file=str(kek_file)), kek=kek)
    await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)
    try:
        await generate_schema()
        org, _, _ = await init_organization(org_name="bench-est", admin_email="admin@est.bench")
        fixture = await _make_fixture(org.id, "EC_P256")
        await est.enable_est(
            actor=Actor.system(org.id, "bench"),
            application_id=fixture.application_id,
            profile_id=fixture.profile_id,
            username=USERNAME,
            passphrase=PASSPHRASE,
        )
        raw = await _raw_signing_rate(fixture, seconds=2.0)
    finally:
        await Tortoise.close_connections()
    path = (
        f"/.well-known/est/applications/{fixture.application_id}/profiles/{fixture.profile_id}/simpleenroll"
    )
    return path, raw


async def _wait_ready(client: httpx.AsyncClient, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError(f"keyward serve exited with {server.returncode}")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("keyward serve did not start within 30 s")


async def _enroll_rate(
    base_url: str, verify: ssl.SSLContext | bool, path: str, csrs: list[bytes], clients: int
) -> float:
    auth = base64.b64encode(f"{USERNAME}:{PASSPHRASE}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/pkcs10"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, verify=verify, limits=limits, timeout=120) as client:

        async def one(csr: bytes) -> None:
            response = await client.post(path, content=csr, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"enrollment failed: {response.status_code} {response.text}")

        # Warm-up: connections (TLS handshakes), the passphrase check, CA material and policy caches.
        await asyncio.gather(*(one(csr) for csr in csrs[:clients]))
        queue = list(csrs[clients:])
        count = len(queue)

        async def worker() -> None:
            while queue:
                await one(queue.pop())

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return count / (time.perf_counter() - start)


def _start(command: list[str], env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, cwd=workdir)


async def _run(args: argparse.Namespace, workdir: Path) -> None:
    from core.db import create_scratch_database, drop_scratch_database

    if args.backend == "postgres":
        url = await create_scratch_database(POSTGRES_ADMIN_URL, prefix="keyward_bench_est")
    else:
        url = f"sqlite://{workdir / 'bench.sqlite3'}"
    port = free_port()
    scheme = "http" if args.plain else "https"
    base_url = f"{scheme}://127.0.0.1:{port}"
    kek = os.urandom(32)
    kek_file = workdir / "kek.key"
    kek_file.write_text(base64.b64encode(kek).decode() + "\n")
    kek_file.chmod(0o600)
    server: subprocess.Popen[bytes] | None = None
    try:
        path, raw = await _prepare(url, kek, kek_file, base_url)
        print(
            f"[{args.backend}] raw signing (P-256 CA): {raw:.0f}/s; preparing {args.n} CSRs ...",
            file=sys.stderr,
        )
        csrs = _csrs(args.n + args.clients)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
        env.update(
            KEYWARD_DATABASE_URL=url,
            KEYWARD_PUBLIC_URL=base_url,
            KEYWARD_KEK_FILE=str(kek_file),
            KEYWARD_LOG_LEVEL="warning",
        )
        command = [
            str(Path(sys.executable).parent / "keyward"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        verify: ssl.SSLContext | bool = False
        if args.plain:
            env["KEYWARD_EST_ALLOW_PLAIN_HTTP"] = "true"
        else:
            cert_file, key_file = _tls_files(workdir)
            command += ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
            verify = ssl.create_default_context(cafile=str(cert_file))
        server = _start(command, env, workdir)
        async with httpx.AsyncClient(base_url=base_url, verify=verify) as probe:
            await _wait_ready(probe, server)
        rate = await _enroll_rate(base_url, verify, path, csrs, args.clients)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if args.backend == "postgres":
            await drop_scratch_database(POSTGRES_ADMIN_URL, url)
    transport = "HTTP (plain)" if args.plain else "HTTPS"
    print(
        f"EST simpleenroll over {transport}, {args.backend}, "
        f"{args.clients} concurrent clients, {args.n} enrollments\n"
        f"  enrollments/s:           {rate:10.1f}\n"
        f"  raw cryptography sign/s: {raw:10.1f}  (P-256 CA, same run)\n"
        f"  ratio enroll/raw:        {rate / raw:10.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.est_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="enrollments measured (after a warm-up)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTPS clients")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--plain", action="store_true", help="plain HTTP instead of HTTPS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keyward-est-bench-") as tmp:
        asyncio.run(_run(args, Path(tmp)))


if __name__ == "__main__":
    main()
