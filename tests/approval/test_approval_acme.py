"""ACME (RFC 8555) under an approval policy, through the Python `acme` library (certbot's protocol code)
against the live server: after finalize the order stays `processing` with Retry-After; approval makes it
valid with the certificate the client downloads; rejection makes it invalid and nothing issues."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import approval_support  # noqa: F401  # isort: skip - puts tests/acme (its client helpers) on sys.path
import pytest
from acme import errors as acme_errors
from acme import messages
from acme_clients_support import Http01Responder, acme_settings, challtestsrv, free_port, make_acme_target
from approval_support import APPROVE, REJECT
from conftest import GraphQL, OrgAdmin, tool_or_skip
from factories import make_csr_pem, make_member
from test_acme_edge_cases import authorize_http01, deadline, open_session

from core import approval
from core.authz import Actor
from models import AcmeOrder, ApprovalRequest, Certificate
from models.enums import ApplicationRole

pytestmark = pytest.mark.live


@pytest.fixture
def http01() -> Iterator[Http01Responder]:
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        Http01Responder(free_port()) as responder,
        acme_settings(http01_port=responder.port, dns_resolver=dns.dns_address),
    ):
        yield responder


def _finalize(target: Any, responder: Http01Responder, name: str) -> tuple[Any, messages.OrderResource, Any]:
    """Account, order, http-01 validation and finalize; returns (session, order, raw poll of the order)."""
    session = open_session(target)
    csr, _ = make_csr_pem(common_name=name, sans=[name])
    order = session.acme.new_order(csr.encode())
    authorize_http01(session, order, responder)
    order = session.acme.poll_authorizations(order, deadline())
    order = session.acme.begin_finalization(order)
    polled = session.acme._post_as_get(order.uri)
    return session, order, polled


async def test_an_acme_order_stays_processing_until_approved_or_rejected(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, http01: Http01Responder
) -> None:
    target = await make_acme_target(org_admin.organization_id)
    approver = await make_member(target.org, applications={target.application: ApplicationRole.OPERATOR})
    await approval.create_policy(
        actor=Actor.system(target.org.id),
        application_id=target.application.id,
        name="acme-gate",
        profile_ids=[target.pki.profile.id],
        steps=[approval.StepSpec(approver_ids=[approver.principal.id], required=1)],
        max_request_ttl=approval.MIN_TTL,
    )

    session, order, polled = await asyncio.to_thread(_finalize, target, http01, "held.example.com")
    assert polled.json()["status"] == "processing"
    assert polled.headers.get("Retry-After"), polled.headers
    request = await ApprovalRequest.get(correlation=order.uri.rsplit("/", 1)[-1])
    assert request.method == "acme" and request.status == "pending" and request.csr_pem
    assert (await AcmeOrder.get(id=request.correlation)).status == "processing"
    assert await Certificate.all().count() == 0

    decided = await gql(APPROVE, {"id": str(request.id)}, token=approver.token)
    assert decided["approveRequest"]["status"] == "ISSUED"
    done = await asyncio.to_thread(session.acme.poll_finalization, order, deadline())
    assert done.fullchain_pem.count("BEGIN CERTIFICATE") >= 2
    certificate = await Certificate.get(id=decided["approveRequest"]["certificate"]["id"])
    assert certificate.certificate_pem.strip() in done.fullchain_pem
    assert certificate.enrollment_method == "acme"

    # A second order, rejected: the order turns invalid with the reason, and nothing issues.
    session, order, _ = await asyncio.to_thread(_finalize, target, http01, "refused.example.com")
    second = await ApprovalRequest.get(correlation=order.uri.rsplit("/", 1)[-1])
    await gql(REJECT, {"id": str(second.id), "c": "not this host"}, token=approver.token)
    with pytest.raises(acme_errors.IssuanceError) as refused:
        await asyncio.to_thread(session.acme.poll_finalization, order, deadline())
    assert "not this host" in str(refused.value.error.detail)
    assert (await AcmeOrder.get(id=second.correlation)).status == "invalid"
    assert await Certificate.all().count() == 1
