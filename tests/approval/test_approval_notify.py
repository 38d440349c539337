"""Approvers hear of a waiting request through the alert machinery: an alert subscribed to APPROVAL gets an
`approval.requested` event per step, delivered to a real webhook receiver on loopback (signed CloudEvent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import approval_support  # noqa: F401  # isort: skip - puts tests/worker (the webhook receiver) on sys.path
import pytest
import pytest_asyncio
from approval_support import APPROVE, ISSUE, ApprovalScene, create_policy, make_approval_scene
from conftest import GraphQL, OrgAdmin
from delivery_support import SECRET, Receiver, loopback_webhooks
from factories import make_csr_pem

from core.delivery import deliver_due
from core.dispatch import dispatch_outbox

CREATE_ALERT = """
mutation($input: CreateAlertInput!) { createAlert(input: $input) { id eventTypes } }
"""


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


async def test_each_step_notifies_the_alert_channels(
    gql: GraphQL, org_admin: OrgAdmin, receiver: Receiver
) -> None:
    scene: ApprovalScene = await make_approval_scene(org_admin.organization_id, org_admin.token)
    first, second, _ = scene.approvers
    created = await gql(
        CREATE_ALERT,
        {
            "input": {
                "applicationId": str(scene.application.id),
                "name": "approvers",
                "eventTypes": ["APPROVAL"],
                "channels": [{"type": "WEBHOOK", "config": {"url": receiver.url}, "secret": SECRET}],
                "profileIds": [str(scene.pki.profile.id)],
            }
        },
        token=scene.app_admin.token,
    )
    assert created["createAlert"]["eventTypes"] == ["APPROVAL"]
    await create_policy(gql, scene, [([first], 1), ([second], 1)])
    csr, _ = make_csr_pem(common_name="notify.example.com")
    held = await gql(ISSUE, scene.issue_input(csr=csr), token=scene.requester.token)
    request_id = held["issueCertificate"]["approvalRequest"]["id"]
    await gql(APPROVE, {"id": request_id}, token=first.token)

    assert await dispatch_outbox() == 2
    assert await deliver_due() == 2
    assert [r.signature_ok for r in receiver.received] == [True, True]
    events = sorted((r.event for r in receiver.received), key=lambda e: e["data"]["details"]["step"])
    assert {e["type"] for e in events} == {"com.keyward.approval.requested"}
    details = [e["data"]["details"] for e in events]
    assert [d["approvalRequestId"] for d in details] == [request_id, request_id]
    assert [(d["step"], d["approverIds"]) for d in details] == [
        (1, [str(first.principal.id)]),
        (2, [str(second.principal.id)]),
    ]
    assert details[0]["commonName"] == "notify.example.com" and details[0]["requester"]
    # Dispatching again sends nothing twice.
    assert await dispatch_outbox() == 0
