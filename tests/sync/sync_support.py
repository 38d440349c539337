"""Shared setup of the sync tests: an application with a profile, issuing helpers, settings for loopback
destinations, and one sweep (dispatch the outbox, then push what is due)."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import make_application, make_pki

from core import dispatch, runtime, sync_runner
from core.authz import Actor
from core.certificate import RenewalMode, renew_certificate, revoke_certificate
from core.issuance import issue_certificate
from models import Certificate, Organization
from models.sync import SyncTarget


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sync_roots(tmp_path: Path) -> Iterator[Path]:
    """Local syncs may write under tmp_path, post commands run, loopback receivers are allowed."""
    previous = runtime.settings()
    runtime.configure(
        dataclasses.replace(
            previous,
            sync_local_roots=(str(tmp_path),),
            sync_post_commands=True,
            allow_loopback_webhooks=True,
        ),
        kek=runtime.kek(),
    )
    try:
        yield tmp_path
    finally:
        runtime.configure(previous, kek=runtime.kek())


class Scene:
    def __init__(self, org: Organization, pki: Any, application: Any) -> None:
        self.org, self.pki, self.application = org, pki, application
        self.actor = Actor.system(org.id, "test")

    async def issue(self, name: str = "svc.example.com", **kwargs: Any) -> Certificate:
        if "csr" not in kwargs:
            kwargs.setdefault("sans", [name])
            kwargs.setdefault("subject", [("CN", name)])
        return await issue_certificate(
            actor=self.actor, application_id=self.application.id, profile_id=self.pki.profile.id, **kwargs
        )

    async def renew(self, certificate: Certificate) -> Certificate:
        return await renew_certificate(
            actor=self.actor, certificate_id=certificate.id, mode=RenewalMode.NEW_KEY
        )

    async def revoke(self, certificate: Certificate) -> Certificate:
        return await revoke_certificate(
            actor=self.actor, certificate_id=certificate.id, reason="keyCompromise"
        )


async def make_scene(organization_id: uuid.UUID) -> Scene:
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org, default_validity="90d")
    application = await make_application(org, profiles=[pki.profile])
    return Scene(org, pki, application)


async def sweep(now: datetime | None = None) -> sync_runner.SyncReport:
    """What the worker's outbox.dispatch and syncs.push jobs do, once."""
    await dispatch.dispatch_outbox()
    return await sync_runner.push_due(now=now)


async def settle(rounds: int = 3) -> None:
    """Sweep until nothing is queued (a renewal's removal of the predecessor is queued by its push)."""
    for _ in range(rounds):
        await sweep(datetime.now(UTC) + timedelta(seconds=1))


async def target(sync_id: uuid.UUID, certificate_id: uuid.UUID) -> SyncTarget:
    return await SyncTarget.get(sync_id=sync_id, certificate_id=certificate_id)
