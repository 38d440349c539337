"""Shared by the approval tests: an application with a profile, approvers of each role, a policy made through
GraphQL, and the documents the tests send."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import GraphQL
from factories import Member, Pki, make_application, make_member, make_pki

from core import runtime
from models import Application, ApplicationMembership, Organization
from models.enums import ApplicationRole, PrincipalKind

# The protocol tests reuse the EST, SCEP, ACME and webhook helpers of their own test directories.
TESTS = Path(__file__).resolve().parents[1]
for _directory in ("worker", "est", "scep", "acme"):
    if str(TESTS / _directory) not in sys.path:
        sys.path.append(str(TESTS / _directory))

REQUEST_FIELDS = """
    id applicationId profileId policyId policyName status enrollmentMethod requesterId requesterName
    commonName sans keyAlgorithm csrPem currentStep stepCount expiresAt decidedAt failureReason
    steps { approverIds required }
    decisions { step approverId approverName decision comment }
    certificate { id serialNumber status enrollmentMethod hasPrivateKey certificatePem }
"""
ISSUE = (
    "mutation($input: IssueCertificateInput!) { issueCertificate(input: $input) { "
    "certificate { id serialNumber } approvalRequest { " + REQUEST_FIELDS + " } } }"
)
CREATE_POLICY = """
mutation($input: CreateApprovalPolicyInput!) {
  createApprovalPolicy(input: $input) {
    id applicationId name profileIds steps { approverIds required } maxRequestTtl
    bypassMachineIdentities isActive
  }
}
"""
UPDATE_POLICY = """
mutation($id: ID!, $input: UpdateApprovalPolicyInput!) {
  updateApprovalPolicy(id: $id, input: $input) {
    id name profileIds steps { approverIds required } maxRequestTtl bypassMachineIdentities isActive
  }
}
"""
DELETE_POLICY = "mutation($id: ID!) { deleteApprovalPolicy(id: $id) }"
POLICIES = """
query($a: ID!) { approvalPolicies(applicationId: $a) { id name profileIds maxRequestTtl isActive } }
"""
APPROVE = "mutation($id: ID!, $c: String) { approveRequest(id: $id, comment: $c) { " + REQUEST_FIELDS + " } }"
REJECT = "mutation($id: ID!, $c: String!) { rejectRequest(id: $id, comment: $c) { " + REQUEST_FIELDS + " } }"
CANCEL = "mutation($id: ID!) { cancelRequest(id: $id) { " + REQUEST_FIELDS + " } }"
REQUEST = "query($id: ID!) { approvalRequest(id: $id) { " + REQUEST_FIELDS + " } }"
REQUESTS = """
query($status: ApprovalRequestStatus, $a: ID, $p: ID, $first: Int!, $after: String) {
  approvalRequests(status: $status, applicationId: $a, profileId: $p, first: $first, after: $after) {
    edges { cursor node { id status applicationId profileId commonName } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@dataclass
class ApprovalScene:
    org: Organization
    admin_token: str  # the Product Admin
    pki: Pki
    application: Application
    app_admin: Member
    requester: Member  # an Operator who issues
    approvers: list[Member]  # Operators (the first an Admin) who approve
    auditor: Member
    outsider: Member

    @property
    def attachment_input(self) -> dict[str, str]:
        return {"applicationId": str(self.application.id), "profileId": str(self.pki.profile.id)}

    def policy_input(self, steps: list[tuple[list[Member], int]], **fields: Any) -> dict[str, Any]:
        return {
            "input": {
                "applicationId": str(self.application.id),
                "name": fields.pop("name", "two-eyes"),
                "profileIds": [str(self.pki.profile.id)],
                "steps": [
                    {"approverIds": [str(m.principal.id) for m in members], "required": required}
                    for members, required in steps
                ],
                "maxRequestTtl": fields.pop("maxRequestTtl", "7d"),
                **fields,
            }
        }

    def issue_input(self, **fields: Any) -> dict[str, Any]:
        return {"input": {**self.attachment_input, **fields}}


async def make_approval_scene(
    organization_id: uuid.UUID, admin_token: str, *, rules: dict[str, Any] | None = None, **profile: Any
) -> ApprovalScene:
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org, rules=rules, **profile)
    application = await make_application(org, profiles=[pki.profile])
    app_admin = await make_member(org, applications={application: ApplicationRole.ADMIN})
    requester = await make_member(org, applications={application: ApplicationRole.OPERATOR})
    approvers = [app_admin] + [
        await make_member(org, applications={application: ApplicationRole.OPERATOR}) for _ in range(2)
    ]
    auditor = await make_member(org, applications={application: ApplicationRole.AUDITOR})
    outsider = await make_member(org)
    return ApprovalScene(
        org, admin_token, pki, application, app_admin, requester, approvers, auditor, outsider
    )


async def machine_operator(scene: ApprovalScene) -> Member:
    return await make_member(
        scene.org, applications={scene.application: ApplicationRole.OPERATOR}, kind=PrincipalKind.MACHINE
    )


async def set_role(scene: ApprovalScene, member: Member, role: ApplicationRole | None) -> None:
    """Change (or, with None, remove) a member's application role straight through the models."""
    query = ApplicationMembership.filter(
        application_id=scene.application.id, principal_id=member.principal.id
    )
    if role is None:
        await query.delete()
    else:
        await query.update(role=role)


async def create_policy(
    gql: GraphQL, scene: ApprovalScene, steps: list[tuple[list[Member], int]], **fields: Any
) -> str:
    data = await gql(CREATE_POLICY, scene.policy_input(steps, **fields), token=scene.app_admin.token)
    return str(data["createApprovalPolicy"]["id"])


@contextlib.contextmanager
def settings_replaced(**changes: Any) -> Iterator[None]:
    """Runtime settings changed for the duration (EST over plain HTTP on loopback, loopback webhooks)."""
    before = runtime.settings()
    kek = runtime.kek()
    runtime.configure(dataclasses.replace(before, **changes), kek=kek)
    try:
        yield
    finally:
        runtime.configure(before, kek=kek)
