"""GET /metrics: Prometheus text a real parser reads; issuance counters from the one issuance path;
inventory gauges from the database; the optional bearer token."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import factories
import httpx
import pytest
from conftest import GraphQL, OrgAdmin
from factories import ISSUE, RENEW, Scene, issue_input
from prometheus_client.parser import text_string_to_metric_families

from core import metrics, runtime
from models import Alert, AlertChannel, Certificate, Delivery, OutboxEvent
from models.enums import CertificateStatus, ChannelType, DeliveryStatus


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> Scene:
    return await factories.make_scene(org_admin.organization_id, org_admin.token)


@pytest.fixture
def metrics_token() -> Iterator[str]:
    previous = runtime.settings()
    token = "scrape-" + uuid.uuid4().hex
    runtime.configure(dataclasses.replace(previous, metrics_token=token), kek=runtime.kek())
    try:
        yield token
    finally:
        runtime.configure(previous, kek=runtime.kek())


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed by prometheus_client's own parser."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(parsed: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [v for got, v in parsed.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    return sum(matches)


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    metrics.clear_inventory_cache()
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


async def test_issuance_and_renewal_are_counted_once_with_method_profile_application(
    client: httpx.AsyncClient, gql: GraphQL, scene: Scene
) -> None:
    labels = {"method": "api", "profile": scene.pki.profile.name, "application": scene.application.name}
    before = await scrape(client)
    latency_before = value(before, "keyward_issuance_duration_seconds_count", method="api")

    data = await gql(ISSUE, issue_input(scene, commonName="m.example.com"), token=scene.operator.token)
    issued = data["issueCertificate"]["certificate"]
    await gql(ISSUE, issue_input(scene, commonName="n.example.com"), token=scene.operator.token)
    await gql(
        RENEW, {"input": {"certificateId": issued["id"], "mode": "NEW_KEY"}}, token=scene.operator.token
    )

    after = await scrape(client)
    issued_delta = value(after, "keyward_certificates_issued_total", kind="issue", **labels) - value(
        before, "keyward_certificates_issued_total", kind="issue", **labels
    )
    renewed_delta = value(after, "keyward_certificates_issued_total", kind="renew", **labels) - value(
        before, "keyward_certificates_issued_total", kind="renew", **labels
    )
    assert (issued_delta, renewed_delta) == (2, 1)
    assert value(after, "keyward_issuance_duration_seconds_count", method="api") - latency_before == 3
    assert value(after, "keyward_issuance_duration_seconds_bucket", method="api", le="+Inf") >= 3
    # Inventory from the database: two active, one renewed.
    assert value(after, "keyward_certificates", status="active") == 2
    assert value(after, "keyward_certificates", status="renewed") == 1
    assert value(after, "keyward_certificates", status="revoked") == 0  # every status is always present
    # Issuance events wait in the outbox (no worker ran): lag is their age, pending their number.
    assert value(after, "keyward_outbox_pending_events") == 3
    assert value(after, "keyward_outbox_lag_seconds") >= 0


async def test_refused_issuance_is_not_counted(client: httpx.AsyncClient, gql: GraphQL, scene: Scene) -> None:
    before = await scrape(client)
    body = await gql.raw(ISSUE, issue_input(scene, commonName="evil.example.org"), token=scene.operator.token)
    assert body["errors"][0]["extensions"]["code"] == "POLICY_VIOLATION"
    after = await scrape(client)
    assert value(after, "keyward_certificates_issued_total") == value(
        before, "keyward_certificates_issued_total"
    )


async def _certificate(scene: Scene, *, not_after: datetime, status: CertificateStatus) -> None:
    await Certificate.create(
        organization_id=scene.org.id,
        application_id=scene.application.id,
        profile_id=scene.pki.profile.id,
        serial_hex=uuid.uuid4().hex,
        subject_dn="CN=x",
        key_algorithm="EC_P256",
        signature_algorithm="ECDSA_WITH_SHA256",
        not_before=not_after - timedelta(days=90),
        not_after=not_after,
        status=status,
        source="imported",
        enrollment_method="import",
        certificate_pem="-",
        fingerprint_sha256=uuid.uuid4().hex,
    )


async def test_inventory_gauges_expiring_outbox_lag_and_failing_deliveries(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    now = datetime.now(UTC)
    for days, status in [
        (3, CertificateStatus.ACTIVE),  # within 7d and 30d
        (20, CertificateStatus.ACTIVE),  # within 30d
        (60, CertificateStatus.ACTIVE),  # neither
        (2, CertificateStatus.REVOKED),  # not active: not "expiring"
        (-1, CertificateStatus.ACTIVE),  # already past: not "expiring"
    ]:
        await _certificate(scene, not_after=now + timedelta(days=days), status=status)
    old = await OutboxEvent.create(organization_id=scene.org.id, event_type="certificate.issued")
    await OutboxEvent.filter(id=old.id).update(created_at=now - timedelta(minutes=10))
    await OutboxEvent.create(organization_id=scene.org.id, event_type="certificate.issued", processed_at=now)
    alert = await Alert.create(application_id=scene.application.id, name="ops")
    webhook = await AlertChannel.create(alert=alert, type=ChannelType.WEBHOOK, config={"url": "https://x"})
    email = await AlertChannel.create(alert=alert, type=ChannelType.EMAIL, config={"to": ["a@example.com"]})

    async def delivery(channel: Any, status: DeliveryStatus, attempts: int) -> None:
        await Delivery.create(
            alert=alert,
            channel=channel,
            event_id=uuid.uuid4(),
            event_type="certificate.issued",
            status=status,
            attempts=attempts,
            next_attempt_at=now,
        )

    await delivery(webhook, DeliveryStatus.DEAD, 8)
    await delivery(webhook, DeliveryStatus.PENDING, 2)  # retrying
    await delivery(webhook, DeliveryStatus.PENDING, 0)  # never tried yet: not failing
    await delivery(email, DeliveryStatus.SUCCEEDED, 3)  # succeeded in the end: not failing

    parsed = await scrape(client)
    assert value(parsed, "keyward_certificates_expiring", within="7d") == 1
    assert value(parsed, "keyward_certificates_expiring", within="30d") == 2
    assert value(parsed, "keyward_certificates", status="active") == 4
    assert value(parsed, "keyward_outbox_pending_events") == 1
    assert value(parsed, "keyward_outbox_lag_seconds") >= 599
    assert value(parsed, "keyward_deliveries_failing", channel="webhook", state="dead") == 1
    assert value(parsed, "keyward_deliveries_failing", channel="webhook", state="retrying") == 1
    assert value(parsed, "keyward_deliveries_failing", channel="email") == 0


async def test_every_family_is_declared(client: httpx.AsyncClient, db: str) -> None:
    response = await client.get("/metrics")
    families = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    assert (
        families
        | {
            "keyward_certificates_issued": "counter",
            "keyward_issuance_duration_seconds": "histogram",
            "keyward_certificates": "gauge",
            "keyward_certificates_expiring": "gauge",
            "keyward_outbox_lag_seconds": "gauge",
            "keyward_outbox_pending_events": "gauge",
            "keyward_deliveries_failing": "gauge",
            "keyward_delivery_failures": "counter",
            "keyward_sync_failures": "counter",  # no samples until syncs (issue #6)
            "keyward_worker_job_runs": "counter",
            "keyward_worker_job_duration_seconds": "histogram",
        }
        == families
    )
    assert "# TYPE keyward_sync_failures_total counter" in response.text
    assert "process_resident_memory_bytes" in response.text


async def test_metrics_token_when_configured(client: httpx.AsyncClient, db: str, metrics_token: str) -> None:
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    good = await client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    assert good.status_code == 200
    assert "keyward_certificates" in good.text


async def test_openmetrics_negotiation(client: httpx.AsyncClient, db: str) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
