"""Issuance throughput against the raw `cryptography` signing rate measured in the same run.

    .venv/bin/python -m bench.issuance [--n 300] [--backends sqlite,postgres] [--profile]

For a P-256 and an RSA-2048 issuing CA, on SQLite (temp file) and PostgreSQL (a temp database on
127.0.0.1:5432), it measures (a) `cryptography` signing a prepared leaf with the CA key in a loop,
(b) core.issuance.issue_certificate in-process from prepared CSRs, one after another, and (c) the
issueCertificate mutation over HTTP to one uvicorn process on loopback, 8 requests in flight; then
prints each rate and its ratio to (a). `--profile` adds cProfile summaries of (b) and of the server in (c).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench.processes import free_port

POSTGRES_ADMIN_URL = os.environ.get("KEYWARD_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
CONCURRENCY = 8
ISSUE = (
    "mutation($input: IssueCertificateInput!) { issueCertificate(input: $input) "
    "{ certificate { id serialNumber } } }"
)


@dataclass
class Cell:
    backend: str
    ca: str
    raw: float
    in_process: float
    http: float


@dataclass
class Fixture:
    """One CA hierarchy with policy, profile and an application, and an Operator's token."""

    ca_algorithm: str
    application_id: uuid.UUID
    profile_id: uuid.UUID
    ca_id: uuid.UUID
    token: str


# ---------------------------------------------------------------- database set-up


async def _make_fixture(organization_id: uuid.UUID, ca_algorithm: str) -> Fixture:
    from core import authn
    from core.authz import Actor
    from core.ca import create_intermediate_ca, create_root_ca
    from models import (
        Application,
        ApplicationMembership,
        ApplicationProfile,
        CertificatePolicy,
        CertificateProfile,
        Principal,
        ProductMembership,
    )
    from models.enums import ApplicationRole, PrincipalKind, ProductRole, TokenKind

    system = Actor.system(organization_id, "bench")
    label = ca_algorithm.lower()
    root = await create_root_ca(
        actor=system,
        name=f"bench-root-{label}",
        subject=f"CN=Bench Root {ca_algorithm},O=Keyward Bench",
        key_algorithm=ca_algorithm,
        validity="10y",
        path_length=None,
    )
    issuing = await create_intermediate_ca(
        actor=system,
        name=f"bench-issuing-{label}",
        parent_ca_id=root.id,
        subject=f"CN=Bench Issuing {ca_algorithm},O=Keyward Bench",
        key_algorithm=ca_algorithm,
        validity="5y",
        path_length=0,
    )
    policy = await CertificatePolicy.create(
        organization_id=organization_id,
        name=f"bench-{label}",
        rules={
            "subject": [{"type": "CN", "allowed": ["**.example.com"]}],
            "sans": [{"type": "DNS", "allowed": ["**.example.com"]}],
            "extendedKeyUsages": {"allowed": ["serverAuth", "clientAuth"]},
            "maxValidity": "397d",
        },
    )
    profile = await CertificateProfile.create(
        organization_id=organization_id,
        name=f"bench-{label}",
        ca_id=issuing.id,
        policy_id=policy.id,
        default_validity="90d",
        default_extended_key_usages=["serverAuth"],
    )
    application = await Application.create(organization_id=organization_id, name=f"bench-{label}")
    await ApplicationProfile.create(application_id=application.id, profile_id=profile.id, api_enabled=True)
    operator = await Principal.create(
        organization_id=organization_id, kind=PrincipalKind.MACHINE, name=f"bench-operator-{label}"
    )
    await ProductMembership.create(
        organization_id=organization_id, principal_id=operator.id, role=ProductRole.MEMBER
    )
    await ApplicationMembership.create(
        application_id=application.id, principal_id=operator.id, role=ApplicationRole.OPERATOR
    )
    token, _ = await authn.create_token(principal=operator, kind=TokenKind.API, name="bench")
    return Fixture(ca_algorithm, application.id, profile.id, issuing.id, token)


# ---------------------------------------------------------------- (a) raw signing


async def _raw_signing_rate(fixture: Fixture, seconds: float) -> float:
    """Leaves per second `cryptography` signs with the CA key: same extensions as ours, built once."""
    from core.ca import signing_material
    from models import CertificateAuthority
    from pki.key import generate_private_key, hash_for
    from pki.usage import key_usage_extension

    material = await signing_material(await CertificateAuthority.get(id=fixture.ca_id))
    leaf_key = generate_private_key("EC_P256")  # type: ignore[arg-type]
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "www.example.com")]))
        .issuer_name(material.certificate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage_extension(frozenset({"digitalSignature"})), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.com")]), critical=False)
    )
    key, algorithm = material.private_key, hash_for(material.private_key)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            builder.sign(key, algorithm)
        count += 50
    return count / elapsed


# ---------------------------------------------------------------- (b) in-process


def _csrs(n: int) -> list[str]:
    """P-256 CSRs made before timing: the client's work is not the server's."""
    from pki.csr import build_csr
    from pki.key import KeyAlgorithm, generate_private_key
    from pki.san import SubjectAltName

    csrs = []
    for index in range(n):
        name = f"host{index}.bench.example.com"
        csr = build_csr(
            key=generate_private_key(KeyAlgorithm.EC_P256),
            subject=[("CN", name)],
            sans=[SubjectAltName("DNS", name)],
        )
        csrs.append(csr.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return csrs


async def _in_process_rate(fixture: Fixture, csrs: list[str], profiler: cProfile.Profile | None) -> float:
    from core import authn
    from core.issuance import issue_certificate
    from models import ApiToken

    token_row = await ApiToken.get(token_hash=authn.hash_token(fixture.token)).prefetch_related("principal")
    actor = await authn.load_actor(token_row.principal, source_address="127.0.0.1")
    # Warm the caches (CA material, policy rules) as a running server has them warm.
    await issue_certificate(
        actor=actor, application_id=fixture.application_id, profile_id=fixture.profile_id, csr=csrs[0]
    )
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    for csr in csrs[1:]:
        await issue_certificate(
            actor=actor, application_id=fixture.application_id, profile_id=fixture.profile_id, csr=csr
        )
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    return (len(csrs) - 1) / elapsed


# ---------------------------------------------------------------- (c) over HTTP


def _start_server(
    database_url: str, kek_file: str, port: int, profile_file: str | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KEYWARD_DATABASE_URL": database_url,
        "KEYWARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "KEYWARD_KEK_FILE": kek_file,
        "KEYWARD_LOG_LEVEL": "warning",
    }
    command = [sys.executable]
    if profile_file:
        command += ["-m", "cProfile", "-o", profile_file]
    command += ["-m", "bench.issuance", "serve", "--port", str(port)]
    return subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1])


async def _wait_ready(client: httpx.AsyncClient, server: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError(f"the benchmark server exited with {server.returncode}")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the benchmark server did not start within 15 s")


async def _http_rate(fixture: Fixture, csrs: list[str], port: int) -> float:
    headers = {"Authorization": f"Bearer {fixture.token}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:

        async def one(csr: str) -> None:
            variables = {
                "input": {
                    "applicationId": str(fixture.application_id),
                    "profileId": str(fixture.profile_id),
                    "csr": csr,
                }
            }
            response = await client.post(
                "/graphql", json={"query": ISSUE, "variables": variables}, headers=headers
            )
            body = response.json()
            if response.status_code != 200 or body.get("errors"):
                raise RuntimeError(f"issuance over HTTP failed: {response.status_code} {body}")

        for csr in csrs[:CONCURRENCY]:  # warm-up: connections, caches
            await one(csr)
        queue = list(csrs[CONCURRENCY:])
        count = len(queue)

        async def worker() -> None:
            while queue:
                await one(queue.pop())

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return count / (time.perf_counter() - start)


# ---------------------------------------------------------------- driver


async def _run_backend(
    backend: str, n: int, workdir: Path, profile: bool, profiles: dict[str, str]
) -> list[Cell]:
    from tortoise import Tortoise

    from core import runtime
    from core.bootstrap import init_organization
    from core.config import Settings
    from core.db import create_scratch_database, drop_scratch_database, generate_schema, tortoise_config

    if backend == "postgres":
        url = await create_scratch_database(POSTGRES_ADMIN_URL, prefix="keyward_bench")
    else:
        url = f"sqlite://{workdir / 'bench.sqlite3'}"
    port = free_port()
    kek_file = workdir / f"kek-{backend}"
    kek = os.urandom(32)
    kek_file.write_text(__import__("base64").b64encode(kek).decode() + "\n")
    kek_file.chmod(0o600)
    runtime.configure(
        Settings(database_url=url, public_url=f"http://127.0.0.1:{port}", kek_file=str(kek_file)), kek=kek
    )
    cells: list[Cell] = []
    try:
        await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)
        await generate_schema()
        org, _, _ = await init_organization(org_name=f"bench-{backend}", admin_email=f"admin@{backend}.bench")
        fixtures = [await _make_fixture(org.id, algorithm) for algorithm in ("EC_P256", "RSA_2048")]
        print(f"[{backend}] preparing {2 * n} CSRs per CA ...", file=sys.stderr)
        measured: dict[str, tuple[float, float]] = {}
        for fixture in fixtures:
            raw = await _raw_signing_rate(fixture, seconds=1.5)
            profiler = cProfile.Profile() if profile else None
            in_process = await _in_process_rate(fixture, _csrs(n + 1), profiler)
            if profiler is not None:
                profiles[f"in-process {backend} {fixture.ca_algorithm}"] = _summary(pstats.Stats(profiler))
            measured[fixture.ca_algorithm] = (raw, in_process)
            print(
                f"[{backend}] {fixture.ca_algorithm}: raw {raw:.0f}/s, in-process {in_process:.0f}/s",
                file=sys.stderr,
            )
        http_csrs = {fixture.ca_algorithm: _csrs(n + CONCURRENCY) for fixture in fixtures}
        await Tortoise.close_connections()
        profile_file = str(workdir / f"server-{backend}.prof") if profile else None
        server = _start_server(url, str(kek_file), port, profile_file)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
                await _wait_ready(probe, server)
            for fixture in fixtures:
                http = await _http_rate(fixture, http_csrs[fixture.ca_algorithm], port)
                raw, in_process = measured[fixture.ca_algorithm]
                print(f"[{backend}] {fixture.ca_algorithm}: HTTP {http:.0f}/s", file=sys.stderr)
                cells.append(Cell(backend, fixture.ca_algorithm, raw, in_process, http))
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if profile_file:
            try:
                profiles[f"HTTP server {backend} (both CAs)"] = _summary(pstats.Stats(profile_file))
            except OSError as error:
                profiles[f"HTTP server {backend}"] = f"no profile written: {error}"
    finally:
        await Tortoise.close_connections()
        if backend == "postgres":
            await drop_scratch_database(POSTGRES_ADMIN_URL, url)
    return cells


def _summary(stats: pstats.Stats, limit: int = 28) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(limit)
    text = out.getvalue()
    return text[text.find("   ncalls") :] if "   ncalls" in text else text


def _table(cells: list[Cell]) -> str:
    header = (
        f"{'database':<10} {'CA':<9} {'raw sign/s':>11} "
        f"{'in-process/s':>13} {'ratio':>7} {'HTTP/s':>8} {'ratio':>7}"
    )
    lines = [header, "-" * len(header)]
    for c in cells:
        lines.append(
            f"{c.backend:<10} {c.ca:<9} {c.raw:>11.0f} {c.in_process:>13.1f} {c.in_process / c.raw:>7.3f} "
            f"{c.http:>8.1f} {c.http / c.raw:>7.3f}"
        )
    return "\n".join(lines)


def _serve(port: int) -> None:
    """The server process of (c): the real app under one uvicorn process."""
    import uvicorn

    from api.app import create_app
    from core import runtime
    from core.config import load_settings

    runtime.configure(load_settings())
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _run_in_child(backend: str, n: int, workdir: Path, profile: bool) -> tuple[list[Cell], dict[str, str]]:
    """Each database in its own process: Tortoise keeps per-dialect state a second init does not reset."""
    command = [
        sys.executable,
        "-m",
        "bench.issuance",
        "backend",
        backend,
        "--n",
        str(n),
        "--workdir",
        str(workdir),
    ]
    if profile:
        command.append("--profile")
    result = subprocess.run(
        command, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1], check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"the {backend} benchmark failed (exit {result.returncode})")
    data = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return [Cell(**cell) for cell in data["cells"]], data["profiles"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.issuance", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) the server process of the HTTP measurement")
    serve.add_argument("--port", type=int, required=True)
    child = sub.add_parser("backend", help="(internal) measure one database, print JSON")
    child.add_argument("backend", choices=["sqlite", "postgres"])
    child.add_argument("--n", type=int, required=True)
    child.add_argument("--workdir", required=True)
    child.add_argument("--profile", action="store_true")
    parser.add_argument("--n", type=int, default=300, help="issuances per cell and path (default 300)")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--profile", action="store_true", help="print cProfile summaries of both paths")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the HTTP target is not met")
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args.port)
        return 0
    if args.command == "backend":
        profiles: dict[str, str] = {}
        cells = asyncio.run(_run_backend(args.backend, args.n, Path(args.workdir), args.profile, profiles))
        print(json.dumps({"cells": [dataclasses.asdict(cell) for cell in cells], "profiles": profiles}))
        return 0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := set(backends) - {"sqlite", "postgres"}:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    all_cells: list[Cell] = []
    all_profiles: dict[str, str] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keyward-bench-") as tmp:
        for backend in backends:
            cells, profiles = _run_in_child(backend, args.n, Path(tmp), args.profile)
            all_cells += cells
            all_profiles.update(profiles)
    print()
    print(
        f"Keyward issuance benchmark: N={args.n} per cell, "
        f"HTTP with {CONCURRENCY} in flight, one server process"
    )
    print(_table(all_cells))
    worst = min(c.http / c.raw for c in all_cells)
    print(f"\nlowest HTTP ratio {worst:.3f} (target >= 0.05): {'met' if worst >= 0.05 else 'NOT met'}")
    print(f"total {time.perf_counter() - started:.0f} s")
    for title, text in all_profiles.items():
        print(f"\n=== cProfile, {title} ===\n{text}")
    return 1 if args.strict and worst < 0.05 else 0


if __name__ == "__main__":
    sys.exit(main())
