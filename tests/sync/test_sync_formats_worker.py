"""JKS keystores read by the real `keytool`, the worker job and settings, and the per-destination
concurrency bound (across workers through running leases, and inside one sweep)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import OrgAdmin, tool_or_skip
from sync_support import make_scene, sweep, sync_roots, target

from core import sync as service
from core import sync_runner
from core.config import load_settings
from core.errors import ConfigurationError
from models.sync import SyncTarget, SyncTargetStatus
from worker.jobs import all_jobs
from worker.main import job_intervals

__all__ = ["sync_roots"]


async def test_jks_keystore_reads_in_keytool(org_admin: OrgAdmin, sync_roots: Path) -> None:
    keytool = tool_or_skip("keytool")
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("jks.example.com")
    sync = await service.create_sync(
        actor=scene.actor,
        application_id=scene.application.id,
        name="jks",
        destination="local",
        connection={"directory": str(sync_roots / "jks")},
        credentials={"keystorePassword": "changeit-jks"},
        format="jks",
        name_template="{{commonName}}-{{certificateId}}",
    )
    await sweep()
    assert (await target(sync.id, certificate.id)).status == SyncTargetStatus.SUCCEEDED
    path = sync_roots / "jks" / f"jks.example.com-{certificate.id}.jks"
    listed = await asyncio.to_thread(
        subprocess.run,
        [keytool, "-list", "-v", "-storetype", "JKS", "-keystore", str(path), "-storepass", "changeit-jks"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "PrivateKeyEntry" in listed.stdout and "Certificate chain length: 2" in listed.stdout
    wrong = await asyncio.to_thread(
        subprocess.run,
        [keytool, "-list", "-storetype", "JKS", "-keystore", str(path), "-storepass", "wrong-password"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0  # the integrity digest is keyed by the password


def test_job_and_settings() -> None:
    assert "syncs.push" in {job.id for job in all_jobs()}
    assert job_intervals(all_jobs(), {"syncs.push": 30})["syncs.push"] == 30
    settings = load_settings(
        {"KEYWARD_SYNC_MAX_CONCURRENCY": "8", "KEYWARD_SYNC_LOCAL_ROOTS": "/srv/a,/srv/b"}
    )
    assert settings.sync_max_concurrency == 8 and settings.sync_local_roots == ("/srv/a", "/srv/b")
    assert load_settings({}).sync_max_concurrency == 4 and load_settings({}).sync_post_commands is False
    for env in (
        {"KEYWARD_SYNC_MAX_CONCURRENCY": "0"},
        {"KEYWARD_SYNC_LOCAL_ROOTS": "relative"},
        {"KEYWARD_SYNC_POST_COMMANDS": "maybe"},
    ):
        with pytest.raises(ConfigurationError):
            load_settings(env)


class SlowReceiver:
    """Counts how many pushes are in flight at once (each answer waits a little)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.in_flight += 1
                    receiver.most = max(receiver.most, receiver.in_flight)
                time.sleep(0.1)
                with receiver.lock:
                    receiver.in_flight -= 1
                    receiver.count += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"


async def test_concurrency_per_destination(org_admin: OrgAdmin, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    for index in range(5):
        await scene.issue(f"c{index}.example.com")
    receiver = SlowReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        sync = await service.create_sync(
            actor=scene.actor,
            application_id=scene.application.id,
            name="bounded",
            destination="http",
            connection={"url": receiver.url},
            credentials={"signingSecret": "concurrency-signing-secret-01"},
            max_concurrency=2,
        )
        # Another worker holds two leases of this destination: this sweep may start none.
        rows = await SyncTarget.filter(sync_id=sync.id).limit(2)
        lease = datetime.now(UTC) + timedelta(minutes=5)
        for row in rows:
            await SyncTarget.filter(id=row.id).update(status=SyncTargetStatus.RUNNING, leased_until=lease)
        report = await sync_runner.push_due()
        assert report.attempted == 0 and receiver.count == 0
        # The other worker died: its leases run out, and everything goes through, two at a time.
        report = await sync_runner.push_due(now=lease + timedelta(seconds=1))
        assert report.attempted == 5 and report.succeeded == 5
        assert receiver.count == 5 and receiver.most <= 2
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
