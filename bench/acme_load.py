"""ACME throughput: Keyward against Debian's Pebble, in the same run, with the same client.

    .venv/bin/python -m bench.acme_load [--clients 8,16,24,64] [--seconds 10] [--no-pebble] [--profile]
        [--keyward-db sqlite|postgres] [--keyward-workers N (default: one per core)]

For each server and each concurrency N, N clients run at once against a freshly started server; each
registers an account (with EAB on Keyward), then loops: new order for a fresh name -> http-01 answered by a
responder in this process -> finalize with a fresh P-256 CSR (polling the order until valid unless the
finalize answer already is, as lego does) -> download the chain. New flows start for
`--seconds`; in-flight ones finish (bounded). The default levels show both regimes: few clients, where a
server's latency decides (Pebble validates and issues after answering, so its clients wait a poll), and
more, where the two cores are the limit and CPU per order decides. Prints completed orders per second for
both servers and the ratio Keyward/Pebble, and each server's CPU time per order (its process tree, from
/proc): on a shared machine the rates move with the other load, the CPU per order much less. The client's
own CPU per order is printed too: it runs on the same cores (bench.http11 keeps it small). Flows still
running DRAIN_TIMEOUT after the window mean a stalled server; for Pebble its goroutine dump then tells which
locks its handlers wait on, and the level is measured again on a fresh Pebble (PEBBLE_ATTEMPTS). Levels run
in turn, Keyward then Pebble at each, so a level's two figures are taken minutes apart at most.

Both servers resolve names through one pebble-challtestsrv on loopback (every name -> 127.0.0.1) and
validate against the same responder. Keyward, by default: one API process per core, as Pebble (Go) uses
every core, beside one worker process (`keyward serve --workers N --with-worker`), on a temporary SQLite
database; `--keyward-workers 1` measures the embedded default (`make run`: API and worker in one process),
`--keyward-db postgres` a scratch PostgreSQL database (KEYWARD_BENCH_PG_ADMIN_URL, default the local
server), dropped afterwards. The shape is printed with every Keyward figure.

Pebble: `PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0`, TLS with a throwaway certificate made here. Clients
poll every POLL_SECONDS on both, whatever Retry-After says, so neither server's hint decides the figure.
Needs Debian's pebble (scripts/ensure-test-tools installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from bench.http11 import Http11Client, HttpError, Response
from bench.processes import free_port, spawn, stop, wait_port

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.1
FLOW_TIMEOUT = 60.0  # one order flow; past it the flow counts as failed (Pebble can stall under load)
DRAIN_TIMEOUT = 30.0  # after the measuring window, how long in-flight flows may take to finish
# Debian's Pebble deadlocks under load now and then (a read lock taken twice: letsencrypt/pebble#554, still
# in 2.10): a level it stalled at is measured again on a fresh Pebble, this many times in all at most.
PEBBLE_ATTEMPTS = 3


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(obj: Any) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


# ---------------------------------------------------------------- http-01 responder (one for both servers)


class Responder:
    """A minimal HTTP/1.1 server answering /.well-known/acme-challenge/<token> from a dict."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            path = head.split(b" ", 2)[1].decode("ascii", "replace")
            token = path.rsplit("/", 1)[-1]
            body = self.tokens.get(token, "").encode() if "/.well-known/acme-challenge/" in path else b""
            status = b"200 OK" if body else b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Responder:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


# ---------------------------------------------------------------- a small async ACME client (ES256)


class AcmeError(Exception):
    pass


@dataclass
class Target:
    name: str
    directory_url: str
    verify: ssl.SSLContext | bool
    eab: tuple[str, bytes] | None  # (kid, HMAC key)
    directory: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None  # the server process (its CPU time, with its children's, is measured)
    diagnose_stall: Callable[[], str] | None = None  # why it answers no more, asked once flows stall


class Client:
    """One account: ES256 JWS, nonces reused from responses, badNonce retried."""

    def __init__(self, http: Http11Client, target: Target, responder: Responder) -> None:
        self.http, self.target, self.responder = http, target, responder
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        self.jwk = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        self.thumbprint = _b64(hashlib.sha256(canonical).digest())
        self.kid: str | None = None
        self.nonces: list[str] = []
        self.phases: dict[str, float] = {}  # seconds spent per phase, summed over this client's orders

    def _keep_nonce(self, response: Response) -> None:
        nonce = response.headers.get("replay-nonce")
        if nonce:
            self.nonces.append(nonce)

    async def _nonce(self) -> str:
        if self.nonces:
            return self.nonces.pop()
        response = await self.http.head(self.target.directory["newNonce"])
        return response.headers["replay-nonce"]

    def _sign(self, protected: dict[str, Any], payload: Any) -> dict[str, str]:
        protected_b64 = _b64json(protected)
        payload_b64 = "" if payload is None else _b64json(payload)
        der = self.key.sign(f"{protected_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return {"protected": protected_b64, "payload": payload_b64, "signature": _b64(signature)}

    async def post(self, url: str, payload: Any = None, *, jwk: bool = False) -> Response:
        for _ in range(5):
            protected: dict[str, Any] = {"alg": "ES256", "nonce": await self._nonce(), "url": url}
            if jwk:
                protected["jwk"] = self.jwk
            else:
                protected["kid"] = self.kid
            body = json.dumps(self._sign(protected, payload))
            response = await self.http.post(
                url, content=body, headers={"Content-Type": "application/jose+json"}
            )
            self._keep_nonce(response)
            if response.status_code < 400:
                return response
            problem = response.json() if "json" in response.headers.get("content-type", "") else {}
            if problem.get("type") != "urn:ietf:params:acme:error:badNonce":
                raise AcmeError(f"{url}: {response.status_code} {response.text[:300]}")
        raise AcmeError(f"{url}: badNonce five times in a row")

    async def register(self) -> None:
        payload: dict[str, Any] = {"termsOfServiceAgreed": True, "contact": ["mailto:bench@example.com"]}
        url = self.target.directory["newAccount"]
        if self.target.eab is not None:
            kid, key = self.target.eab
            protected = _b64json({"alg": "HS256", "kid": kid, "url": url})
            inner = _b64json(self.jwk)
            mac = hmac.new(key, f"{protected}.{inner}".encode(), hashlib.sha256).digest()
            payload["externalAccountBinding"] = {
                "protected": protected,
                "payload": inner,
                "signature": _b64(mac),
            }
        response = await self.post(url, payload, jwk=True)
        self.kid = response.headers["location"]

    async def _poll(self, url: str, until: set[str]) -> dict[str, Any]:
        while True:
            order = (await self.post(url)).json()
            if order["status"] in until:
                return order
            if order["status"] == "invalid":
                raise AcmeError(f"{url} became invalid: {json.dumps(order.get('error'))[:300]}")
            await asyncio.sleep(POLL_SECONDS)

    async def order(self, name: str) -> str:
        """account -> order -> http-01 -> finalize -> download; returns the PEM chain."""
        mark = time.perf_counter()

        def phase(label: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            self.phases[label] = self.phases.get(label, 0.0) + now - mark
            mark = now

        response = await self.post(
            self.target.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]}
        )
        order_url, order = response.headers["location"], response.json()
        all_valid = True
        for authz_url in order["authorizations"]:
            authz = (await self.post(authz_url)).json()
            if authz["status"] == "valid":
                continue
            challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
            self.responder.tokens[challenge["token"]] = f"{challenge['token']}.{self.thumbprint}"
            answered = (await self.post(challenge["url"], {})).json()
            # As lego does: a challenge the answer already shows valid needs no poll.
            all_valid = all_valid and answered.get("status") == "valid"
        phase("order+challenge")
        if not all_valid:
            await self._poll(order_url, {"ready", "valid"})
        phase("validation")
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        finalized = await self.post(
            order["finalize"], {"csr": _b64(csr.public_bytes(serialization.Encoding.DER))}
        )
        order = finalized.json()
        # As lego does: an order the finalize answer already shows valid needs no poll (a server that
        # issues afterwards, as Pebble does, answers `processing` and is polled).
        if order.get("status") != "valid" or not order.get("certificate"):
            order = await self._poll(order_url, {"valid"})
        phase("finalize")
        pem = (await self.post(order["certificate"])).text
        phase("download")
        if "BEGIN CERTIFICATE" not in pem:
            raise AcmeError(f"download returned no certificate: {pem[:200]}")
        return pem


@dataclass
class Result:
    target: str
    clients: int
    completed: int
    failed: int
    seconds: float
    errors: list[str]
    phases: dict[str, float]  # mean seconds per completed order
    server_cpu: float | None = None  # CPU seconds the server (and its child processes) used meanwhile
    client_cpu: float | None = None  # CPU seconds this process (clients and http-01 responder) used meanwhile
    stalls_before: list[str] = field(default_factory=list)  # earlier attempts at this level that stalled

    @property
    def stalled(self) -> str | None:
        return next((error for error in self.errors if "stalled" in error), None)

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_order(self) -> str:
        """Server CPU milliseconds per completed order: what the machine's other load does not change."""
        return self._per_order(self.server_cpu)

    @property
    def client_cpu_per_order(self) -> str:
        return self._per_order(self.client_cpu)

    def _per_order(self, cpu_seconds: float | None) -> str:
        if cpu_seconds is None or not self.completed:
            return "n/a"
        return f"{1000 * cpu_seconds / self.completed:.1f} ms"


def process_tree_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a process and its descendants, from Linux's /proc (None elsewhere)."""
    if pid is None:
        return None
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        table: dict[int, tuple[int, int]] = {}  # pid -> (parent, CPU ticks)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except (OSError, ValueError, IndexError):
        return None
    if pid not in table:
        return None
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        total += table[current][1]
        pending += [child for child, (parent, _) in table.items() if parent == current]
    return total / ticks


async def run_load(target: Target, responder: Responder, clients: int, seconds: float) -> Result:
    async with Http11Client(target.verify) as http:
        target.directory = (await asyncio.wait_for(http.get(target.directory_url), FLOW_TIMEOUT)).json()
    completed, failed, errors = 0, 0, []
    phases: dict[str, float] = {}
    run_id = uuid.uuid4().hex[:6]
    start = time.perf_counter()
    stop_at = start + seconds

    async def one_client(index: int) -> None:
        nonlocal completed, failed
        # Its own connection, as every real ACME client has (bench.http11: a lean client, see there why).
        async with Http11Client(target.verify) as http:
            client = Client(http, target, responder)
            try:
                await asyncio.wait_for(client.register(), FLOW_TIMEOUT)
            except (AcmeError, HttpError, TimeoutError) as error:
                failed += 1
                errors.append(f"account: {error!r}"[:400])
                return
            serial = 0
            while time.perf_counter() < stop_at:
                serial += 1
                name = f"c{index}-{serial}-{run_id}.bench.example.com"
                try:
                    await asyncio.wait_for(client.order(name), FLOW_TIMEOUT)
                    completed += 1
                except (AcmeError, HttpError, TimeoutError, KeyError) as error:
                    failed += 1
                    errors.append(f"{name}: {error!r}"[:400])
            for label, spent in client.phases.items():
                phases[label] = phases.get(label, 0.0) + spent

    cpu_before, client_before = process_tree_cpu(target.pid), time.process_time()
    tasks = [asyncio.create_task(one_client(index)) for index in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + DRAIN_TIMEOUT)
    elapsed = time.perf_counter() - start
    cpu_after, client_cpu = process_tree_cpu(target.pid), time.process_time() - client_before
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        stalled = f"{len(pending)} clients still busy {DRAIN_TIMEOUT:.0f}s after the window: stalled"
        if target.diagnose_stall is not None:
            stalled += f"; {await asyncio.to_thread(target.diagnose_stall)}"
        errors.append(stalled)
    means = {label: spent / completed for label, spent in phases.items()} if completed else {}
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Result(target.name, clients, completed, failed, elapsed, errors, means, server_cpu, client_cpu)


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def challtestsrv() -> Iterator[str]:
    """DNS on loopback answering every A query with 127.0.0.1; yields host:port."""
    binary = shutil.which("pebble-challtestsrv")
    if binary is None:
        raise SystemExit("pebble-challtestsrv is missing: run scripts/ensure-test-tools")
    dns_port, management_port = free_port(), free_port()
    argv = [binary, "-dns01", f"127.0.0.1:{dns_port}", "-management", f"127.0.0.1:{management_port}"]
    argv += ["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(management_port, process, "pebble-challtestsrv")
        yield f"127.0.0.1:{dns_port}"
    finally:
        stop(process)


async def _prepare_keyward(database_url: str, kek: bytes, public_url: str) -> tuple[str, str, bytes]:
    """A demo-like organization, CA hierarchy, policy, profile and application with ACME + EAB on."""
    from tortoise import Tortoise

    from core import application as application_service
    from core import runtime
    from core.authz import Actor
    from core.bootstrap import init_organization
    from core.ca import create_intermediate_ca, create_root_ca
    from core.config import Settings
    from core.db import generate_schema, tortoise_config
    from models import Application, ApplicationProfile, CertificatePolicy, CertificateProfile

    runtime.configure(Settings(database_url=database_url, public_url=public_url), kek=kek)
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)
    try:
        await generate_schema()
        org, _, _ = await init_organization(org_name="bench", admin_email="admin@bench.example.com")
        system = Actor.system(org.id, "bench")
        root = await create_root_ca(
            actor=system,
            name="bench-root",
            subject="CN=Bench Root,O=Keyward Bench",
            key_algorithm="EC_P256",
            validity="10y",
            path_length=None,
        )
        issuing = await create_intermediate_ca(
            actor=system,
            name="bench-issuing",
            parent_ca_id=root.id,
            subject="CN=Bench Issuing,O=Keyward Bench",
            key_algorithm="EC_P256",
            validity="5y",
            path_length=0,
        )
        policy = await CertificatePolicy.create(
            organization_id=org.id,
            name="bench",
            rules={
                "subject": [{"type": "CN", "allowed": ["**.example.com"]}],
                "sans": [{"type": "DNS", "allowed": ["**.example.com"]}],
                "extendedKeyUsages": {"allowed": ["serverAuth", "clientAuth"]},
                "maxValidity": "90d",
            },
        )
        profile = await CertificateProfile.create(
            organization_id=org.id,
            name="bench",
            ca_id=issuing.id,
            policy_id=policy.id,
            default_validity="90d",
            default_extended_key_usages=["serverAuth"],
        )
        application = await Application.create(organization_id=org.id, name="bench")
        await ApplicationProfile.create(application_id=application.id, profile_id=profile.id)
        # ACME on with EAB required, credentials revealed, as an application Admin does in GraphQL.
        attachment = await application_service.enable_acme(
            actor=system, application_id=application.id, profile_id=profile.id
        )
        kid = application_service.acme_eab_kid(actor=system, attachment=attachment, organization_id=org.id)
        hmac_b64 = application_service.acme_eab_hmac_key(
            actor=system, attachment=attachment, organization_id=org.id
        )
        assert kid and hmac_b64
        hmac_key = base64.urlsafe_b64decode(hmac_b64 + "=" * (-len(hmac_b64) % 4))
        directory = f"{public_url}/acme/applications/{application.id}/profiles/{profile.id}/directory"
        return directory, kid, hmac_key
    finally:
        await Tortoise.close_connections()


def _prepare_keyward_apart(database_url: str, kek: bytes, public_url: str) -> tuple[str, str, bytes]:
    """_prepare_keyward, run in a process of its own: it sets Keyward's settings and Tortoise's connections,
    which belong to whoever runs this bench (a test drives it too), not to the bench."""
    return asyncio.run(_prepare_keyward(database_url, kek, public_url))


PG_ADMIN_URL = os.environ.get("KEYWARD_BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True)
class Shape:
    """How Keyward runs in this bench: its database and number of API processes."""

    db: str = "sqlite"
    workers: int = 1

    def describe(self) -> str:
        processes = "1 process" if self.workers == 1 else f"{self.workers} API processes + 1 worker process"
        return f"{'SQLite' if self.db == 'sqlite' else 'PostgreSQL'}, {processes}"


@contextlib.asynccontextmanager
async def keyward_server(
    workdir: Path, dns: str, http01_port: int, profile_file: Path | None = None, shape: Shape = Shape()
) -> AsyncIterator[Target]:
    port = free_port()
    scratch: str | None = None
    if shape.db == "postgres":
        from core.db import create_scratch_database, drop_scratch_database

        database_url = scratch = await create_scratch_database(PG_ADMIN_URL, prefix="keyward_acme_bench")
    else:
        database_url = f"sqlite://{workdir / 'keyward.sqlite3'}"
    try:
        async with _keyward_process(workdir, dns, http01_port, profile_file, shape, port, database_url) as t:
            yield t
    finally:
        if scratch is not None:
            await drop_scratch_database(PG_ADMIN_URL, scratch)


@contextlib.asynccontextmanager
async def _keyward_process(
    workdir: Path,
    dns: str,
    http01_port: int,
    profile_file: Path | None,
    shape: Shape,
    port: int,
    database_url: str,
) -> AsyncIterator[Target]:
    public_url = f"http://127.0.0.1:{port}"
    kek = os.urandom(32)
    kek_file = workdir / "kek"
    kek_file.write_text(base64.b64encode(kek).decode() + "\n")
    kek_file.chmod(0o600)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        prepared = asyncio.get_running_loop().run_in_executor(
            child, _prepare_keyward_apart, database_url, kek, public_url
        )
        directory, kid, hmac_key = await prepared
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")},
        "KEYWARD_DATABASE_URL": database_url,
        "KEYWARD_PUBLIC_URL": public_url,
        "KEYWARD_KEK_FILE": str(kek_file),
        "KEYWARD_LOG_LEVEL": "warning",
        "KEYWARD_ACME_DNS_RESOLVER": dns,
        "KEYWARD_ACME_HTTP01_PORT": str(http01_port),
        "KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS": "true",
    }
    argv = [sys.executable]
    if profile_file is not None:
        argv += ["-m", "cProfile", "-o", str(profile_file)]
    argv += ["-m", "api.cli", "serve", "--with-worker", "--host", "127.0.0.1", "--port", str(port)]
    if shape.workers != 1:
        argv += ["--workers", str(shape.workers)]
    log = (workdir / "keyward.log").open("wb")
    process = spawn(argv, env=env, log=log)
    try:
        await asyncio.to_thread(wait_port, port, process, "keyward serve", sockets=shape.workers)
        yield Target("keyward", directory, False, (kid, hmac_key), pid=process.pid)
    finally:
        await asyncio.to_thread(stop, process)
        log.close()


def _pebble_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway root and a localhost/127.0.0.1 server certificate from the pki package."""
    from pki.certificate import IssuerUrls, build_root_ca, certificate_pem, sign_leaf_certificate
    from pki.key import KeyAlgorithm, generate_private_key, serialize_private_key
    from pki.name import build_name
    from pki.san import SubjectAltName

    now = datetime.now(UTC)
    root_key = generate_private_key(KeyAlgorithm.EC_P256)
    root = build_root_ca(
        key=root_key,
        subject=build_name([("CN", "bench pebble TLS root")]),
        not_after=now + timedelta(days=2),
        path_length=0,
    )
    leaf_key = generate_private_key(KeyAlgorithm.EC_P256)
    unused = "http://127.0.0.1/unused"
    leaf = sign_leaf_certificate(
        issuer_cert=root,
        issuer_key=root_key,
        public_key=leaf_key.public_key(),
        subject=build_name([("CN", "localhost")]),
        sans=[SubjectAltName("DNS", "localhost"), SubjectAltName("IP", "127.0.0.1")],
        key_usages=frozenset(),
        extended_key_usages=frozenset({"serverAuth"}),
        not_after=now + timedelta(days=1),
        urls=IssuerUrls(ca_issuers=unused, ocsp=unused, crl=unused),
    )
    paths = workdir / "pebble-root.pem", workdir / "pebble-cert.pem", workdir / "pebble-key.pem"
    paths[0].write_text(certificate_pem(root))
    paths[1].write_text(certificate_pem(leaf))
    paths[2].write_bytes(serialize_private_key(leaf_key))
    return paths


def pebble_lock_waits(log: str) -> str:
    """From a Go goroutine dump: how many goroutines wait for a lock, and on which of Pebble's functions."""
    blocks = log[log.find("goroutine ") :].split("\n\n")
    waiting = [block for block in blocks if "sync.runtime_Semacquire" in block]
    where: dict[str, int] = {}
    for block in waiting:
        frames = re.findall(r"^github\.com/letsencrypt/pebble/[^\s(]*?([\w.]*\(\*?\w+\)\.\w+)", block, re.M)
        if frames:
            where[frames[0]] = where.get(frames[0], 0) + 1
    if not waiting:
        return "its goroutine dump shows no goroutine waiting for a lock"
    top = ", ".join(f"{count} in {name}" for name, count in sorted(where.items(), key=lambda kv: -kv[1])[:3])
    return f"{len(waiting)} of its {len(blocks)} goroutines wait for a lock ({top}): Pebble deadlocked"


@contextlib.asynccontextmanager
async def pebble_server(
    workdir: Path, dns: str, http01_port: int, profile_file: Path | None = None
) -> AsyncIterator[Target]:
    binary = shutil.which("pebble")
    if binary is None:
        raise SystemExit("pebble is missing: run scripts/ensure-test-tools")
    root, cert, key = _pebble_tls(workdir)
    port, management = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http01_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config_file = workdir / "pebble-config.json"
    config_file.write_text(json.dumps(config))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    log = (workdir / "pebble.log").open("wb")
    process = spawn([binary, "-config", str(config_file), "-dnsserver", dns], env=env, log=log)

    def diagnose_stall() -> str:
        """Pebble's goroutine dump (SIGQUIT ends it) says where its request handlers wait."""
        process.send_signal(signal.SIGQUIT)
        process.wait(timeout=10)
        return pebble_lock_waits((workdir / "pebble.log").read_text(errors="replace"))

    try:
        await asyncio.to_thread(wait_port, port, process, "pebble")
        context = ssl.create_default_context(cafile=str(root))
        url = f"https://127.0.0.1:{port}/dir"
        yield Target("pebble", url, context, None, pid=process.pid, diagnose_stall=diagnose_stall)
    finally:
        await asyncio.to_thread(stop, process)
        log.close()


# ---------------------------------------------------------------- driver


def _profile_summary(path: Path, limit: int = 30) -> str:
    """The Keyward server's hottest functions by own time (cProfile, whole run of that server)."""
    import io
    import pstats

    if not path.exists():
        return f"no profile written at {path}"
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(limit)
    text = out.getvalue()
    return "Keyward server profile (tottime):\n" + text[text.find("   ncalls") :]


def _report(name: str, level: Path, result: Result, profile_file: Path | None) -> None:
    print(f"[{name}] {_line(result)}", file=sys.stderr)
    spent = ", ".join(f"{label} {mean:.3f}s" for label, mean in result.phases.items())
    print(f"    mean per order: {spent}", file=sys.stderr)
    cpu = f"server {result.cpu_per_order}, client {result.client_cpu_per_order}"
    print(f"    CPU per order: {cpu}", file=sys.stderr)
    for error in result.errors[:3]:
        print(f"    {error}", file=sys.stderr)
    if name == "keyward" and (result.failed or result.errors):
        log = (level / "keyward.log").read_text()[-2000:]
        print(f"    server log: {log}", file=sys.stderr)
    if profile_file is not None:
        print(_profile_summary(profile_file))


def _line(result: Result) -> str:
    return (
        f"{result.target:<8} {result.clients:>7} {result.completed:>9} {result.failed:>7} "
        f"{result.seconds:>8.1f} {result.rate:>9.2f}"
    )


async def _main(
    clients: list[int], seconds: float, with_pebble: bool, profile: bool, shape: Shape = Shape()
) -> int:
    results: dict[tuple[str, int], Result] = {}
    print(f"Keyward runs as: {shape.describe()} (machine: {os.cpu_count()} CPUs, shared with this client)")
    with tempfile.TemporaryDirectory(prefix="keyward-acme-bench-") as tmp, challtestsrv() as dns:
        workdir = Path(tmp)
        async with Responder() as responder:
            servers: list[tuple[str, Callable[..., contextlib.AbstractAsyncContextManager[Target]]]] = [
                ("keyward", keyward_server)
            ]
            if with_pebble:
                servers.append(("pebble", pebble_server))
            # Level by level, each server in turn: the host's speed drifts over minutes, so the two figures
            # of a level are taken close together.
            for n in clients:
                for name, server in servers:
                    attempts = PEBBLE_ATTEMPTS if name == "pebble" else 1
                    stalls: list[str] = []
                    for attempt in range(1, attempts + 1):
                        # A fresh server for every level and attempt: a second run on a Pebble that stalled
                        # would stall at once.
                        level = workdir / f"{name}-{n}-{attempt}"
                        level.mkdir()
                        profile_file = level / "server.prof" if profile and name == "keyward" else None
                        extra = {"shape": shape} if name == "keyward" else {}
                        async with server(level, dns, responder.port, profile_file, **extra) as target:
                            print(f"[{name}] {n} clients for {seconds:.0f}s ...", file=sys.stderr)
                            result = await run_load(target, responder, n, seconds)
                        result.stalls_before = stalls
                        _report(name, level, result, profile_file)
                        if result.stalled is None or attempt == attempts:
                            break
                        stalls = [*stalls, result.stalled]
                        print(
                            f"[{name}] stalled: again on a fresh {name} ({attempt + 1} of {attempts})",
                            file=sys.stderr,
                        )
                    results[(name, n)] = result
    header = f"{'server':<8} {'clients':>7} {'completed':>9} {'failed':>7} {'seconds':>8} {'orders/s':>9}"
    print(header)
    print("-" * len(header))
    for result in results.values():
        print(_line(result))
    if with_pebble:
        print()
        for n in clients:
            ours, theirs = results[("keyward", n)], results[("pebble", n)]
            ratio = f"{ours.rate / theirs.rate:.2f}x" if theirs.rate else "inf (Pebble completed none)"
            rates = f"Keyward ({shape.describe()}) {ours.rate:.2f}/s, Pebble {theirs.rate:.2f}/s"
            print(f"{n:>3} clients: {rates}, Keyward/Pebble {ratio}")
            cpu = f"Keyward {ours.cpu_per_order}, Pebble {theirs.cpu_per_order}"
            print(f"{'':>3}          server CPU per order: {cpu}")
            cpu = f"with Keyward {ours.client_cpu_per_order}, with Pebble {theirs.client_cpu_per_order}"
            print(f"{'':>3}          client CPU per order: {cpu}")
            for label, result in (("Keyward", ours), ("Pebble", theirs)):
                if result.stalls_before:
                    times = len(result.stalls_before)
                    first = result.stalls_before[0]
                    again = f"stalled {times} time(s) here, measured on a fresh one"
                    print(f"{'':>3}          {label} {again}: {first}")
                if result.failed or result.stalled:
                    trouble = f"{result.failed} flows failed" + (
                        f", {result.stalled}" if result.stalled else ""
                    )
                    print(f"{'':>3}          {label}: {trouble}: this ratio does not compare speed")
    return 1 if any(r.completed == 0 for (t, _), r in results.items() if t == "keyward") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", default="8,16,24,64", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window per level and server")
    parser.add_argument("--no-pebble", action="store_true", help="measure Keyward alone")
    parser.add_argument("--profile", action="store_true", help="run the Keyward server under cProfile")
    parser.add_argument(
        "--keyward-db", choices=("sqlite", "postgres"), default="sqlite", help="Keyward's database"
    )
    parser.add_argument(
        "--keyward-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Keyward API processes (default: one per core; 1: API and worker in one process)",
    )
    args = parser.parse_args(argv)
    if args.profile and args.keyward_workers > 1:
        parser.error("--profile profiles one process: use it with --keyward-workers 1")
    clients = [int(part) for part in args.clients.split(",") if part.strip()]
    shape = Shape(db=args.keyward_db, workers=args.keyward_workers)
    return asyncio.run(_main(clients, args.seconds, not args.no_pebble, args.profile, shape))


if __name__ == "__main__":
    raise SystemExit(main())
