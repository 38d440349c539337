"""docker-compose.yml's topology as processes on PostgreSQL: `keyward db upgrade`, two `keyward serve`, two
`keyward worker`, and an SMTP server in place of Mailpit. Through the API: an email alert, an issuance on
one replica read back on the other, an auto-renewal the workers carry out, and every alert email sent
exactly once although two workers poll the same outbox."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from conftest import POSTGRES_ADMIN_URL, _free_port
from cryptography.hazmat.primitives import serialization

from core.db import create_scratch_database, drop_scratch_database
from pki.csr import build_csr
from pki.key import KeyAlgorithm, generate_private_key
from pki.san import parse_san

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 120
# Short schedules, so the workers' jobs come round every second instead of every few minutes.
SCHEDULES = "outbox.dispatch=1,deliveries.retry=1,alerts.scan_expiring=1,renewals.renew_due=1"

pytestmark = pytest.mark.skipif(
    os.environ.get("KEYWARD_TEST_DB", "sqlite") != "postgres",
    reason="the compose topology runs several processes on one database: PostgreSQL only "
    "(KEYWARD_TEST_DB=postgres); SQLite takes one writer",
)


class Mailbox:
    """aiosmtpd's handler: every message the workers send, by subject."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subjects: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's API
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self._subjects.append(str(message["Subject"]))
        return "250 Message accepted for delivery"

    @property
    def subjects(self) -> list[str]:
        with self._lock:
            return list(self._subjects)


class Topology:
    """The processes of one run, their logs, and a clean stop of every one of them."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def log(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def tail(self, name: str) -> str:
        path = self.log(name)
        return path.read_text()[-3000:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name}:\n{self.tail(name)}" for name in self.processes)

    async def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> None:
        with self.log(name).open("ab") as out:
            self.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "api.cli",
                *args,
                cwd=ROOT,
                env={**self.env, **(extra_env or {})},
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    async def run(self, name: str, *args: str) -> str:
        """A one-shot command (migration, demo): its stdout, or the test fails with its output."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "api.cli",
            *args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), WAIT_SECONDS)
        assert process.returncode == 0, f"keyward {' '.join(args)} failed:\n{err.decode()}"
        return out.decode()

    async def wait_for(self, condition: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while not await condition():
            for name, process in self.processes.items():
                if process.returncode is not None:
                    pytest.fail(f"{name} exited ({process.returncode}) before {what}:\n{self.logs()}")
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out after {WAIT_SECONDS} s waiting for {what}:\n{self.logs()}")
            await asyncio.sleep(0.2)

    async def stop_all(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await asyncio.wait_for(process.wait(), 15)


@pytest_asyncio.fixture
async def scratch_database() -> AsyncIterator[str]:
    url = await create_scratch_database(POSTGRES_ADMIN_URL, prefix="keyward_topology")
    try:
        yield url
    finally:
        await drop_scratch_database(POSTGRES_ADMIN_URL, url)


@pytest.fixture
def mailbox() -> Any:
    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest_asyncio.fixture
async def topology(scratch_database: str, mailbox: Any, tmp_path: Path) -> AsyncIterator[Topology]:
    _, smtp_port = mailbox
    kek = tmp_path / "kek.key"
    kek.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    kek.chmod(0o600)
    api_ports = [_free_port(), _free_port()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(
        # What docker-compose.yml's x-keyward-env sets, pointed at this machine's processes.
        KEYWARD_DATABASE_URL=scratch_database,
        KEYWARD_PUBLIC_URL=f"http://127.0.0.1:{api_ports[0]}",
        KEYWARD_KEK_FILE=str(kek),
        KEYWARD_LOG_LEVEL="info",
        KEYWARD_SMTP_HOST="127.0.0.1",
        KEYWARD_SMTP_PORT=str(smtp_port),
        KEYWARD_SMTP_TLS="none",
        KEYWARD_SMTP_FROM="keyward@keyward.localhost",
    )
    world = Topology(tmp_path, env)
    world.api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]  # type: ignore[attr-defined]
    try:
        yield world
    finally:
        await world.stop_all()


async def gql(http: httpx.AsyncClient, url: str, token: str, query: str, variables: dict[str, Any]) -> Any:
    response = await http.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


CREATE_ALERT = "mutation($input: CreateAlertInput!) { createAlert(input: $input) { id } }"
ISSUE = """mutation($input: IssueCertificateInput!) {
  issueCertificate(input: $input) {
    certificate { id serialNumber status autoRenew hasPrivateKey certificatePem }
  }
}"""
CERTIFICATE = """query($id: ID!) {
  certificate(id: $id) { id serialNumber status certificatePem renewedBy { id status autoRenew } }
}"""
DELIVERIES = "query($id: ID!) { alert(id: $id) { deliveries(first: 50) { status } } }"


def csr_for(common_name: str) -> str:
    key = generate_private_key(KeyAlgorithm.EC_P256)
    csr = build_csr(key=key, subject=[("CN", common_name)], sans=[parse_san(common_name)])
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


async def test_compose_topology_issues_renews_and_alerts_once(
    topology: Topology, mailbox: Any, scratch_database: str
) -> None:
    box, _ = mailbox
    first, second = topology.api_urls  # type: ignore[attr-defined]

    # The one-shot migration, then the demo organization (PKI, payments-api with auto-renewal on).
    await topology.run("migrate", "db", "upgrade")
    demo = json.loads(await topology.run("demo", "demo", "--json"))
    token, app_id, profile_id = demo["admin_token"], demo["application_id"], demo["profile_id"]

    for index, url in enumerate((first, second), start=1):
        port = url.rsplit(":", 1)[1]
        await topology.start(f"api-{index}", "serve", "--host", "127.0.0.1", "--port", port)
    for index in (1, 2):
        await topology.start(f"worker-{index}", "worker", extra_env={"KEYWARD_WORKER_SCHEDULES": SCHEDULES})

    async with httpx.AsyncClient(timeout=30) as http:

        async def replicas_ready() -> bool:
            for url in (first, second):
                try:
                    if (await http.get(f"{url}/readyz")).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
            return True

        await topology.wait_for(replicas_ready, "both API replicas to answer /readyz")
        assert (await http.get(f"{second}/healthz")).status_code == 200

        alert = await gql(
            http,
            first,
            token,
            CREATE_ALERT,
            {
                "input": {
                    "applicationId": app_id,
                    "name": "ops-mail",
                    "eventTypes": ["ISSUANCE", "RENEWAL", "EXPIRATION"],
                    "thresholds": ["30d"],
                    "channels": [{"type": "EMAIL", "config": {"recipients": ["ops@example.com"]}}],
                }
            },
        )
        alert_id = alert["createAlert"]["id"]

        # Replica 1 issues: one auto-renewed certificate with a server-held key, one from a CSR that
        # expires within the alert's 30-day threshold.
        renewing = (
            await gql(
                http,
                first,
                token,
                ISSUE,
                {
                    "input": {
                        "applicationId": app_id,
                        "profileId": profile_id,
                        "commonName": "shop.example.com",
                    }
                },
            )
        )["issueCertificate"]["certificate"]
        assert renewing["autoRenew"] and renewing["hasPrivateKey"]
        expiring = (
            await gql(
                http,
                first,
                token,
                ISSUE,
                {
                    "input": {
                        "applicationId": app_id,
                        "profileId": profile_id,
                        "csr": csr_for("short.example.com"),
                        "ttl": "20d",
                    }
                },
            )
        )["issueCertificate"]["certificate"]

        # Replica 2 reads what replica 1 wrote.
        read = (await gql(http, second, token, CERTIFICATE, {"id": renewing["id"]}))["certificate"]
        assert (read["serialNumber"], read["certificatePem"]) == (
            renewing["serialNumber"],
            renewing["certificatePem"],
        )

        # The clock moves for the auto-renewed certificate: its renewal falls due now, and one of the two
        # workers renews it.
        conn = await asyncpg.connect(scratch_database)
        try:
            updated = await conn.execute(
                "UPDATE certificate SET renewal_due_at = now() - interval '1 minute' WHERE id = $1",
                uuid.UUID(renewing["id"]),
            )
            assert updated == "UPDATE 1"
        finally:
            await conn.close()

        async def renewed() -> bool:
            data = await gql(http, second, token, CERTIFICATE, {"id": renewing["id"]})
            return bool(data["certificate"]["status"] == "RENEWED")

        await topology.wait_for(renewed, "the workers to renew the due certificate")
        after = (await gql(http, second, token, CERTIFICATE, {"id": renewing["id"]}))["certificate"]
        successor = after["renewedBy"]
        assert successor is not None and successor["status"] == "ACTIVE" and successor["autoRenew"]

        expected = {
            "[Keyward] certificate shop.example.com of payments-api was issued",
            "[Keyward] certificate short.example.com of payments-api was issued",
            "[Keyward] certificate shop.example.com of payments-api was renewed",
            "[Keyward] certificate short.example.com of payments-api expires within 30 days",
        }

        async def all_mail_arrived() -> bool:
            return expected <= set(box.subjects)

        await topology.wait_for(all_mail_arrived, f"the alert emails {sorted(expected)}")

        async def deliveries_settled() -> bool:
            data = await gql(http, first, token, DELIVERIES, {"id": alert_id})
            statuses = [d["status"] for d in data["alert"]["deliveries"]]
            return len(statuses) >= 4 and all(s == "SUCCEEDED" for s in statuses)

        await topology.wait_for(deliveries_settled, "every delivery to be recorded as succeeded")

        # Let both workers go round their dispatch and expiration scan a few more times: nothing new is sent.
        def runs(name: str, job: str) -> int:
            return topology.log(name).read_text().count(f"job {job} ok")

        marks = {
            (name, job): runs(name, job)
            for name in ("worker-1", "worker-2")
            for job in ("outbox.dispatch", "alerts.scan_expiring", "renewals.renew_due")
        }

        async def workers_went_round() -> bool:
            return all(runs(name, job) >= mark + 3 for (name, job), mark in marks.items())

        await topology.wait_for(workers_went_round, "three more job runs on each worker")

        counts = Counter(box.subjects)
        assert set(counts) == expected, f"unexpected mail: {sorted(set(counts) - expected)}"
        assert all(count == 1 for count in counts.values()), f"duplicate mail: {counts}"
        data = await gql(http, second, token, DELIVERIES, {"id": alert_id})
        assert [d["status"] for d in data["alert"]["deliveries"]] == ["SUCCEEDED"] * 4
        final = (await gql(http, first, token, CERTIFICATE, {"id": expiring["id"]}))["certificate"]
        assert final["status"] == "ACTIVE" and final["renewedBy"] is None  # a CSR's key is not ours to renew

    for name in ("worker-1", "worker-2"):
        assert runs(name, "outbox.dispatch") >= 3, f"{name} never dispatched:\n{topology.tail(name)}"
