"""Outbox fan-out to matching alerts, and delivery through a real webhook: backoff, dead, retry by hand."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from conftest import OrgAdmin
from delivery_support import Receiver, World, loopback_webhooks, make_world

from core import delivery
from core.authz import Actor
from core.certificate import revoke_certificate
from core.channel import AttemptResult, Notification
from core.delivery import MAX_ATTEMPTS, backoff_delay, deliver_due, list_attempts, retry_by_hand
from core.dispatch import dispatch_outbox
from core.errors import Forbidden, InvalidState, NotFound
from models import AuditEvent, Delivery, DeliveryAttempt, OutboxEvent
from models.enums import ApplicationRole, DeliveryStatus, ProductRole


@pytest.fixture
def allow_loopback() -> Iterator[None]:
    with loopback_webhooks():
        yield


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def world(org_admin: OrgAdmin, allow_loopback: None) -> World:
    return await make_world(org_admin.organization_id)


async def deliveries_by_alert() -> dict[str, list[Delivery]]:
    result: dict[str, list[Delivery]] = {}
    for row in await Delivery.all().prefetch_related("alert"):
        result.setdefault(row.alert.name, []).append(row)
    return result


async def test_fan_out_follows_event_types_filters_and_channels(world: World, receiver: Receiver) -> None:
    url = receiver.url
    await world.alert(
        "by-profile", ["issuance"], urls=[url, url + "?copy"], profile_ids=[world.pki.profile.id]
    )
    await world.alert("by-name", ["issuance", "revocation"], urls=[url], name_pattern="*.pay.example.com")
    await world.alert("revocations", ["revocation"], urls=[url])
    await world.alert("disabled", ["issuance", "revocation"], urls=[url], is_active=False)
    await world.alert("expiry-only", ["expiration"], urls=[url], thresholds="30d")
    plain = await world.issue("api.example.com")
    paying = await world.issue("x.pay.example.com", other_profile=True)

    assert await dispatch_outbox() == 2
    assert await OutboxEvent.filter(processed_at__isnull=True).count() == 0
    by_alert = await deliveries_by_alert()
    assert sorted(by_alert) == ["by-name", "by-profile"]
    events = {e.certificate_id: e.id for e in await OutboxEvent.all()}
    # One delivery per channel, each carrying the outbox event id receivers de-duplicate on.
    assert sorted(d.event_id for d in by_alert["by-profile"]) == [events[plain.id]] * 2
    assert len({d.channel_id for d in by_alert["by-profile"]}) == 2
    assert [d.event_id for d in by_alert["by-name"]] == [events[paying.id]]
    payload = Notification.from_payload(by_alert["by-name"][0].payload)
    assert payload.event_type == "certificate.issued"
    assert payload.application_name == world.application.name
    assert payload.alert_name == "by-name"
    assert [c["commonName"] for c in payload.certificates] == ["x.pay.example.com"]
    assert payload.certificates[0]["profileName"] == world.other_pki.profile.name
    assert payload.certificates[0]["serialNumber"] == paying.serial_hex

    await Delivery.all().delete()
    await revoke_certificate(actor=world.actor, certificate_id=paying.id, reason="keyCompromise")
    await revoke_certificate(actor=world.actor, certificate_id=plain.id, reason="superseded")
    assert await dispatch_outbox() == 2
    by_alert = await deliveries_by_alert()
    assert sorted(by_alert) == ["by-name", "revocations"]
    assert len(by_alert["revocations"]) == 2 and len(by_alert["by-name"]) == 1
    revoked = Notification.from_payload(by_alert["by-name"][0].payload)
    assert revoked.event_type == "certificate.revoked"
    assert revoked.details["reason"] == "keyCompromise"
    assert revoked.certificates[0]["status"] == "revoked"


async def test_an_event_of_another_application_reaches_none_of_these_alerts(
    world: World, receiver: Receiver
) -> None:
    from factories import make_application

    other = await make_application(world.org, profiles=[world.pki.profile])
    await world.alert("here", ["issuance"], urls=[receiver.url])
    await world.alert("there", ["issuance"], urls=[receiver.url], application_id=other.id)
    await world.issue("api.example.com")
    assert await dispatch_outbox() == 1
    assert sorted(await deliveries_by_alert()) == ["here"]


async def test_re_dispatch_and_concurrent_dispatchers_add_no_delivery(
    world: World, receiver: Receiver
) -> None:
    await world.alert("all", ["issuance"], urls=[receiver.url, receiver.url + "?2"])
    for index in range(6):
        await world.issue(f"svc{index}.example.com")
    processed = await asyncio.gather(dispatch_outbox(batch_size=2), dispatch_outbox(batch_size=2))
    assert sum(processed) == 6
    assert await Delivery.all().count() == 12
    # An event processed again (a crash after the commit was reported lost, an operator reset) adds nothing.
    await OutboxEvent.all().update(processed_at=None)
    assert await dispatch_outbox() == 6
    assert await Delivery.all().count() == 12
    assert await OutboxEvent.filter(processed_at__isnull=True).count() == 0


async def test_delivery_reaches_the_webhook_signed_with_the_event_id(
    world: World, receiver: Receiver
) -> None:
    await world.alert("hook", ["issuance"], urls=[receiver.url])
    certificate = await world.issue("api.example.com")
    await dispatch_outbox()
    assert await deliver_due() == 1
    assert await deliver_due() == 0  # nothing is sent twice
    event = await OutboxEvent.get(certificate_id=certificate.id)
    [received] = receiver.received
    assert received.signature_ok
    assert received.event["id"] == str(event.id)
    assert received.event["type"] == "com.keyward.certificate.issued"
    row = await Delivery.get()
    assert row.status == DeliveryStatus.SUCCEEDED and row.attempts == 1 and row.leased_until is None
    [attempt] = await list_attempts(actor=world.actor, delivery_id=row.id)
    assert attempt.succeeded and attempt.http_status == 200 and attempt.error is None


def test_backoff_grows_exponentially_up_to_the_cap_with_full_jitter() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    ceilings = [backoff_delay(n, rng=Top()).total_seconds() for n in range(1, 10)]
    assert ceilings == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    jittered = [backoff_delay(5, rng=random.Random(seed)).total_seconds() for seed in range(50)]
    assert all(1 <= d <= 480 for d in jittered) and len(set(jittered)) > 40


async def test_a_receiver_that_is_down_is_retried_with_backoff_then_dead_then_retried_by_hand(
    world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery.random, "uniform", lambda a, b: b)  # jitter at its ceiling: exact delays
    await world.alert("hook", ["issuance"], urls=[receiver.url])
    await world.issue("api.example.com")
    await dispatch_outbox()
    receiver.status = 503
    delays = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await deliver_due() == 1, attempt
        row = await Delivery.get()
        assert row.attempts == attempt and row.leased_until is None
        assert await deliver_due() == 0  # not due again before its backoff runs out
        if attempt < MAX_ATTEMPTS:
            assert row.status == DeliveryStatus.PENDING
            last = await DeliveryAttempt.filter(delivery_id=row.id).order_by("-attempted_at").first()
            assert last is not None
            delays.append((row.next_attempt_at - last.attempted_at).total_seconds())
            # Time passes: the backoff is over.
            await Delivery.filter(id=row.id).update(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    assert row.status == DeliveryStatus.DEAD
    assert "503" in (row.last_error or "")
    assert delays == sorted(delays) and delays[0] < delays[-1]
    assert all(b > a for a, b in zip(delays, delays[1:], strict=False) if b < 3600)
    assert 29 <= delays[0] <= 31
    log = await list_attempts(actor=world.actor, delivery_id=row.id)
    assert len(log) == MAX_ATTEMPTS
    assert all(not a.succeeded and a.http_status == 503 and "503" in (a.error or "") for a in log)
    assert len(set(receiver.event_ids())) == 1 and len(receiver.received) == MAX_ATTEMPTS

    # Operators and auditors cannot retry; strangers do not even see it.
    operator = _member(world, ApplicationRole.OPERATOR)
    with pytest.raises(Forbidden):
        await retry_by_hand(actor=operator, delivery_id=row.id)
    with pytest.raises(NotFound):
        await retry_by_hand(actor=_member(world, None), delivery_id=row.id)
    with pytest.raises(NotFound):
        await retry_by_hand(actor=world.actor, delivery_id=uuid.uuid4())

    receiver.status = 200
    admin = _member(world, ApplicationRole.ADMIN)
    retried = await retry_by_hand(actor=admin, delivery_id=row.id)
    assert retried.status == DeliveryStatus.PENDING and retried.attempts == 0
    assert await AuditEvent.filter(action="delivery.retry", resource_id=str(row.id)).count() == 1
    with pytest.raises(InvalidState):
        await retry_by_hand(actor=admin, delivery_id=row.id)  # only a dead delivery
    assert await deliver_due() == 1
    row = await Delivery.get()
    assert row.status == DeliveryStatus.SUCCEEDED
    assert len(await list_attempts(actor=world.actor, delivery_id=row.id)) == MAX_ATTEMPTS + 1
    assert len(set(receiver.event_ids())) == 1 and len(receiver.received) == MAX_ATTEMPTS + 1


async def test_a_refusal_is_dead_at_once(world: World, receiver: Receiver) -> None:
    await world.alert("hook", ["issuance"], urls=[receiver.url])
    await world.issue("api.example.com")
    await dispatch_outbox()
    receiver.status = 400
    assert await deliver_due() == 1
    row = await Delivery.get()
    assert row.status == DeliveryStatus.DEAD and row.attempts == 1


async def test_a_leased_delivery_is_not_sent_twice_and_a_lost_lease_runs_out(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.alert("hook", ["issuance"], urls=["http://127.0.0.1:9/never"])
    await world.issue("api.example.com")
    await dispatch_outbox()
    sent: list[Any] = []
    gate, sending = asyncio.Event(), asyncio.Event()

    async def slow_send(channel: Any, notification: Notification) -> AttemptResult:
        sent.append(notification.event_id)
        sending.set()
        await gate.wait()
        return AttemptResult(ok=True, http_status=204)

    monkeypatch.setattr(delivery.channel, "send", slow_send)
    first = asyncio.create_task(deliver_due())
    await asyncio.wait_for(sending.wait(), 10)
    assert await deliver_due() == 0  # leased by the first sweep, which is still sending
    gate.set()
    assert await asyncio.wait_for(first, 10) == 1
    assert (await Delivery.get()).status == DeliveryStatus.SUCCEEDED

    # A worker that died mid-send: its lease (in the past now) runs out and the next sweep sends again.
    await Delivery.all().update(
        status=DeliveryStatus.PENDING, leased_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert await asyncio.wait_for(deliver_due(), 10) == 1
    assert len(sent) == 2 and sent[0] == sent[1]


def _member(world: World, role: ApplicationRole | None) -> Actor:
    roles = {world.application.id: role} if role is not None else {}
    return Actor(uuid.uuid4(), world.org.id, "user", "someone", ProductRole.MEMBER, roles)


async def test_renewal_alerts_hear_renewals_and_failed_renewals(world: World, receiver: Receiver) -> None:
    from tortoise.transactions import in_transaction

    from core import outbox

    await world.alert("renewals", ["renewal"], urls=[receiver.url])
    certificate = await world.issue("api.example.com")
    async with in_transaction() as conn:
        for event_type, extra in (
            (outbox.CERTIFICATE_RENEWED, {"renewed_from_id": str(uuid.uuid4())}),
            (outbox.CERTIFICATE_RENEWAL_FAILED, {"error": "the CA is disabled", "attempts": 2}),
        ):
            await outbox.emit(
                event_type=event_type,
                organization_id=world.org.id,
                application_id=world.application.id,
                certificate_id=certificate.id,
                payload={"certificate_id": str(certificate.id), "common_name": "api.example.com", **extra},
                connection=conn,
            )
    assert await dispatch_outbox() == 3
    by_type = {n.event_type: n for n in (Notification.from_payload(d.payload) for d in await Delivery.all())}
    assert sorted(by_type) == ["certificate.renewal_failed", "certificate.renewed"]
    assert by_type["certificate.renewal_failed"].details == {"error": "the CA is disabled", "attempts": 2}
    assert "renewedFromId" in by_type["certificate.renewed"].details
