"""SFTP syncs against a real OpenSSH sshd started on a loopback port with a throwaway host key and an
authorized client key (internal-sftp): push with modes, renewal replaces, revocation removes, a wrong pinned
host key and a refused client key fail with a clear status, a server that is down is retried later."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
from conftest import OrgAdmin, tool_or_skip
from sync_support import Scene, free_port, make_scene, settle, sweep, target

from core import sync as service
from models.sync import SyncTargetStatus

SSHD = "/usr/sbin/sshd"


def _sshd_path() -> str:
    return SSHD if os.access(SSHD, os.X_OK) else tool_or_skip("sshd")


def _keygen(path: Path) -> str:
    subprocess.run(
        [tool_or_skip("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "keyward-test", "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    host_key: str  # the server's public host key line
    client_key: str  # the authorized client's private key (OpenSSH PEM)
    root: Path
    config: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            _sshd_path(),
            "-D",
            "-e",
            "-f",
            str(self.config),
            "-p",
            str(self.port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(500):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if self.process.returncode is not None:
                assert self.process.stderr is not None
                raise RuntimeError((await self.process.stderr.read()).decode())
            await asyncio.sleep(0.02)
        raise RuntimeError("sshd did not start listening")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        self.process = None


def _prepare(tmp: Path) -> Sshd:
    tmp.mkdir(parents=True, exist_ok=True)
    host_public = _keygen(tmp / "host_ed25519")
    client_public = _keygen(tmp / "client_ed25519")
    (tmp / "authorized_keys").write_text(client_public + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    config = tmp / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"HostKey {tmp / 'host_ed25519'}",
                f"PidFile {tmp / 'sshd.pid'}",
                f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {getpass.getuser()}",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    return Sshd(
        port=free_port(),
        host_key=host_public,
        client_key=(tmp / "client_ed25519").read_text(),
        root=tmp,
        config=config,
    )


@pytest_asyncio.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[Sshd]:
    server = _prepare(tmp_path / "sshd")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _sftp_sync(scene: Scene, server: Sshd, directory: Path, **overrides: Any) -> Any:
    connection = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": getpass.getuser(),
        "hostKey": server.host_key,
        "directory": str(directory),
        **overrides.pop("connection", {}),
    }
    return await service.create_sync(
        actor=scene.actor,
        application_id=scene.application.id,
        name=overrides.pop("name", "sftp"),
        destination="sftp",
        connection=connection,
        credentials=overrides.pop("credentials", {"privateKey": server.client_key}),
        name_template="{{commonName}}-{{certificateId}}",
        **overrides,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_push_renew_revoke_over_sftp(org_admin: OrgAdmin, sshd: Sshd, tmp_path: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    first = await scene.issue("sftp.example.com")
    remote = tmp_path / "remote" / "certs"
    sync = await _sftp_sync(scene, sshd, remote)
    report = await sweep()
    assert report.succeeded == 1, (await target(sync.id, first.id)).message
    crt = remote / f"sftp.example.com-{first.id}.crt"
    key = remote / f"sftp.example.com-{first.id}.key"
    assert _mode(crt) == 0o644 and _mode(key) == 0o600
    assert crt.read_text().startswith(first.certificate_pem.strip().splitlines()[0])
    assert not [p for p in remote.iterdir() if p.name.startswith(".keyward-")]
    assert (await target(sync.id, first.id)).remote_reference == str(crt)

    successor = await scene.renew(first)
    await settle()
    assert (remote / f"sftp.example.com-{successor.id}.crt").exists()
    assert not crt.exists() and not key.exists()

    await scene.revoke(successor)
    await settle()
    assert not list(remote.iterdir())
    assert (await target(sync.id, successor.id)).status == SyncTargetStatus.REMOVED


async def test_wrong_host_key_and_refused_key(org_admin: OrgAdmin, sshd: Sshd, tmp_path: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("refused.example.com")
    other_host = _keygen(tmp_path / "other_host")
    await _sftp_sync(scene, sshd, tmp_path / "r1", name="pinned-wrong", connection={"hostKey": other_host})
    _keygen(tmp_path / "stranger")
    await _sftp_sync(
        scene,
        sshd,
        tmp_path / "r2",
        name="stranger",
        credentials={"privateKey": (tmp_path / "stranger").read_text()},
    )
    await sweep()
    messages = {}
    for sync in await service.list_syncs(actor=scene.actor, application_id=scene.application.id):
        state = await target(sync.id, certificate.id)
        assert state.status == SyncTargetStatus.FAILED and state.next_attempt_at is not None
        messages[sync.name] = state.message or ""
    assert "host key" in messages["pinned-wrong"]
    assert "refused the credentials" in messages["stranger"]
    assert sshd.client_key.splitlines()[1] not in str(messages)


async def test_server_down_then_up(org_admin: OrgAdmin, tmp_path: Path) -> None:
    server = _prepare(tmp_path / "late")
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("late.example.com")
    remote = tmp_path / "late-remote"
    sync = await _sftp_sync(scene, server, remote)
    await sweep()
    state = await target(sync.id, certificate.id)
    assert state.status == SyncTargetStatus.FAILED and "cannot reach" in (state.message or "")
    assert state.next_attempt_at is not None
    await server.start()
    try:
        await sweep(state.next_attempt_at + timedelta(seconds=1))
    finally:
        await server.stop()
    state = await target(sync.id, certificate.id)
    assert state.status == SyncTargetStatus.SUCCEEDED and state.attempts == 2
    assert (remote / f"late.example.com-{certificate.id}.crt").exists()
