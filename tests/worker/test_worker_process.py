"""A real `keyward worker` process, killed with SIGKILL while webhooks are in flight, then restarted: every
due alert reaches the loopback receiver, none is lost, and a duplicate only ever repeats the same event id."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from conftest import OrgAdmin
from conftest import test_backend as backend_name
from delivery_support import Receiver, World, loopback_webhooks, make_world, set_not_after

from core import runtime
from core.config import load_settings
from core.errors import ConfigurationError
from models import Delivery, ExpirationNotice, OutboxEvent
from models.enums import DeliveryStatus
from worker.jobs import all_jobs
from worker.main import job_intervals, the_only_scheduler_on

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 90


@pytest.fixture
def allow_loopback() -> Iterator[None]:
    with loopback_webhooks():
        yield


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver(delay=0.7).start()  # slow answers: sends are in flight when the worker dies
    try:
        yield server
    finally:
        await server.stop()


def worker_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    kek_file = tmp_path / "kek.key"
    kek_file.write_text(base64.b64encode(runtime.kek()).decode() + "\n")
    kek_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(
        KEYWARD_DATABASE_URL=database_url,
        KEYWARD_KEK_FILE=str(kek_file),
        KEYWARD_PUBLIC_URL=runtime.settings().public_url,
        KEYWARD_ALLOW_LOOPBACK_WEBHOOKS="1",
        KEYWARD_LOG_LEVEL="info",
        KEYWARD_WORKER_SCHEDULES="outbox.dispatch=1,deliveries.retry=1,alerts.scan_expiring=1",
        KEYWARD_DELIVERY_LEASE_SECONDS="3",
    )
    return env


async def start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.cli", "worker", cwd=ROOT, env=env, stdout=out, stderr=out
        )


async def stop(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if process.returncode is None:
        process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), 15)


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, process: asyncio.subprocess.Process, log: Path
) -> None:
    """Poll until `condition`, failing with the worker's log if it exits or WAIT_SECONDS pass."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not await condition():
        if process.returncode is not None:
            pytest.fail(f"the worker exited ({process.returncode}) before {what}:\n{tail(log)}")
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {WAIT_SECONDS} s waiting for {what}:\n{tail(log)}")
        await asyncio.sleep(0.1)


async def test_a_worker_killed_mid_delivery_loses_nothing_once_restarted(
    org_admin: OrgAdmin, allow_loopback: None, receiver: Receiver, database_url: str, tmp_path: Path
) -> None:
    world: World = await make_world(org_admin.organization_id)
    await world.alert("everything", ["issuance", "expiration"], urls=[receiver.url], thresholds="30d")
    certificates = [await world.issue(f"svc{i}.example.com") for i in range(14)]
    expiring = certificates[:3]
    for certificate in expiring:
        await set_not_after(certificate, datetime.now(UTC) + timedelta(days=10))
    issued_events = {str(e) for e in await OutboxEvent.all().values_list("id", flat=True)}
    assert len(issued_events) == 14

    env = worker_env(database_url, tmp_path)
    log = tmp_path / "worker.log"
    first = await start_worker(env, log)
    try:

        async def some_in_flight() -> bool:
            return receiver.arrived >= 3

        await wait_for(some_in_flight, "the first webhooks to arrive", first, log)
        first.kill()  # SIGKILL: no cleanup, leases and open transactions left behind
        await asyncio.wait_for(first.wait(), 15)
    finally:
        await stop(first, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert receiver.arrived < 15, "the first worker finished everything before it was killed"
    in_flight = await Delivery.filter(status=DeliveryStatus.PENDING, leased_until__isnull=False).count()
    assert in_flight >= 1, "no delivery was in flight when the worker was killed"

    def expiring_covered() -> set[str]:
        return {
            c["id"]
            for r in receiver.received
            if r.event["type"] == "com.keyward.certificate.expiring"
            for c in r.event["data"]["certificates"]
        }

    second = await start_worker(env, log)
    try:

        async def everything_received() -> bool:
            ids = set(receiver.event_ids())
            return issued_events <= ids and expiring_covered() == {str(c.id) for c in expiring}

        await wait_for(everything_received, "every due alert at the receiver", second, log)

        async def all_recorded() -> bool:
            statuses = await Delivery.all().values_list("status", flat=True)
            return len(statuses) == 15 and all(s == DeliveryStatus.SUCCEEDED for s in statuses)

        await wait_for(all_recorded, "every delivery recorded as succeeded", second, log)
    finally:
        await stop(second)

    deliveries = await Delivery.all()
    expected = {str(d.event_id) for d in deliveries}
    assert issued_events < expected and len(expected) == 15  # 14 issuances, one grouped expiration notice
    received = Counter(receiver.event_ids())
    assert set(received) == expected, "an alert was lost, or one arrived under an event id nobody queued"
    # The sends cut off by the kill reached the receiver, and were sent again after their lease ran out.
    assert max(received.values()) >= 2
    assert all(r.signature_ok for r in receiver.received)
    # A duplicate is only ever a resend of the same event (same id, same data), never a second event.
    for event_id in received:
        bodies = {r.event["data"]["eventId"] for r in receiver.received if r.event["id"] == event_id}
        assert bodies == {event_id}
    assert await ExpirationNotice.all().count() == 3
    assert await OutboxEvent.filter(processed_at__isnull=True).count() == 0


def test_schedules_come_from_the_environment() -> None:
    settings = load_settings({"KEYWARD_WORKER_SCHEDULES": " outbox.dispatch=2, deliveries.retry=7 ,"})
    assert settings.worker_schedules == {"outbox.dispatch": 2, "deliveries.retry": 7}
    intervals = job_intervals(all_jobs(), settings.worker_schedules)
    assert intervals["outbox.dispatch"] == 2 and intervals["deliveries.retry"] == 7
    assert intervals["alerts.scan_expiring"] == 300  # not named: its default
    assert {"outbox.dispatch", "deliveries.retry", "alerts.scan_expiring", "crl.refresh"} <= set(intervals)
    assert load_settings({}).delivery_lease_seconds == 120
    assert load_settings({"KEYWARD_DELIVERY_LEASE_SECONDS": "30"}).delivery_lease_seconds == 30


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KEYWARD_WORKER_SCHEDULES", "outbox.dispatch", "must be JOB=SECONDS"),
        ("KEYWARD_WORKER_SCHEDULES", "outbox.dispatch=0", "must be JOB=SECONDS"),
        ("KEYWARD_WORKER_SCHEDULES", "outbox.dispatch=fast", "must be JOB=SECONDS"),
        ("KEYWARD_DELIVERY_LEASE_SECONDS", "0", "from 1 to 3600"),
        ("KEYWARD_DELIVERY_LEASE_SECONDS", "2m", "from 1 to 3600"),
    ],
)
def test_malformed_schedules_stop_the_start(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_settings({variable: value})
    assert variable in caught.value.message


def test_an_unknown_job_name_stops_the_start() -> None:
    with pytest.raises(ConfigurationError, match="unknown job.*outbox.dispatchh.*the jobs are"):
        job_intervals(all_jobs(), {"outbox.dispatchh": 5})


async def test_serve_with_worker_runs_the_jobs_inside_the_api_process(
    org_admin: OrgAdmin, allow_loopback: None, database_url: str, tmp_path: Path
) -> None:
    receiver = await Receiver().start()
    try:
        world = await make_world(org_admin.organization_id)
        await world.alert("hook", ["issuance"], urls=[receiver.url])
        await world.issue("api.example.com")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = tmp_path / "serve.log"
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "api.cli", "serve", "--with-worker", "--port", str(port)),
                cwd=ROOT,
                env=worker_env(database_url, tmp_path),
                stdout=out,
                stderr=out,
            )
        try:

            async def delivered() -> bool:
                return len(receiver.received) == 1

            await wait_for(delivered, "the webhook sent by the embedded worker", process, log)
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.get(f"http://127.0.0.1:{port}/healthz")
            assert response.status_code == 200  # the API answers from the same process
        finally:
            await stop(process)
        # uvicorn shuts down cleanly, then re-raises the signal it caught.
        assert process.returncode in (0, -signal.SIGTERM) and "Finished server process" in tail(log), tail(
            log
        )
    finally:
        await receiver.stop()


@pytest.mark.skipif(
    backend_name() != "sqlite", reason="on PostgreSQL several workers share the jobs (SKIP LOCKED claims)"
)
async def test_a_second_worker_on_the_same_sqlite_file_is_refused(database_url: str, tmp_path: Path) -> None:
    """SQLite's claims lock nothing, so two workers would send every alert twice: the second one is refused
    at its start with the reason, and the first goes on."""
    env = worker_env(database_url, tmp_path)
    log = tmp_path / "first.log"
    first = await start_worker(env, log)
    try:

        async def started() -> bool:
            return "worker started" in log.read_text()

        await wait_for(started, "the first worker's start", first, log)
        second = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "api.cli", "worker"),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode != 0
        assert b"another worker already runs the jobs on" in err, err.decode()
        assert first.returncode is None, tail(log)
    finally:
        await stop(first)
    assert "worker started" not in err.decode()


def test_the_scheduler_lock_is_one_per_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'one.sqlite3'}"
    with the_only_scheduler_on(url):
        with pytest.raises(ConfigurationError, match="another worker already runs the jobs"):
            with the_only_scheduler_on(url):
                pass
        with the_only_scheduler_on(f"sqlite://{tmp_path / 'other.sqlite3'}"):
            pass  # another file, another lock
    with the_only_scheduler_on(url):
        pass  # let go with the first
    with the_only_scheduler_on("sqlite://:memory:"), the_only_scheduler_on("sqlite://:memory:"):
        pass  # no file, nothing to share
