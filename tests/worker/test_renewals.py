"""Auto-renewal: due certificates renewed once through the renewal path, failures backed off and alerted."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from factories import CERTIFICATE_FIELDS, make_application, make_csr_pem, make_pki

from core import outbox
from core.authz import Actor
from core.certificate import revoke_certificate
from core.issuance import issue_certificate
from core.renewal import BACKOFF_MAX, WORKER_NAME, backoff, renew_due
from models import (
    ApplicationProfile,
    AuditEvent,
    Certificate,
    CertificateAuthority,
    CertificatePolicy,
    Organization,
    OutboxEvent,
)
from models.enums import AuditOutcome, CaStatus, CertificateStatus
from worker.jobs import all_jobs

UPDATE = (
    "mutation($input: UpdateCertificateInput!) { updateCertificate(input: $input) { certificate { "
    + CERTIFICATE_FIELDS
    + " renewalDueAt renewalError renewalAttempts nextRenewalAttemptAt } } }"
)


class Setup:
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


async def _setup(org_admin: OrgAdmin, *, auto_renew: bool = True) -> Setup:
    org = await Organization.get(id=org_admin.organization_id)
    pki = await make_pki(org, default_validity="90d")
    application = await make_application(
        org, profiles=[pki.profile], api_auto_renew=auto_renew, api_renew_before_days=30
    )
    return Setup(org, pki, application)


def _after_due(certificate: Certificate, by: timedelta = timedelta(minutes=1)) -> datetime:
    assert certificate.renewal_due_at is not None
    return certificate.renewal_due_at + by


async def test_renewal_job_is_registered() -> None:
    assert "renewals.renew_due" in {job.id for job in all_jobs()}


async def test_due_at_follows_issuance_and_backoff_is_capped(org_admin: OrgAdmin) -> None:
    setup = await _setup(org_admin)
    certificate = await setup.issue()
    assert certificate.auto_renew and certificate.encrypted_private_key is not None
    assert certificate.renewal_due_at == certificate.not_after - timedelta(days=30)
    rng = random.Random(7)
    delays = [backoff(n, rng=rng) for n in range(1, 12)]
    assert timedelta(minutes=3) < delays[0] <= timedelta(minutes=5)
    assert delays[1] > delays[0] and delays[2] > delays[1]
    assert all(delay <= BACKOFF_MAX for delay in delays)
    assert delays[-1] >= BACKOFF_MAX * 0.75


async def test_due_certificate_is_renewed_once_with_links(org_admin: OrgAdmin) -> None:
    setup = await _setup(org_admin)
    # Shorter than the profile's 90 days, so the successor (issued now, for 90 days) is not due too.
    due = await setup.issue("due.example.com", validity="40d")
    later = await setup.issue("later.example.com", validity="200d")
    now = _after_due(due)
    assert later.renewal_due_at is not None and later.renewal_due_at > now

    report = await renew_due(now=now)
    assert list(report.renewed) == [due.id] and not report.failed

    old = await Certificate.get(id=due.id)
    assert old.status == CertificateStatus.RENEWED and old.renewal_due_at is None
    successor = await Certificate.get(renewed_from_id=due.id)
    assert report.renewed[due.id] == successor.id
    assert successor.status == CertificateStatus.ACTIVE
    assert successor.encrypted_private_key is not None and successor.auto_renew
    assert successor.common_name == "due.example.com" and successor.sans == old.sans
    assert successor.serial_hex != old.serial_hex
    assert successor.renewal_due_at == successor.not_after - timedelta(days=30)

    untouched = await Certificate.get(id=later.id)
    assert untouched.status == CertificateStatus.ACTIVE and untouched.renewal_due_at == later.renewal_due_at
    assert await Certificate.filter(renewed_from_id=later.id).count() == 0

    entry = await AuditEvent.get(action="certificate.renew", resource_id=str(successor.id))
    assert entry.outcome == AuditOutcome.SUCCESS
    assert entry.actor_kind == "system" and entry.actor_name == WORKER_NAME
    assert entry.details["renewed_from"] == str(due.id)
    event = await OutboxEvent.get(event_type=outbox.CERTIFICATE_RENEWED, certificate_id=successor.id)
    assert event.payload["renewed_from_id"] == str(due.id)

    # A second sweep at the same time finds nothing to do.
    total = await Certificate.all().count()
    again = await renew_due(now=now)
    assert not again.renewed and not again.failed
    assert await Certificate.all().count() == total
    assert await Certificate.filter(renewed_from_id=due.id).count() == 1


async def test_not_yet_due_csr_and_manual_certificates_are_left_alone(org_admin: OrgAdmin) -> None:
    setup = await _setup(org_admin)
    csr, _ = make_csr_pem(common_name="csr.example.com", sans=["csr.example.com"])
    from_csr = await setup.issue(csr=csr)
    manual = await setup.issue("manual.example.com", auto_renew=False)
    auto = await setup.issue("auto.example.com")
    assert from_csr.renewal_due_at is None and not from_csr.auto_renew
    assert manual.renewal_due_at is None

    before = _after_due(auto, -timedelta(minutes=1))
    assert not (await renew_due(now=before)).renewed
    far = datetime.now(UTC) + timedelta(days=3650)
    report = await renew_due(now=far)
    assert list(report.renewed) == [auto.id]
    for kept in (from_csr, manual):
        row = await Certificate.get(id=kept.id)
        assert row.status == CertificateStatus.ACTIVE
        assert await Certificate.filter(renewed_from_id=kept.id).count() == 0


async def test_revocation_clears_the_schedule(org_admin: OrgAdmin) -> None:
    setup = await _setup(org_admin)
    certificate = await setup.issue()
    await revoke_certificate(actor=setup.actor, certificate_id=certificate.id, reason="superseded")
    assert (await Certificate.get(id=certificate.id)).renewal_due_at is None
    assert not (await renew_due(now=_after_due(certificate))).renewed
    assert await Certificate.filter(renewed_from_id=certificate.id).count() == 0


async def _break_policy(setup: Setup) -> None:
    rules = {"sans": [{"type": "DNS", "allowed": ["other.example.org"]}]}
    await CertificatePolicy.filter(id=setup.pki.policy.id).update(rules=rules, updated_at=datetime.now(UTC))


@pytest.mark.parametrize("breakage", ["policy", "ca_disabled", "detached"])
async def test_failure_is_recorded_backed_off_audited_and_announced(
    org_admin: OrgAdmin, breakage: str
) -> None:
    setup = await _setup(org_admin)
    certificate = await setup.issue("fragile.example.com")
    if breakage == "policy":
        await _break_policy(setup)
    elif breakage == "ca_disabled":
        await CertificateAuthority.filter(id=setup.pki.intermediate.id).update(status=CaStatus.DISABLED)
    else:
        await ApplicationProfile.filter(application_id=setup.application.id).delete()
    now = _after_due(certificate)
    total = await Certificate.all().count()

    report = await renew_due(now=now)
    assert list(report.failed) == [certificate.id] and not report.renewed
    row = await Certificate.get(id=certificate.id)
    assert row.status == CertificateStatus.ACTIVE and row.renewal_error
    assert row.renewal_attempts == 1
    assert row.next_renewal_attempt_at is not None
    assert now + timedelta(minutes=3) <= row.next_renewal_attempt_at <= now + timedelta(minutes=5)
    assert await Certificate.all().count() == total
    failures = await AuditEvent.filter(
        action="certificate.renew", resource_id=str(certificate.id), outcome=AuditOutcome.FAILURE
    )
    assert len(failures) == 1
    assert failures[0].actor_name == WORKER_NAME and failures[0].details["attempt"] == 1
    events = await OutboxEvent.filter(
        event_type=outbox.CERTIFICATE_RENEWAL_FAILED, certificate_id=certificate.id
    )
    assert len(events) == 1
    assert events[0].payload["error"] == row.renewal_error and events[0].payload["attempts"] == 1

    # No retry before the backoff runs out, however often the sweep runs.
    for minutes in (0, 1, 3):
        assert not (await renew_due(now=now + timedelta(minutes=minutes))).failed
    assert (await Certificate.get(id=certificate.id)).renewal_attempts == 1

    # After it, one more attempt, and a longer wait.
    retry_at = row.next_renewal_attempt_at + timedelta(seconds=1)
    assert list((await renew_due(now=retry_at)).failed) == [certificate.id]
    row = await Certificate.get(id=certificate.id)
    assert row.renewal_attempts == 2
    assert row.next_renewal_attempt_at is not None
    assert row.next_renewal_attempt_at - retry_at >= timedelta(minutes=7)
    assert await OutboxEvent.filter(event_type=outbox.CERTIFICATE_RENEWAL_FAILED).count() == 2


async def test_fixed_cause_lets_the_retry_renew(org_admin: OrgAdmin) -> None:
    setup = await _setup(org_admin)
    certificate = await setup.issue("fixed.example.com")
    await CertificateAuthority.filter(id=setup.pki.intermediate.id).update(status=CaStatus.DISABLED)
    now = _after_due(certificate)
    assert (await renew_due(now=now)).failed
    await CertificateAuthority.filter(id=setup.pki.intermediate.id).update(status=CaStatus.ACTIVE)
    row = await Certificate.get(id=certificate.id)
    assert row.next_renewal_attempt_at is not None
    report = await renew_due(now=row.next_renewal_attempt_at + timedelta(seconds=1))
    assert list(report.renewed) == [certificate.id]
    assert (await Certificate.get(id=certificate.id)).status == CertificateStatus.RENEWED


async def test_update_certificate_toggles_auto_renew(gql: GraphQL, org_admin: OrgAdmin) -> None:
    setup = await _setup(org_admin, auto_renew=False)
    certificate = await setup.issue("toggle.example.com")
    assert certificate.renewal_due_at is None
    token = org_admin.token

    data = await gql(
        UPDATE, {"input": {"certificateId": str(certificate.id), "autoRenew": True}}, token=token
    )
    shown = data["updateCertificate"]["certificate"]
    assert shown["autoRenew"] is True and shown["renewalDueAt"] is not None
    row = await Certificate.get(id=certificate.id)
    assert row.renewal_due_at == row.not_after - timedelta(days=30)
    entry = await AuditEvent.get(action="certificate.update", resource_id=str(certificate.id))
    assert entry.details["auto_renew"] is True

    data = await gql(
        UPDATE,
        {"input": {"certificateId": str(certificate.id), "autoRenew": False, "metadata": {"team": "a"}}},
        token=token,
    )
    shown = data["updateCertificate"]["certificate"]
    assert shown["autoRenew"] is False and shown["renewalDueAt"] is None
    assert shown["metadata"] == {"team": "a"}
    assert not (await renew_due(now=datetime.now(UTC) + timedelta(days=3650))).renewed

    csr, _ = make_csr_pem(common_name="csr2.example.com", sans=["csr2.example.com"])
    from_csr = await setup.issue(csr=csr)
    with pytest.raises(GraphQLError) as refused:
        await gql(UPDATE, {"input": {"certificateId": str(from_csr.id), "autoRenew": True}}, token=token)
    assert refused.value.codes == ["INVALID_INPUT"]
    assert (await Certificate.get(id=from_csr.id)).renewal_due_at is None
    with pytest.raises(GraphQLError) as missing:
        await gql(UPDATE, {"input": {"certificateId": str(uuid.uuid4()), "autoRenew": True}}, token=token)
    assert missing.value.codes == ["NOT_FOUND"]
