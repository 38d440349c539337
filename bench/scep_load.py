"""SCEP throughput: Keyward against Debian's micromdm `scepserver`, in the same run, with the same client.

    .venv/bin/python -m bench.scep_load [--count 48] [--concurrency 8] [--no-reference]

For each server, `--count` enrollments (in `--rounds` rounds that alternate between the servers) by
Debian's `scepclient` (each a fresh process, a fresh RSA-2048
key, a static challenge), at most `--concurrency` at once. Prints enrollments per second for both servers
and the ratio Keyward/scepserver (goal >= 1.0); failed enrollments are counted, not timed away.

Keyward: one `keyward serve` process on a temporary SQLite database, an RSA-2048 root and issuing CA, SCEP
enabled with a static challenge. scepserver: its own depot (`scepserver ca -init`, RSA-2048) and the same
challenge, on loopback. Needs Debian's scep (scripts/ensure-test-tools installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.processes import free_port, spawn, stop, wait_port

CHALLENGE = "bench-static-challenge"
ENROLL_TIMEOUT = 120.0


@dataclass
class Result:
    name: str
    ok: int
    failed: int
    seconds: float
    first_error: str | None

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


async def _enroll(url: str, workdir: Path, index: int) -> str | None:
    """One scepclient enrollment; None on success, else its last output line."""
    directory = workdir / f"client-{index}"
    directory.mkdir()
    process = await asyncio.create_subprocess_exec(
        "scepclient",
        "-server-url",
        url,
        "-private-key",
        str(directory / "key.pem"),
        "-certificate",
        str(directory / "client.pem"),
        "-cn",
        f"bench-{index}.example.com",
        "-challenge",
        CHALLENGE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(ENROLL_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return "timed out"
    if process.returncode == 0 and (directory / "client.pem").exists():
        return None
    lines = output.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit {process.returncode}"


async def measure(name: str, url: str, count: int, concurrency: int, workdir: Path) -> Result:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    # One warm-up enrollment (caches, connections), not counted.
    await _enroll(url, workdir, -1)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> str | None:
        async with gate:
            return await _enroll(url, workdir, index)

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(index) for index in range(count)))
    seconds = time.perf_counter() - started
    errors = [outcome for outcome in outcomes if outcome is not None]
    return Result(name, count - len(errors), len(errors), seconds, errors[0] if errors else None)


async def _prepare_keyward(database_url: str, kek: bytes, public_url: str) -> str:
    """An organization, an RSA-2048 root and issuing CA, a policy for scepclient's subject, an application
    with the profile attached and SCEP on with a static challenge; returns the pkiclient.exe URL."""
    from tortoise import Tortoise

    from core import runtime
    from core import scep as scep_service
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
            subject="CN=Bench SCEP Root,O=Keyward Bench",
            key_algorithm="RSA_2048",
            validity="10y",
            path_length=None,
        )
        issuing = await create_intermediate_ca(
            actor=system,
            name="bench-issuing",
            parent_ca_id=root.id,
            subject="CN=Bench SCEP Issuing,O=Keyward Bench",
            key_algorithm="RSA_2048",
            validity="5y",
            path_length=0,
        )
        policy = await CertificatePolicy.create(
            organization_id=org.id,
            name="bench-scep",
            rules={
                "subject": [
                    {"type": "CN", "allowed": ["**.example.com"]},
                    {"type": "O"},
                    {"type": "OU"},
                    {"type": "C"},
                ],
                "sans": [{"type": "DNS", "allowed": ["**.example.com"]}],
                "maxValidity": "397d",
            },
        )
        profile = await CertificateProfile.create(
            organization_id=org.id,
            name="bench-scep",
            ca_id=issuing.id,
            policy_id=policy.id,
            default_validity="365d",
            default_key_algorithm="RSA_2048",
        )
        application = await Application.create(organization_id=org.id, name="bench")
        await ApplicationProfile.create(application_id=application.id, profile_id=profile.id)
        attachment = await scep_service.enable_scep(
            actor=system,
            application_id=application.id,
            profile_id=profile.id,
            challenge_mode="static",
            static_challenge=CHALLENGE,
        )
        return scep_service.scep_url(attachment)
    finally:
        await Tortoise.close_connections()


@contextlib.asynccontextmanager
async def keyward_server(
    workdir: Path, profile_file: Path | None = None, postgres: str | None = None
) -> AsyncIterator[str]:
    """`postgres`: an admin URL; Keyward then runs on a scratch database there (dropped afterwards)."""
    from core.db import create_scratch_database, drop_scratch_database

    if postgres is not None:
        database_url = await create_scratch_database(postgres, prefix="keyward_scep_bench")
        try:
            async with _keyward_process(workdir, database_url, profile_file) as url:
                yield url
        finally:
            await drop_scratch_database(postgres, database_url)
    else:
        async with _keyward_process(workdir, f"sqlite://{workdir / 'keyward.sqlite3'}", profile_file) as url:
            yield url


@contextlib.asynccontextmanager
async def _keyward_process(workdir: Path, database_url: str, profile_file: Path | None) -> AsyncIterator[str]:
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    kek = os.urandom(32)
    kek_file = workdir / "kek"
    kek_file.write_text(base64.b64encode(kek).decode() + "\n")
    kek_file.chmod(0o600)
    url = await _prepare_keyward(database_url, kek, public_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")},
        "KEYWARD_DATABASE_URL": database_url,
        "KEYWARD_PUBLIC_URL": public_url,
        "KEYWARD_KEK_FILE": str(kek_file),
        "KEYWARD_LOG_LEVEL": "warning",
    }
    argv = [sys.executable]
    if profile_file is not None:
        argv += ["-m", "cProfile", "-o", str(profile_file)]
    argv += ["-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / "keyward.log").open("wb") as log:
        process = spawn(argv, env=env, log=log)
        try:
            await asyncio.to_thread(wait_port, port, process, "keyward serve")
            yield url
        finally:
            await asyncio.to_thread(stop, process)


@contextlib.contextmanager
def scepserver(workdir: Path) -> Iterator[str]:
    depot = workdir / "depot"
    subprocess.run(
        ["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    argv = [
        "scepserver",
        "-depot",
        str(depot),
        "-port",
        str(port),
        "-challenge",
        CHALLENGE,
        "-allowrenew",
        "0",
    ]
    with (workdir / "scepserver.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port, process, "scepserver")
            yield f"http://127.0.0.1:{port}/scep"
        finally:
            stop(process)


def _report(results: list[Result], concurrency: int) -> None:
    print(f"SCEP enrollments by scepclient, {concurrency} at once (a fresh RSA-2048 key each)")
    print(f"{'server':<12} {'ok':>5} {'failed':>7} {'seconds':>8} {'enroll/s':>9}")
    for result in results:
        print(
            f"{result.name:<12} {result.ok:>5} {result.failed:>7} {result.seconds:>8.2f} {result.rate:>9.2f}"
        )
        if result.first_error:
            print(f"  first failure: {result.first_error}")
    by_name = {result.name: result for result in results}
    if "scepserver" in by_name and by_name["scepserver"].rate > 0:
        ratio = by_name["keyward"].rate / by_name["scepserver"].rate
        print(f"ratio keyward/scepserver: {ratio:.2f} (goal >= 1.0)")


def _merge(name: str, parts: list[Result]) -> Result:
    errors = [part.first_error for part in parts if part.first_error]
    return Result(
        name,
        sum(part.ok for part in parts),
        sum(part.failed for part in parts),
        sum(part.seconds for part in parts),
        errors[0] if errors else None,
    )


async def main_async(args: argparse.Namespace) -> int:
    for tool in ("scepclient", "scepserver"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run scripts/ensure-test-tools", file=sys.stderr)
            return 2
    keyward_parts: list[Result] = []
    reference_parts: list[Result] = []
    per_round = max(1, args.count // args.rounds)
    with tempfile.TemporaryDirectory(prefix="keyward-scep-bench-") as tmp:
        workdir = Path(tmp)
        for sub in ("keyward", "scepserver"):
            (workdir / sub).mkdir()
        async with contextlib.AsyncExitStack() as stack:
            keyward_url = await stack.enter_async_context(
                keyward_server(workdir / "keyward", args.profile, args.postgres)
            )
            reference_url = (
                None if args.no_reference else stack.enter_context(scepserver(workdir / "scepserver"))
            )
            # Rounds alternate between the servers, so load from elsewhere on the machine falls on both.
            for round_index in range(args.rounds):
                keyward_parts.append(
                    await measure(
                        "keyward", keyward_url, per_round, args.concurrency, workdir / f"kw-{round_index}"
                    )
                )
                if reference_url is not None:
                    reference_parts.append(
                        await measure(
                            "scepserver",
                            reference_url,
                            per_round,
                            args.concurrency,
                            workdir / f"ref-{round_index}",
                        )
                    )
    results = [_merge("keyward", keyward_parts)]
    if reference_parts:
        results.append(_merge("scepserver", reference_parts))
    _report(results, args.concurrency)
    return 0 if results[0].failed == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=48, help="enrollments per server")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measuring rounds per server")
    parser.add_argument("--concurrency", type=int, default=8, help="scepclient processes at once")
    parser.add_argument("--no-reference", action="store_true", help="skip scepserver")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the Keyward server here")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="run Keyward on a scratch PostgreSQL database (e.g. postgres://postgres@127.0.0.1:5432/postgres)",
    )
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
