"""Expiration alerts fire once per (alert, certificate, threshold), or once a day in daily mode."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from conftest import OrgAdmin
from delivery_support import World, loopback_webhooks, make_world, set_not_after

from core.channel import Notification
from core.expiration import scan_expiring
from models import Delivery, ExpirationNotice
from models.enums import CertificateStatus

URL = "http://127.0.0.1:9/hook"  # nothing is sent in these tests


@pytest.fixture
def allow_loopback() -> Iterator[None]:
    with loopback_webhooks():
        yield


@pytest_asyncio.fixture
async def world(org_admin: OrgAdmin, allow_loopback: None) -> World:
    return await make_world(org_admin.organization_id)


async def notifications() -> list[Notification]:
    rows = await Delivery.all().order_by("created_at")
    return [Notification.from_payload(r.payload) for r in rows]


def fired(items: list[Notification]) -> Counter[tuple[str, int]]:
    """(common name, threshold) -> how many notifications listed it."""
    return Counter((c["commonName"], n.details["thresholdDays"]) for n in items for c in n.certificates)


async def test_each_threshold_fires_once_and_only_the_smallest_crossed(world: World) -> None:
    base = datetime.now(UTC).replace(microsecond=0)
    await world.alert("expiry", ["expiration"], urls=[URL], thresholds="30d,7d,1d")
    soon = await world.issue("soon.example.com")
    later = await world.issue("later.example.com")
    far = await world.issue("far.example.com")
    await set_not_after(soon, base + timedelta(days=5))
    await set_not_after(later, base + timedelta(days=20))
    await set_not_after(far, base + timedelta(days=60))

    assert await scan_expiring(now=base) == 2
    first = await notifications()
    # 5 days left: the 7d notice fires, the 30d one is recorded as passed and never fires late.
    assert fired(first) == {("soon.example.com", 7): 1, ("later.example.com", 30): 1}
    assert await ExpirationNotice.filter(certificate_id=soon.id).count() == 2
    for _ in range(3):
        assert await scan_expiring(now=base + timedelta(hours=1)) == 0
    assert len(await notifications()) == 2

    # Days later: soon crosses 1d, later crosses 7d; each fires once more.
    assert await scan_expiring(now=base + timedelta(days=4, hours=12)) == 1
    assert await scan_expiring(now=base + timedelta(days=13, hours=1)) == 1
    assert await scan_expiring(now=base + timedelta(days=13, hours=2)) == 0
    assert fired(await notifications()) == {
        ("soon.example.com", 7): 1,
        ("soon.example.com", 1): 1,
        ("later.example.com", 30): 1,
        ("later.example.com", 7): 1,
    }
    # Expired certificates, and certificates no longer active, never fire.
    assert await scan_expiring(now=base + timedelta(days=6)) == 0
    event_ids = [n.event_id for n in await notifications()]
    assert len(set(event_ids)) == len(event_ids)


async def test_notification_lists_the_certificates_of_one_threshold(world: World) -> None:
    base = datetime.now(UTC)
    await world.alert("expiry", ["expiration"], urls=[URL, URL + "?2"], thresholds="7d")
    for name in ("a.example.com", "b.example.com", "c.example.com"):
        await set_not_after(await world.issue(name), base + timedelta(days=3))
    assert await scan_expiring(now=base) == 3
    items = await notifications()
    assert len(items) == 2  # one per channel, the same event
    assert items[0].event_id == items[1].event_id
    assert items[0].event_type == "certificate.expiring"
    assert sorted(c["commonName"] for c in items[0].certificates) == [
        "a.example.com",
        "b.example.com",
        "c.example.com",
    ]
    assert items[0].details == {"thresholdDays": 7, "daysLeft": 3}


async def test_filters_inactive_alerts_and_non_active_certificates(world: World) -> None:
    base = datetime.now(UTC)
    await world.alert(
        "by-profile", ["expiration"], urls=[URL], thresholds="30d", profile_ids=[world.pki.profile.id]
    )
    await world.alert(
        "by-name", ["expiration"], urls=[URL], thresholds="30d", name_pattern="*.pay.example.com"
    )
    await world.alert("off", ["expiration"], urls=[URL], thresholds="30d", is_active=False)
    await world.alert("issuance-only", ["issuance"], urls=[URL])
    plain = await world.issue("api.example.com")
    paying = await world.issue("x.pay.example.com", other_profile=True)
    revoked = await world.issue("gone.example.com")
    for certificate in (plain, paying, revoked):
        await set_not_after(certificate, base + timedelta(days=10))
    from models import Certificate

    await Certificate.filter(id=revoked.id).update(status=CertificateStatus.REVOKED)
    assert await scan_expiring(now=base) == 2
    rows = await Delivery.all().prefetch_related("alert")
    seen = {(r.alert.name, Notification.from_payload(r.payload).certificates[0]["commonName"]) for r in rows}
    assert seen == {("by-profile", "api.example.com"), ("by-name", "x.pay.example.com")}


async def test_concurrent_scanners_fire_each_notice_once(world: World) -> None:
    base = datetime.now(UTC)
    await world.alert("expiry-a", ["expiration"], urls=[URL], thresholds="30d,7d")
    await world.alert("expiry-b", ["expiration"], urls=[URL], thresholds="14d")
    for index in range(8):
        await set_not_after(await world.issue(f"s{index}.example.com"), base + timedelta(days=3 + index))
    for round_ in range(3):
        await asyncio.gather(*(scan_expiring(now=base + timedelta(minutes=round_)) for _ in range(4)))
    rows = await Delivery.all().prefetch_related("alert")
    per_alert: Counter[tuple[str, str, int]] = Counter()
    for row in rows:
        notification = Notification.from_payload(row.payload)
        for certificate in notification.certificates:
            per_alert[(row.alert.name, certificate["commonName"], notification.details["thresholdDays"])] += 1
    # expiry-a: 3..6 days left -> 7d; 7..10 days left -> 30d (7d recorded as not yet). expiry-b: all 8 at 14d.
    expected = {("expiry-a", f"s{i}.example.com", 7 if 3 + i <= 7 else 30): 1 for i in range(8)}
    expected.update({("expiry-b", f"s{i}.example.com", 14): 1 for i in range(8)})
    assert dict(per_alert) == expected


async def test_daily_mode_fires_once_a_day_until_renewed(world: World) -> None:
    day = datetime(2030, 1, 10, 9, 0, tzinfo=UTC)
    await world.alert("nag", ["expiration"], urls=[URL], thresholds="7d", daily_repeat=True)
    certificate = await world.issue("nag.example.com")
    await set_not_after(certificate, day + timedelta(days=5))
    assert await scan_expiring(now=day) == 1
    assert await scan_expiring(now=day + timedelta(hours=6)) == 0
    assert await scan_expiring(now=day + timedelta(hours=14, minutes=59)) == 0  # 23:59 the same day
    assert await scan_expiring(now=day + timedelta(days=1)) == 1
    assert await scan_expiring(now=day + timedelta(days=1, hours=3)) == 0
    assert await scan_expiring(now=day + timedelta(days=2)) == 1
    keys = sorted(await ExpirationNotice.all().values_list("notice_key", flat=True))
    assert keys == ["2030-01-10", "2030-01-11", "2030-01-12"]
    assert len({n.event_id for n in await notifications()}) == 3
    from models import Certificate

    await Certificate.filter(id=certificate.id).update(status=CertificateStatus.RENEWED)
    assert await scan_expiring(now=day + timedelta(days=3)) == 0
