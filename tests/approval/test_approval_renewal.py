"""Renewals under an approval policy (SPEC §11): renewCertificate answers with a pending request, the
approval renews from the stored request (predecessor `renewed` once, successor linked); the worker's
auto-renewal asks once per certificate, not once per sweep; and an approved request whose issuance never
happened is issued by the worker's retry, exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from approval_support import APPROVE, REQUEST_FIELDS, ApprovalScene, create_policy, make_approval_scene
from conftest import GraphQL, OrgAdmin
from factories import make_csr_pem

from core import approval
from core.authz import Actor
from core.certificate import revoke_certificate
from core.issuance import issue_certificate
from core.renewal import renew_due
from models import ApprovalRequest, AuditEvent, Certificate
from models.enums import CertificateStatus, EnrollmentMethod
from worker.jobs import all_jobs

RENEW = (
    "mutation($input: RenewCertificateInput!) { renewCertificate(input: $input) { "
    "certificate { id } previous { id status } approvalRequest { renewalOfId " + REQUEST_FIELDS + " } } }"
)


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> ApprovalScene:
    return await make_approval_scene(org_admin.organization_id, org_admin.token)


async def _issued(scene: ApprovalScene, name: str = "renew.example.com", **fields: object) -> Certificate:
    """A certificate issued before the policy exists (by the system actor, nothing held)."""
    return await issue_certificate(
        actor=Actor.system(scene.org.id),
        application_id=scene.application.id,
        profile_id=scene.pki.profile.id,
        subject=[("CN", name)],
        **fields,  # type: ignore[arg-type]
    )


async def test_api_renewal_waits_then_the_approval_renews_once(gql: GraphQL, scene: ApprovalScene) -> None:
    old = await _issued(scene)
    approver = scene.approvers[1]
    await create_policy(gql, scene, [([approver], 1)])
    variables = {"input": {"certificateId": str(old.id), "mode": "NEW_KEY"}}
    payload = (await gql(RENEW, variables, token=scene.requester.token))["renewCertificate"]
    assert payload["certificate"] is None
    assert payload["previous"] == {"id": str(old.id), "status": "ACTIVE"}
    request = payload["approvalRequest"]
    assert request["status"] == "PENDING" and request["renewalOfId"] == str(old.id)
    assert request["commonName"] == "renew.example.com" and request["csrPem"] is None
    # Asking again while it waits answers with the same request: one pending renewal per certificate.
    again = (await gql(RENEW, variables, token=scene.requester.token))["renewCertificate"]
    assert again["approvalRequest"]["id"] == request["id"]
    assert await ApprovalRequest.all().count() == 1
    assert await Certificate.all().count() == 1

    decided = (await gql(APPROVE, {"id": request["id"]}, token=approver.token))["approveRequest"]
    assert decided["status"] == "ISSUED"
    successor = await Certificate.get(id=decided["certificate"]["id"])
    assert successor.renewed_from_id == old.id and successor.enrollment_method == EnrollmentMethod.API
    await old.refresh_from_db()
    assert old.status == CertificateStatus.RENEWED
    assert await Certificate.filter(renewed_from_id=old.id).count() == 1
    assert await AuditEvent.filter(action="certificate.renew", resource_id=str(successor.id)).count() == 1
    # The renewed certificate cannot be renewed again; the successor can (and waits again).
    payload = (
        await gql(
            RENEW,
            {"input": {"certificateId": str(successor.id), "mode": "SAME_KEY"}},
            token=scene.requester.token,
        )
    )["renewCertificate"]
    assert payload["approvalRequest"]["renewalOfId"] == str(successor.id)


async def test_api_renewal_with_a_csr_waits_and_renews_from_the_stored_csr(
    gql: GraphQL, scene: ApprovalScene
) -> None:
    old = await _issued(scene, "csr.example.com")
    approver = scene.approvers[0]
    await create_policy(gql, scene, [([approver], 1)])
    csr, _ = make_csr_pem(common_name="csr.example.com")
    variables = {"input": {"certificateId": str(old.id), "mode": "CSR", "csr": csr}}
    request = (await gql(RENEW, variables, token=scene.requester.token))["renewCertificate"][
        "approvalRequest"
    ]
    assert request["csrPem"]
    decided = (await gql(APPROVE, {"id": request["id"]}, token=approver.token))["approveRequest"]
    successor = await Certificate.get(id=decided["certificate"]["id"])
    assert successor.renewed_from_id == old.id and successor.encrypted_private_key is None


async def test_machine_identity_bypass_applies_to_renewals(gql: GraphQL, scene: ApprovalScene) -> None:
    from approval_support import machine_operator

    old = await _issued(scene)
    await create_policy(gql, scene, [([scene.approvers[1]], 1)], bypassMachineIdentities=True)
    machine = await machine_operator(scene)
    variables = {"input": {"certificateId": str(old.id), "mode": "NEW_KEY"}}
    payload = (await gql(RENEW, variables, token=machine.token))["renewCertificate"]
    assert payload["certificate"] is not None and payload["approvalRequest"] is None
    assert await ApprovalRequest.all().count() == 0


async def test_auto_renewal_is_held_once_not_once_per_sweep(gql: GraphQL, scene: ApprovalScene) -> None:
    old = await _issued(scene, "auto.example.com", auto_renew=True)
    assert old.renewal_due_at is not None
    approver = scene.approvers[1]
    await create_policy(gql, scene, [([approver], 1)])
    due = old.renewal_due_at + timedelta(minutes=1)
    first = await renew_due(now=due)
    assert list(first.held) == [old.id] and not first.renewed and not first.failed
    # Later sweeps, past the claim lease, leave it alone while its request is open.
    for later in (due + timedelta(minutes=11), due + timedelta(hours=2)):
        report = await renew_due(now=later)
        assert not report.held and not report.failed and not report.renewed
    rows = await ApprovalRequest.all()
    assert len(rows) == 1 and rows[0].renewal_of_id == old.id and rows[0].requester_name == "keyward worker"
    await old.refresh_from_db()
    assert old.status == CertificateStatus.ACTIVE and old.renewal_error is None

    decided = (await gql(APPROVE, {"id": str(rows[0].id)}, token=approver.token))["approveRequest"]
    assert decided["status"] == "ISSUED"
    successor = await Certificate.get(id=decided["certificate"]["id"])
    assert successor.renewed_from_id == old.id and successor.encrypted_private_key is not None
    await old.refresh_from_db()
    assert old.status == CertificateStatus.RENEWED and old.renewal_due_at is None


async def _approved_without_certificate(gql: GraphQL, scene: ApprovalScene, name: str) -> ApprovalRequest:
    """A request approved whose issuance never ran (as if the process died right after the approval)."""
    csr, _ = make_csr_pem(common_name=name)
    data = await gql(
        "mutation($input: IssueCertificateInput!) { "
        "issueCertificate(input: $input) { approvalRequest { id } } }",
        scene.issue_input(csr=csr),
        token=scene.requester.token,
    )
    request_id = data["issueCertificate"]["approvalRequest"]["id"]
    await ApprovalRequest.filter(id=request_id).update(
        status=approval.APPROVED, decided_at=datetime.now(UTC), updated_at=datetime.now(UTC)
    )
    return await ApprovalRequest.get(id=request_id)


async def test_an_approved_request_left_without_certificate_is_issued_once_by_the_worker(
    gql: GraphQL, scene: ApprovalScene
) -> None:
    assert "approvals.retry_approved" in {job.id for job in all_jobs()}
    await create_policy(gql, scene, [([scene.approvers[1]], 1)])
    row = await _approved_without_certificate(gql, scene, "lost.example.com")
    # Within the grace period the approver's own issuance may still be running: left alone.
    assert await approval.retry_approved() == 0
    later = datetime.now(UTC) + approval.RETRY_GRACE + timedelta(seconds=5)
    # Two workers at once: one issues, the other finds nothing to claim or rolls back.
    results = await asyncio.gather(approval.retry_approved(later), approval.retry_approved(later))
    assert sum(results) >= 1
    await row.refresh_from_db()
    assert row.status == approval.ISSUED and row.certificate_id is not None
    assert await Certificate.all().count() == 1
    assert (await Certificate.get()).common_name == "lost.example.com"
    assert await approval.retry_approved(later + timedelta(hours=1)) == 0
    assert await Certificate.all().count() == 1


async def test_an_approved_renewal_that_cannot_issue_ends_failed_with_the_reason(
    gql: GraphQL, scene: ApprovalScene
) -> None:
    old = await _issued(scene)
    await create_policy(gql, scene, [([scene.approvers[1]], 1)])
    variables = {"input": {"certificateId": str(old.id), "mode": "NEW_KEY"}}
    request = (await gql(RENEW, variables, token=scene.requester.token))["renewCertificate"][
        "approvalRequest"
    ]
    await ApprovalRequest.filter(id=request["id"]).update(
        status=approval.APPROVED, updated_at=datetime.now(UTC)
    )
    await revoke_certificate(actor=Actor.system(scene.org.id), certificate_id=old.id, reason="superseded")
    later = datetime.now(UTC) + approval.RETRY_GRACE + timedelta(seconds=5)
    assert await approval.retry_approved(later) == 1
    row = await ApprovalRequest.get(id=request["id"])
    assert row.status == approval.FAILED and "revoked" in (row.failure_reason or "")
    assert await Certificate.all().count() == 1
    assert await AuditEvent.filter(action="approval.issue", resource_id=str(row.id)).count() == 1
    assert await approval.retry_approved(later + timedelta(hours=1)) == 0
