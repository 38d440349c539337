"""SCEP (RFC 8894) under an approval policy with Debian's `scepclient`: the PKCSReq is answered PENDING, the
client asks again (scepclient re-sends its PKCSReq every 30 seconds), and gets its certificate once approved,
or a FAILURE once rejected. Both clients run side by side so the test waits one retry interval only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from approval_support import APPROVE, REJECT
from conftest import GraphQL, OrgAdmin
from factories import make_member
from scep_support import STATIC_CHALLENGE, load_pem_certificate, refusals, scep_scene, scepclient

from core import approval
from core.authz import Actor
from models import ApprovalRequest, Certificate, ScepTransaction
from models.enums import ApplicationRole, EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live


async def _request_for(common_name: str, client: asyncio.Task[object]) -> ApprovalRequest:
    """The approval request the client's PKCSReq made (waits for the client to reach the server)."""
    async with asyncio.timeout(60):
        while True:
            for row in await ApprovalRequest.all():
                if row.summary.get("commonName") == common_name:
                    return row
            assert not client.done(), client.result()
            await asyncio.sleep(0.2)


async def test_scepclient_waits_pending_then_gets_the_approved_certificate_or_a_failure(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin)
    approver = await make_member(
        scene.organization, applications={scene.application: ApplicationRole.OPERATOR}
    )
    await approval.create_policy(
        actor=Actor.system(scene.organization.id),
        application_id=scene.application.id,
        name="scep-gate",
        profile_ids=[scene.pki.profile.id],
        steps=[approval.StepSpec(approver_ids=[approver.principal.id], required=1)],
        max_request_ttl=approval.MIN_TTL,
    )
    approved_client = asyncio.create_task(
        scepclient(tmp_path / "ok", scene.url, challenge=STATIC_CHALLENGE, cn="held.example.com")
    )
    rejected_client = asyncio.create_task(
        scepclient(tmp_path / "no", scene.url, challenge=STATIC_CHALLENGE, cn="refused.example.com")
    )
    to_approve = await _request_for("held.example.com", approved_client)
    to_reject = await _request_for("refused.example.com", rejected_client)
    assert to_approve.method == "scep" and to_approve.requester_id is None
    pending = await ScepTransaction.get(id=to_approve.correlation)
    assert pending.status == "pending"
    assert await Certificate.all().count() == 0

    decided = await gql(APPROVE, {"id": str(to_approve.id)}, token=approver.token)
    assert decided["approveRequest"]["status"] == "ISSUED"
    await gql(REJECT, {"id": str(to_reject.id), "c": "not ours"}, token=approver.token)

    approved, rejected = await asyncio.gather(approved_client, rejected_client)
    assert approved.returncode == 0, (approved.output, await refusals())
    assert "PENDING" in approved.output
    cert = load_pem_certificate(tmp_path / "ok" / "client.pem")
    row = await Certificate.get(serial_hex=serial_hex(cert.serial_number))
    assert row.enrollment_method == EnrollmentMethod.SCEP
    assert str(row.id) == decided["approveRequest"]["certificate"]["id"]
    assert (await ScepTransaction.get(id=to_approve.correlation)).status == "issued"

    assert rejected.returncode != 0 and "badRequest" in rejected.output, rejected.output
    assert not (tmp_path / "no" / "client.pem").exists()
    assert (await ScepTransaction.get(id=to_reject.correlation)).status == "failed"
    assert await Certificate.all().count() == 1
