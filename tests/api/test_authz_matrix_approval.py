"""The authorization matrix (SPEC §2, §11) for approval policies and requests: application Admins manage
policies and every application role reads them; listed Admin/Operator approvers decide (a Product Admin who is
no member of the application is not an approver); only the requester cancels.

APPROVAL_OPERATIONS joins ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage checks count
these mutations; the cells run here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from authz_matrix_support import (
    ANY_PRINCIPAL,
    APP_ADMIN,
    APP_READ,
    FORBIDDEN,
    NOT_FOUND,
    OK,
    Operation,
    app_gate,
    check_rows,
    expect,
    run_cell,
)
from conftest import CAST_ROLES, Cast, GraphQL, create_profile_rows

from models import ApplicationProfile, ApprovalPolicy, ApprovalPolicyAttachment, ApprovalRequest


async def _attachment(cast: Cast) -> ApplicationProfile:
    profile = await create_profile_rows(cast.organization_id, name=f"appr-{uuid.uuid4().hex[:6]}")
    return await ApplicationProfile.create(application_id=cast.application_id, profile_id=profile.id)


async def _policy(cast: Cast) -> ApprovalPolicy:
    attachment = await _attachment(cast)
    policy = await ApprovalPolicy.create(
        application_id=cast.application_id,
        name=f"policy-{uuid.uuid4().hex[:6]}",
        steps=[{"approvers": [str(cast.principal_ids["app_operator"])], "required": 1}],
        max_request_ttl_seconds=86400,
    )
    await ApprovalPolicyAttachment.create(policy_id=policy.id, attachment_id=attachment.id)
    return policy


async def _request(cast: Cast, *, approver: str, requester: str) -> ApprovalRequest:
    """A pending two-step request: `approver` decides step 1, the app Admin step 2 (so nothing issues)."""
    attachment = await _attachment(cast)
    approver_id = cast.principal_ids.get(approver)
    second = (
        cast.principal_ids["app_admin"] if approver != "app_admin" else cast.principal_ids["app_operator"]
    )
    return await ApprovalRequest.create(
        organization_id=cast.organization_id,
        policy_name="matrix",
        application_id=cast.application_id,
        attachment_id=attachment.id,
        profile_id=attachment.profile_id,
        requester_id=cast.principal_ids.get(requester),
        requester_name=requester,
        method="api",
        request={},
        summary={"commonName": "matrix.example.com", "sans": []},
        steps=[
            {"approvers": [str(approver_id or uuid.uuid4())], "required": 1},
            {"approvers": [str(second)], "required": 1},
        ],
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )


async def a_new_policy(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast)
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "name": "two-eyes",
            "profileIds": [str(attachment.profile_id)],
            "steps": [{"approverIds": [str(cast.principal_ids["app_operator"])], "required": 1}],
            "maxRequestTtl": "24h",
        }
    }


async def a_policy(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str((await _policy(cast)).id)}


async def an_application_with_a_policy(cast: Cast, role: str) -> dict[str, Any]:
    await _policy(cast)
    return {"a": str(cast.application_id)}


async def a_request_for_the_caller(cast: Cast, role: str) -> dict[str, Any]:
    other = "app_operator" if role != "app_operator" else "app_admin"
    row = await _request(cast, approver=role, requester=other)
    return {"id": str(row.id), "c": "matrix"}


async def a_request_by_the_caller(cast: Cast, role: str) -> dict[str, Any]:
    row = await _request(cast, approver="app_admin", requester=role)
    return {"id": str(row.id)}


REQUEST_FIELDS = "id status currentStep decisions { step decision }"
# Listed approvers who are Admin/Operator members decide; a Product Admin is not a member here.
DECIDERS = {**app_gate("app_admin", "app_operator"), "product_admin": FORBIDDEN}
# The requester cancels; an Auditor cannot have requested (cancel needs certificate:issue).
REQUESTER = {**app_gate("app_admin", "app_operator"), "product_admin": OK}

APPROVAL_OPERATIONS = [
    Operation(
        "approvalPolicies",
        "query($a: ID!) { approvalPolicies(applicationId: $a) "
        "{ id name profileIds steps { approverIds required } maxRequestTtl isActive } }",
        APP_READ,
        an_application_with_a_policy,
    ),
    Operation(
        "createApprovalPolicy",
        "mutation($input: CreateApprovalPolicyInput!) { createApprovalPolicy(input: $input) { id name } }",
        APP_ADMIN,
        a_new_policy,
    ),
    Operation(
        "updateApprovalPolicy",
        "mutation($id: ID!) { updateApprovalPolicy(id: $id, input: {isActive: false}) { id isActive } }",
        APP_ADMIN,
        a_policy,
    ),
    Operation(
        "deleteApprovalPolicy",
        "mutation($id: ID!) { deleteApprovalPolicy(id: $id) }",
        APP_ADMIN,
        a_policy,
    ),
    Operation(
        "approvalRequests",
        "query { approvalRequests(first: 10) { edges { node { id status } } pageInfo { hasNextPage } } }",
        ANY_PRINCIPAL,
    ),
    Operation(
        "approvalRequest",
        "query($id: ID!) { approvalRequest(id: $id) { " + REQUEST_FIELDS + " } }",
        APP_READ,
        a_request_by_the_caller,
    ),
    Operation(
        "approveRequest",
        "mutation($id: ID!, $c: String) { approveRequest(id: $id, comment: $c) { " + REQUEST_FIELDS + " } }",
        DECIDERS,
        a_request_for_the_caller,
    ),
    Operation(
        "rejectRequest",
        "mutation($id: ID!, $c: String!) { rejectRequest(id: $id, comment: $c) { " + REQUEST_FIELDS + " } }",
        DECIDERS,
        a_request_for_the_caller,
    ),
    Operation(
        "cancelRequest",
        "mutation($id: ID!) { cancelRequest(id: $id) { " + REQUEST_FIELDS + " } }",
        REQUESTER,
        a_request_by_the_caller,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in APPROVAL_OPERATIONS for role in CAST_ROLES]


def test_approval_rows_name_every_role() -> None:
    check_rows(APPROVAL_OPERATIONS)
    assert expect(NOT_FOUND)["anonymous"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_approval_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
