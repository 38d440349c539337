"""Legacy certificates keep working through the worker (SPEC §12): the imported example's auto-renew
certificate on its API profile is renewed by `renewals.renew_due`, a certificate near its end raises the
legacy expiration alert (a signed webhook to a loopback receiver, an email to a real aiosmtpd server) through
`alerts.scan_expiring` and `deliveries.retry`, and the renewal is pushed by the legacy HTTP sync through
`outbox.dispatch` and `syncs.push` — the real jobs of the worker's registry, nothing called around them."""

from __future__ import annotations

import hashlib
import hmac
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import OrgAdmin
from legacy_rules_support import example_export, legacy_payments

from core import alert as alert_service
from core import sync as sync_service
from models import AlertChannel, Certificate, Delivery, ExpirationNotice
from models.enums import CertificateStatus, DeliveryStatus
from models.sync import SyncTarget, SyncTargetStatus
from pki.certificate import load_certificate
from worker.instrument import instrumented
from worker.jobs import Job, all_jobs

# The real peers of the worker tests (loopback HTTP receiver, aiosmtpd), reused rather than copied.
_WORKER_TESTS = str(Path(__file__).resolve().parents[1] / "worker")
if _WORKER_TESTS not in sys.path:
    sys.path.append(_WORKER_TESTS)

from channel_peers import HttpReceiver, http_receiver, settings_override, smtp_server  # noqa: E402

JOBS = {job.id: job for job in all_jobs()}


async def run(job_id: str) -> Any:
    """One run of a registered worker job, as the scheduler runs it (instrumented)."""
    job: Job = JOBS[job_id]
    return await instrumented(job)()


def signed(receiver: HttpReceiver, secret: str) -> list[dict[str, Any]]:
    """The JSON bodies the receiver got, each checked against X-Keyward-Signature with `secret`."""
    bodies = []
    for request in receiver.requests:
        parts = dict(p.split("=", 1) for p in request.headers["x-keyward-signature"].split(","))
        expected = hmac.new(
            secret.encode(), f"{parts['t']}.".encode() + request.body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(expected, parts["v1"]), "bad signature"
        bodies.append(request.json())
    return bodies


async def test_legacy_certificates_renew_alert_and_sync_through_the_worker(org_admin: OrgAdmin) -> None:
    export = example_export()
    webhook_secret = export["alerts"][0]["channels"][0]["secret"]
    sync_secret = export["syncs"][0]["credentials"]["signingSecret"]
    with (
        http_receiver() as hooks,
        http_receiver(status=204, body=b"") as edge,
        smtp_server("none") as mail,
        settings_override(
            allow_loopback_webhooks=True,
            smtp_host="127.0.0.1",
            smtp_port=mail.port,
            smtp_tls="none",
            smtp_from="keyward@acme.test",
        ),
    ):
        payments = await legacy_payments(org_admin.organization_id, export)
        assert payments.alert_id is not None and payments.sync_id is not None
        admin = await payments.actor("admin")
        # The legacy alert and sync are modified (as legacy ones may be) to reach the peers on loopback;
        # channel ids are kept, so the imported webhook secret stays.
        channels = await AlertChannel.filter(alert_id=payments.alert_id).order_by("position")
        assert [c.type.value for c in channels] == ["webhook", "email"]
        await alert_service.update_alert(
            actor=admin,
            alert_id=payments.alert_id,
            channels=[
                alert_service.ChannelSpec(type="webhook", config={"url": hooks.url}, id=channels[0].id),
                alert_service.ChannelSpec(type="email", config=dict(channels[1].config), id=channels[1].id),
            ],
        )
        await sync_service.update_sync(actor=admin, sync_id=payments.sync_id, connection={"url": edge.url})

        now = datetime.now(UTC)
        # gateway (web-api, server-held key, auto-renew) is due; www (web-acme) ends in five days.
        gateway = await Certificate.get(id=payments.certificates["gateway"])
        assert gateway.auto_renew and gateway.encrypted_private_key is not None
        await Certificate.filter(id=gateway.id).update(
            not_after=now + timedelta(days=20), renewal_due_at=now - timedelta(minutes=1)
        )
        await Certificate.filter(id=payments.certificates["www"]).update(not_after=now + timedelta(days=5))
        # Delivery is only what the jobs below do: the import queued the sync's matching certificates.
        await SyncTarget.filter(sync_id=payments.sync_id).delete()

        # Renewal -------------------------------------------------------------------------------------
        report = await run("renewals.renew_due")
        assert list(report.renewed) == [gateway.id] and not report.failed
        successor = await Certificate.get(renewed_from_id=gateway.id)
        assert successor.application_id == payments.project_id
        assert successor.profile_id == payments.profiles["web-api"]
        assert successor.status == CertificateStatus.ACTIVE and successor.auto_renew
        assert successor.common_name == gateway.common_name and successor.serial_hex != gateway.serial_hex
        assert (await Certificate.get(id=gateway.id)).status == CertificateStatus.RENEWED
        assert not (await run("renewals.renew_due")).renewed  # once

        # Sync: the renewal event reaches the legacy sync, whose push reaches the receiver --------------
        await run("outbox.dispatch")
        await run("syncs.push")
        pushed = signed(edge, sync_secret)
        assert [(b["event"], b["certificateId"]) for b in pushed] == [("sync.push", str(successor.id))]
        assert pushed[0]["syncName"] == "edge-push"
        assert load_certificate(pushed[0]["certificate"]) == load_certificate(successor.certificate_pem)
        assert "PRIVATE KEY" in pushed[0]["privateKey"]
        state = await SyncTarget.get(sync_id=payments.sync_id, certificate_id=successor.id)
        assert state.status == SyncTargetStatus.SUCCEEDED

        # Expiration alert: scanned, then delivered by webhook and by email ------------------------------
        assert await run("alerts.scan_expiring") == 1
        assert await run("alerts.scan_expiring") == 0  # a threshold fires once
        await run("deliveries.retry")
        deliveries = await Delivery.filter(alert_id=payments.alert_id).order_by("created_at")
        assert {d.status for d in deliveries} == {DeliveryStatus.SUCCEEDED}
        (event,) = signed(hooks, webhook_secret)
        data = event["data"]
        assert (
            data["eventType"] == "certificate.expiring"
            and data["alertName"] == "payments-expiry-and-issuance"
        )
        assert data["details"]["thresholdDays"] == 7
        assert [c["commonName"] for c in data["certificates"]] == ["www.payments.example.com"]
        assert [c["id"] for c in data["certificates"]] == [str(payments.certificates["www"])]
        (message,) = mail.mails
        assert message.recipients == ["pki-team@payments.example.com"]
        assert "www.payments.example.com" in message.part("plain")
        assert await ExpirationNotice.filter(certificate_id=payments.certificates["www"]).count() >= 1
