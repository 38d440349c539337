"""SCEP RenewalReq under an approval policy with Debian's `scepclient`: the renewal signed with the current
certificate is answered PENDING, the client sends it again (every 30 seconds) and gets the successor once
approved; the predecessor is renewed once and the transaction ends issued."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from approval_support import APPROVE
from conftest import GraphQL, OrgAdmin
from factories import make_member
from scep_support import STATIC_CHALLENGE, load_pem_certificate, refusals, scep_scene, scepclient

from core import approval
from core.authz import Actor
from models import ApprovalRequest, Certificate, ScepTransaction
from models.enums import ApplicationRole, CertificateStatus, EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live


async def test_scep_renewal_waits_pending_then_gets_the_approved_successor(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin)
    enrolled = await scepclient(tmp_path, scene.url, challenge=STATIC_CHALLENGE, cn="renew.example.com")
    assert enrolled.returncode == 0, (enrolled.output, await refusals())
    first = load_pem_certificate(tmp_path / "client.pem")
    old = await Certificate.get(serial_hex=serial_hex(first.serial_number))

    approver = await make_member(
        scene.organization, applications={scene.application: ApplicationRole.OPERATOR}
    )
    await approval.create_policy(
        actor=Actor.system(scene.organization.id),
        application_id=scene.application.id,
        name="scep-renewals",
        profile_ids=[scene.pki.profile.id],
        steps=[approval.StepSpec(approver_ids=[approver.principal.id], required=1)],
        max_request_ttl=approval.MIN_TTL,
    )
    # client.pem exists: scepclient sends a RenewalReq signed with it.
    client = asyncio.create_task(scepclient(tmp_path, scene.url, challenge=None, cn="renew.example.com"))
    async with asyncio.timeout(60):
        while (request := await ApprovalRequest.first()) is None:
            assert not client.done(), (client.result(), await refusals())
            await asyncio.sleep(0.2)
    assert request.method == "scep" and request.renewal_of_id == old.id
    assert await Certificate.all().count() == 1

    decided = await gql(APPROVE, {"id": str(request.id)}, token=approver.token)
    assert decided["approveRequest"]["status"] == "ISSUED"
    renewed = await client
    assert renewed.returncode == 0, (renewed.output, await refusals())
    assert "PENDING" in renewed.output
    successor_cert = load_pem_certificate(tmp_path / "client.pem")
    successor = await Certificate.get(serial_hex=serial_hex(successor_cert.serial_number))
    assert str(successor.id) == decided["approveRequest"]["certificate"]["id"]
    assert successor.renewed_from_id == old.id and successor.enrollment_method == EnrollmentMethod.SCEP
    await old.refresh_from_db()
    assert old.status == CertificateStatus.RENEWED
    assert await Certificate.filter(renewed_from_id=old.id).count() == 1
    assert (await ScepTransaction.get(id=request.correlation)).status == "issued"
