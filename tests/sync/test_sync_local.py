"""Local directory syncs, driven by the real triggers: creation, issuance, renewal, revocation, expiry;
atomic writes, file modes, the post-sync command (once per push) and its timeout; retries with backoff."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import OrgAdmin
from sync_support import Scene, make_scene, settle, sweep, sync_roots, target

from core import sync as service
from core.metrics import SYNC_FAILURES
from core.sync_runner import MAX_ATTEMPTS, backoff_delay
from models import Certificate
from models.sync import SyncAction, SyncTarget, SyncTargetStatus
from pki.certificate import load_certificate, load_certificates

__all__ = ["sync_roots"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _local_sync(scene: Scene, directory: Path, **options: Any) -> Any:
    connection = {"directory": str(directory), **options.pop("connection", {})}
    return await service.create_sync(
        actor=scene.actor,
        application_id=scene.application.id,
        name=options.pop("name", "local"),
        destination="local",
        connection=connection,
        name_template=options.pop("name_template", "{{commonName}}-{{certificateId}}"),
        **options,
    )


def _files(certificate: Certificate) -> str:
    return f"{(certificate.common_name or '').replace('*', 'wildcard')}-{certificate.id}"


async def test_creation_issuance_renewal_revocation(org_admin: OrgAdmin, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    first = await scene.issue("a.example.com")
    server_csr = await scene.issue("csr.example.com")  # server-held key too: both matched
    out = sync_roots / "out"
    log = sync_roots / "post.log"
    sync = await _local_sync(
        scene,
        out,
        connection={"postCommand": f"/bin/sh -c 'echo $SYNC_ACTION $SYNC_CERTIFICATE_ID >> {log}'"},
    )
    # Creation queued every matching certificate, in the same transaction.
    assert await SyncTarget.filter(sync_id=sync.id).count() == 2
    report = await sweep()
    assert report.succeeded == 2 and report.failed == 0
    crt, key = out / f"{_files(first)}.crt", out / f"{_files(first)}.key"
    assert _mode(crt) == 0o644 and _mode(key) == 0o600
    pems = load_certificates(crt.read_text())
    assert pems[0] == load_certificate(first.certificate_pem) and len(pems) == 2  # leaf + issuing CA
    assert "PRIVATE KEY" in key.read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".keyward-")]  # temp files were renamed
    state = await target(sync.id, first.id)
    assert state.status == SyncTargetStatus.SUCCEEDED and state.remote_reference == str(crt)
    assert state.last_started_at is not None and state.last_finished_at is not None
    assert log.read_text().splitlines().count(f"push {first.id}") == 1  # once per push
    assert server_csr.id is not None

    # Issuance: pushed by the outbox consumer.
    second = await scene.issue("b.example.com")
    await sweep()
    assert (out / f"{_files(second)}.crt").exists()

    # Renewal: the successor replaces the predecessor.
    successor = await scene.renew(first)
    await settle()
    assert (out / f"{_files(successor)}.crt").exists()
    assert not crt.exists() and not key.exists()
    assert (await target(sync.id, successor.id)).status == SyncTargetStatus.SUCCEEDED
    old = await target(sync.id, first.id)
    assert old.status == SyncTargetStatus.REMOVED and "replaced by" in (old.message or "")

    # Revocation removes (removeOnRevoke defaults to true).
    await scene.revoke(second)
    await settle()
    assert not (out / f"{_files(second)}.crt").exists()
    assert (await target(sync.id, second.id)).status == SyncTargetStatus.REMOVED
    assert f"remove {second.id}" in log.read_text()


async def test_filters_and_auto_sync_off(org_admin: OrgAdmin, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    tagged = await scene.issue("tagged.example.com", metadata={"team": "pay"})
    await scene.issue("other.example.com", metadata={"team": "ops"})
    sync = await _local_sync(scene, sync_roots / "f", metadata={"team": "pay"})
    assert [t.certificate_id for t in await SyncTarget.filter(sync_id=sync.id)] == [tagged.id]
    manual = await _local_sync(scene, sync_roots / "m", name="manual", auto_sync=False)
    await scene.issue("new.example.com")
    await sweep()
    assert await SyncTarget.filter(sync_id=manual.id).count() == 0
    _, queued = await service.run_sync(actor=scene.actor, sync_id=manual.id)
    assert queued == 3
    await sweep()
    assert await SyncTarget.filter(sync_id=manual.id, status=SyncTargetStatus.SUCCEEDED).count() == 3
    await service.remove_from_sync(actor=scene.actor, sync_id=manual.id, certificate_id=tagged.id)
    await sweep()
    assert (await target(manual.id, tagged.id)).status == SyncTargetStatus.REMOVED
    assert not list((sync_roots / "m").glob(f"*{tagged.id}*"))


async def test_no_key_when_the_sync_excludes_it_and_pkcs12(org_admin: OrgAdmin, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("p.example.com")
    await _local_sync(scene, sync_roots / "nokey", include_private_key=False)
    p12 = await _local_sync(
        scene,
        sync_roots / "p12",
        name="p12",
        format="pkcs12",
        credentials={"keystorePassword": "changeit-123"},
        include_root=True,
    )
    await sweep()
    assert [p.suffix for p in (sync_roots / "nokey").iterdir()] == [".crt"]
    files = list((sync_roots / "p12").iterdir())
    assert [p.suffix for p in files] == [".p12"] and _mode(files[0]) == 0o600
    from cryptography.hazmat.primitives.serialization import pkcs12

    loaded = pkcs12.load_pkcs12(files[0].read_bytes(), b"changeit-123")
    assert loaded.key is not None and loaded.cert is not None
    assert len(loaded.additional_certs) == 2  # issuing CA and root (includeRoot)
    assert (await target(p12.id, certificate.id)).status == SyncTargetStatus.SUCCEEDED


async def test_post_command_timeout_fails_and_is_retried(org_admin: OrgAdmin, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("slow.example.com")
    flag = sync_roots / "fast"
    # Slow until the flag file exists: the first attempt times out, the retry succeeds.
    command = f"/bin/sh -c 'test -e {flag} || sleep 30'"
    sync = await _local_sync(
        scene, sync_roots / "t", connection={"postCommand": command, "postCommandTimeoutSeconds": 1}
    )
    started = datetime.now(UTC)
    await sweep()
    state = await target(sync.id, certificate.id)
    assert state.status == SyncTargetStatus.FAILED and "timed out" in (state.message or "")
    assert state.attempts == 1 and state.next_attempt_at is not None and state.next_attempt_at > started
    # Not due yet: a sweep now leaves it alone.
    await sweep()
    assert (await target(sync.id, certificate.id)).attempts == 1
    flag.touch()
    await sweep(state.next_attempt_at + timedelta(seconds=1))
    state = await target(sync.id, certificate.id)
    assert state.status == SyncTargetStatus.SUCCEEDED and state.message is None


async def test_destination_down_then_up(org_admin: OrgAdmin, sync_roots: Path) -> None:
    """A directory that cannot be written (a file in its place): failed with the reason, retried later."""
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("down.example.com")
    blocked = sync_roots / "blocked"
    blocked.write_text("not a directory")
    failures = SYNC_FAILURES.labels(destination="local")
    before = failures._value.get()
    sync = await _local_sync(scene, blocked)
    await sweep()
    assert failures._value.get() == before + 1  # keyward_sync_failures_total{destination="local"}
    state = await target(sync.id, certificate.id)
    assert state.status == SyncTargetStatus.FAILED and "cannot write" in (state.message or "")
    assert state.next_attempt_at is not None
    blocked.unlink()
    await sweep(state.next_attempt_at + timedelta(seconds=1))
    assert (await target(sync.id, certificate.id)).status == SyncTargetStatus.SUCCEEDED
    assert blocked.is_dir()  # noqa: ASYNC240


async def test_expiry_removal_and_backoff() -> None:
    delays = [backoff_delay(n) for n in range(1, MAX_ATTEMPTS + 3)]
    assert timedelta(seconds=15) <= delays[0] <= timedelta(seconds=30)
    assert all(d <= timedelta(hours=1) for d in delays) and delays[-1] >= timedelta(minutes=30)


async def test_expired_certificates_are_removed_when_asked(org_admin: OrgAdmin, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("exp.example.com")
    keep = await _local_sync(scene, sync_roots / "keep", name="keep")
    drop = await _local_sync(scene, sync_roots / "drop", name="drop", remove_on_expiry=True)
    await sweep()
    later = certificate.not_after + timedelta(minutes=1)
    await sweep(later)
    await sync_runner_push(later)
    assert (await target(drop.id, certificate.id)).status == SyncTargetStatus.REMOVED
    assert not list((sync_roots / "drop").glob("*.crt"))
    kept = await target(keep.id, certificate.id)
    assert kept.status == SyncTargetStatus.SUCCEEDED and kept.action == SyncAction.PUSH


async def sync_runner_push(now: datetime) -> None:
    from core import sync_runner

    await sync_runner.push_due(now=now)
