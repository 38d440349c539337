"""EST (RFC 7030) under an approval policy, with curl and openssl against a real server on loopback:
simpleenroll answers 202 with Retry-After, the client's retry of the same CSR waits (no second request), and
after the approval the retry gets the certificate; a rejected request's retry is refused, nothing issues."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from approval_support import APPROVE, REJECT, settings_replaced
from conftest import GraphQL, OrgAdmin, tool_or_skip
from est_support import PASSPHRASE, USERNAME, EstTarget, curl, make_csr, make_est_target, sh
from factories import Member, make_member

from core import approval
from core.authz import Actor
from models import ApprovalRequest, AuditEvent, Certificate
from models.enums import ApplicationRole

PKCS10 = "Content-Type: application/pkcs10"


@pytest.fixture
def plain_http_est() -> Iterator[None]:
    with settings_replaced(est_allow_plain_http=True):
        yield


async def _held_target(org_admin: OrgAdmin) -> tuple[EstTarget, Member]:
    target = await make_est_target(org_admin.organization_id)
    approver = await make_member(target.org, applications={target.application: ApplicationRole.OPERATOR})
    await approval.create_policy(
        actor=Actor.system(target.org.id),
        application_id=target.application.id,
        name="est-gate",
        profile_ids=[target.pki.profile.id],
        steps=[approval.StepSpec(approver_ids=[approver.principal.id], required=1)],
        max_request_ttl=approval.MAX_TTL,
    )
    return target, approver


async def _enroll(cwd: Path, url: str, output: str) -> tuple[int, str]:
    return await curl(
        cwd,
        url,
        "-u",
        f"{USERNAME}:{PASSPHRASE}",
        "-H",
        PKCS10,
        "--data-binary",
        "@device.b64",
        output=output,
    )


async def test_est_enrollment_waits_for_approval_then_the_retry_gets_the_certificate(
    gql: GraphQL, org_admin: OrgAdmin, live_server: str, plain_http_est: None, tmp_path: Path
) -> None:
    tool_or_skip("curl")
    tool_or_skip("openssl")
    target, approver = await _held_target(org_admin)
    url = live_server + target.path("simpleenroll")
    await make_csr(tmp_path, "device", "/CN=held.example.com", "DNS:held.example.com")

    status, headers = await _enroll(tmp_path, url, "first.resp")
    assert status == 202, (tmp_path / "first.resp").read_text()
    assert "retry-after: 30" in headers.lower()
    status, _ = await _enroll(tmp_path, url, "again.resp")
    assert status == 202
    requests = await ApprovalRequest.all()
    assert len(requests) == 1, "the retry of the same CSR made a second request"
    assert requests[0].method == "est" and requests[0].requester_name == f"est:{USERNAME}"
    assert await Certificate.all().count() == 0

    decided = await gql(APPROVE, {"id": str(requests[0].id)}, token=approver.token)
    assert decided["approveRequest"]["status"] == "ISSUED"
    status, headers = await _enroll(tmp_path, url, "device.resp")
    assert status == 200, (tmp_path / "device.resp").read_text()
    assert "smime-type=certs-only" in headers
    command = "openssl base64 -d -in device.resp | openssl pkcs7 -inform DER -print_certs -out device.pem"
    (await sh(command, cwd=tmp_path)).ok()
    subject = (await sh("openssl x509 -in device.pem -noout -subject -serial", cwd=tmp_path)).ok().stdout
    assert "CN = held.example.com" in subject
    certificate = await Certificate.get(id=decided["approveRequest"]["certificate"]["id"])
    assert certificate.serial_hex.upper() in subject.replace(":", "").upper()
    assert certificate.enrollment_method == "est"
    # A new key is a new request.
    await make_csr(tmp_path, "device", "/CN=held.example.com", "DNS:held.example.com")
    status, _ = await _enroll(tmp_path, url, "new.resp")
    assert status == 202 and await ApprovalRequest.all().count() == 2


async def test_a_rejected_est_request_issues_nothing(
    gql: GraphQL, org_admin: OrgAdmin, live_server: str, plain_http_est: None, tmp_path: Path
) -> None:
    tool_or_skip("curl")
    target, approver = await _held_target(org_admin)
    url = live_server + target.path("simpleenroll")
    await make_csr(tmp_path, "device", "/CN=refused.example.com", "DNS:refused.example.com")
    status, _ = await _enroll(tmp_path, url, "first.resp")
    assert status == 202
    request = await ApprovalRequest.get()
    await gql(REJECT, {"id": str(request.id), "c": "unknown device"}, token=approver.token)
    status, _ = await _enroll(tmp_path, url, "retry.resp")
    assert status == 403
    assert "rejected: unknown device" in (tmp_path / "retry.resp").read_text()
    assert await Certificate.all().count() == 0
    assert await AuditEvent.filter(action="approval.reject").count() == 1


async def test_est_serverkeygen_waits_and_the_key_is_made_after_approval(
    gql: GraphQL, org_admin: OrgAdmin, live_server: str, plain_http_est: None, tmp_path: Path
) -> None:
    tool_or_skip("curl")
    target, approver = await _held_target(org_admin)
    url = live_server + target.path("serverkeygen")
    await make_csr(tmp_path, "device", "/CN=keygen.example.com", "DNS:keygen.example.com")
    status, headers = await _enroll(tmp_path, url, "first.resp")
    assert status == 202 and "retry-after" in headers.lower()
    request = await ApprovalRequest.get()
    assert request.csr_pem is None and "PRIVATE" not in str(request.request)
    await gql(APPROVE, {"id": str(request.id)}, token=approver.token)
    status, headers = await _enroll(tmp_path, url, "keygen.resp")
    assert status == 200, (tmp_path / "keygen.resp").read_text()
    assert "multipart/mixed" in headers.lower()
    assert "application/pkcs8" in (tmp_path / "keygen.resp").read_text()
    certificate = await Certificate.get()
    assert certificate.encrypted_private_key is not None
    assert await ApprovalRequest.filter(status="issued", certificate_id=certificate.id).count() == 1
