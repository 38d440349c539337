"""Alerts after the migration, to a real webhook receiver on loopback (signed CloudEvents): with the legacy
copies disabled, an issuance fires the application's alert once and the legacy alert never (not even for an
issuance in the legacy project); without it, both keep working, each for its own certificates. Syncs alike:
each certificate is queued once, to the sync of its own application (the legacy one only when left on)."""

from __future__ import annotations

import migration_support  # noqa: F401  # isort: skip - puts tests/acme, est, scep, worker on sys.path
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from conftest import OrgAdmin
from delivery_support import SECRET, Receiver, loopback_webhooks
from migration_support import example_document, import_example, migrated

from core.authz import Actor
from core.delivery import deliver_due
from core.dispatch import dispatch_outbox
from core.issuance import issue_certificate
from core.legacy import migration
from models import Alert, Sync, SyncTarget


@pytest.fixture
def allow_loopback() -> Iterator[None]:
    with loopback_webhooks():
        yield


@pytest_asyncio.fixture
async def receiver(allow_loopback: None) -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    try:
        yield server
    finally:
        await server.stop()


async def migrate_and_issue(
    organization_id: uuid.UUID, receiver: Receiver, *, disable: bool
) -> tuple[uuid.UUID, uuid.UUID]:
    """The example with its alert's webhook at the receiver; migrated; one issuance in the application and one
    in the legacy project (both on web-api, which the alert covers); every event delivered."""
    document = example_document()
    document["alerts"][0]["channels"] = [
        {"type": "webhook", "config": {"url": receiver.url}, "secret": SECRET}
    ]
    imported = await import_example(organization_id, document)
    actor = Actor.system(organization_id, "tests")
    plan = await migration.migration_plan(actor=actor, legacy_project_id=imported.project_id)
    await migration.apply_migration(
        actor=actor, plan_document=plan.to_document(), disable_legacy_copies=disable
    )
    application = await migrated(organization_id)
    await dispatch_outbox()
    await deliver_due()
    assert receiver.received == []  # the migration itself sends nothing
    for application_id, name in (
        (application.id, "new.payments.example.com"),
        (imported.project_id, "old.payments.example.com"),
    ):
        await issue_certificate(
            actor=actor,
            application_id=application_id,
            profile_id=imported.profile_ids["web-api"],
            subject=[("CN", name)],
            sans=[name],
        )
    await dispatch_outbox()
    await deliver_due()
    # Running the worker's jobs again sends nothing twice.
    await dispatch_outbox()
    await deliver_due()
    return application.id, imported.project_id


async def queued(application_id: uuid.UUID) -> list[str]:
    """Which of the two issued certificates were queued to the application's sync (edge-push, auto-sync); the
    legacy sync also holds the imported certificates it pushed when the export was imported."""
    sync = await Sync.get(application_id=application_id, name="edge-push")
    targets = await SyncTarget.filter(sync_id=sync.id).prefetch_related("certificate")
    issued = {"new.payments.example.com", "old.payments.example.com"}
    return sorted(str(t.certificate.common_name) for t in targets if t.certificate.common_name in issued)


def fired(receiver: Receiver) -> list[tuple[str, str, str]]:
    """(application id, alert name, certificate common name) of every delivery, signatures checked."""
    assert all(r.signature_ok for r in receiver.received)
    return sorted(
        (
            r.event["data"]["applicationId"],
            r.event["data"]["alertName"],
            r.event["data"]["certificates"][0]["commonName"],
        )
        for r in receiver.received
    )


async def test_with_the_legacy_copies_disabled_only_the_new_alert_fires(
    org_admin: OrgAdmin, receiver: Receiver
) -> None:
    application_id, project_id = await migrate_and_issue(org_admin.organization_id, receiver, disable=True)
    assert fired(receiver) == [
        (str(application_id), "payments-expiry-and-issuance", "new.payments.example.com")
    ]
    assert (await Alert.get(application_id=project_id)).is_active is False
    assert await queued(application_id) == ["new.payments.example.com"]
    assert await queued(project_id) == []


async def test_without_it_both_alerts_keep_working(org_admin: OrgAdmin, receiver: Receiver) -> None:
    application_id, project_id = await migrate_and_issue(org_admin.organization_id, receiver, disable=False)
    assert fired(receiver) == sorted(
        [
            (str(application_id), "payments-expiry-and-issuance", "new.payments.example.com"),
            (str(project_id), "payments-expiry-and-issuance", "old.payments.example.com"),
        ]
    )
    assert await queued(application_id) == ["new.payments.example.com"]
    assert await queued(project_id) == ["old.payments.example.com"]
