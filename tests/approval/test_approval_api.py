"""Approval policies over GraphQL: an API issuance under a policy answers pending with a request id, the
approvers decide in order, and the last approval issues the certificate through the normal issuance path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from approval_support import (
    APPROVE,
    CANCEL,
    DELETE_POLICY,
    ISSUE,
    POLICIES,
    REJECT,
    REQUEST,
    REQUESTS,
    UPDATE_POLICY,
    ApprovalScene,
    create_policy,
    machine_operator,
    make_approval_scene,
    set_role,
)
from conftest import GraphQL, GraphQLError, OrgAdmin
from factories import make_csr_pem

from models import ApprovalPolicy, ApprovalRequest, AuditEvent, Certificate, OutboxEvent
from models.enums import ApplicationRole
from worker.jobs import all_jobs


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> ApprovalScene:
    return await make_approval_scene(org_admin.organization_id, org_admin.token)


async def _pending(gql: GraphQL, scene: ApprovalScene, **fields: Any) -> dict[str, Any]:
    if not fields:
        csr, _ = make_csr_pem(common_name="api.example.com")
        fields = {"csr": csr}
    data = await gql(ISSUE, scene.issue_input(**fields), token=scene.requester.token)
    payload = data["issueCertificate"]
    assert payload["certificate"] is None
    request = payload["approvalRequest"]
    assert request["status"] == "PENDING"
    return dict(request)


async def _codes(call: Any) -> list[str]:
    with pytest.raises(GraphQLError) as caught:
        await call
    return caught.value.codes


async def test_api_request_waits_then_the_approval_issues_it(gql: GraphQL, scene: ApprovalScene) -> None:
    approver = scene.approvers[1]
    await create_policy(gql, scene, [([approver], 1)])
    request = await _pending(gql, scene)
    assert request["enrollmentMethod"] == "api" and request["commonName"] == "api.example.com"
    assert request["requesterId"] == str(scene.requester.principal.id) and request["csrPem"]
    assert await Certificate.all().count() == 0

    listed = await gql(REQUESTS, {"status": "PENDING", "first": 10}, token=approver.token)
    assert [e["node"]["id"] for e in listed["approvalRequests"]["edges"]] == [request["id"]]

    decided = (await gql(APPROVE, {"id": request["id"], "c": "looks right"}, token=approver.token))[
        "approveRequest"
    ]
    assert decided["status"] == "ISSUED"
    certificate = decided["certificate"]
    assert certificate["status"] == "ACTIVE" and certificate["enrollmentMethod"] == "API"
    assert not certificate["hasPrivateKey"]
    assert decided["decisions"] == [
        {
            "step": 1,
            "approverId": str(approver.principal.id),
            "approverName": approver.principal.email,
            "decision": "APPROVE",
            "comment": "looks right",
        }
    ]
    # Deciding again, or issuing twice, is refused: the request is no longer pending.
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=approver.token)) == ["INVALID_STATE"]
    assert await Certificate.all().count() == 1
    actions = [e.action for e in await AuditEvent.all().order_by("id")]
    for action in ("approval_policy.create", "approval.request", "approval.approve", "certificate.issue"):
        assert action in actions, actions
    assert actions.index("approval.approve") < actions.index("certificate.issue")
    events = await OutboxEvent.filter(event_type="approval.requested").values_list("payload", flat=True)
    assert [e["approval_request_id"] for e in events] == [request["id"]]


async def test_server_generated_key_is_made_only_after_approval(gql: GraphQL, scene: ApprovalScene) -> None:
    approver = scene.approvers[1]
    await create_policy(gql, scene, [([approver], 1)])
    request = await _pending(gql, scene, commonName="keygen.example.com", keyAlgorithm="EC_P256")
    row = await ApprovalRequest.get(id=request["id"])
    assert row.csr_pem is None
    assert "PRIVATE" not in str(row.request) and "PRIVATE" not in str(row.summary)
    decided = (await gql(APPROVE, {"id": request["id"]}, token=approver.token))["approveRequest"]
    assert decided["status"] == "ISSUED" and decided["certificate"]["hasPrivateKey"]


async def test_rejection_issues_nothing(gql: GraphQL, scene: ApprovalScene) -> None:
    approver = scene.approvers[1]
    await create_policy(gql, scene, [([approver], 1)])
    request = await _pending(gql, scene)
    # A rejection needs its reason.
    assert await _codes(gql(REJECT, {"id": request["id"], "c": "  "}, token=approver.token)) == [
        "INVALID_INPUT"
    ]
    rejected = (await gql(REJECT, {"id": request["id"], "c": "wrong team"}, token=approver.token))[
        "rejectRequest"
    ]
    assert rejected["status"] == "REJECTED" and rejected["certificate"] is None
    assert rejected["failureReason"] == "rejected: wrong team"
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=approver.token)) == ["INVALID_STATE"]
    assert await Certificate.all().count() == 0
    assert await AuditEvent.filter(action="approval.reject").count() == 1


async def test_steps_advance_in_order(gql: GraphQL, scene: ApprovalScene) -> None:
    first, second, third = scene.approvers
    await create_policy(gql, scene, [([first], 1), ([second, third], 2)])
    request = await _pending(gql, scene)
    assert request["stepCount"] == 2 and request["currentStep"] == 1
    # A step-2 approver cannot act before step 1 is through.
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=second.token)) == ["FORBIDDEN"]
    after_first = (await gql(APPROVE, {"id": request["id"]}, token=first.token))["approveRequest"]
    assert after_first["status"] == "PENDING" and after_first["currentStep"] == 2
    after_second = (await gql(APPROVE, {"id": request["id"]}, token=second.token))["approveRequest"]
    assert after_second["status"] == "PENDING" and after_second["currentStep"] == 2
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=second.token)) == ["CONFLICT"]
    done = (await gql(APPROVE, {"id": request["id"]}, token=third.token))["approveRequest"]
    assert done["status"] == "ISSUED" and done["certificate"] is not None
    assert [(d["step"], d["approverId"]) for d in done["decisions"]] == [
        (1, str(first.principal.id)),
        (2, str(second.principal.id)),
        (2, str(third.principal.id)),
    ]
    # Each step announced itself to its approvers.
    steps = (
        await OutboxEvent.filter(event_type="approval.requested")
        .order_by("created_at")
        .values_list("payload", flat=True)
    )
    assert [(p["step"], p["approver_ids"]) for p in steps] == [
        (1, [str(first.principal.id)]),
        (2, [str(second.principal.id), str(third.principal.id)]),
    ]


async def test_nobody_approves_their_own_request(gql: GraphQL, scene: ApprovalScene) -> None:
    other = scene.approvers[1]
    await create_policy(gql, scene, [([scene.requester, other], 1)])
    request = await _pending(gql, scene)
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=scene.requester.token)) == ["FORBIDDEN"]
    assert await _codes(gql(REJECT, {"id": request["id"], "c": "no"}, token=scene.requester.token)) == [
        "FORBIDDEN"
    ]
    assert (await gql(REQUEST, {"id": request["id"]}, token=other.token))["approvalRequest"][
        "status"
    ] == "PENDING"
    done = (await gql(APPROVE, {"id": request["id"]}, token=other.token))["approveRequest"]
    assert done["status"] == "ISSUED"


async def test_a_demoted_or_removed_approver_no_longer_counts(gql: GraphQL, scene: ApprovalScene) -> None:
    first, second, third = scene.approvers
    await create_policy(gql, scene, [([first, second, third], 2)])
    request = await _pending(gql, scene)
    await gql(APPROVE, {"id": request["id"]}, token=second.token)
    await set_role(scene, second, ApplicationRole.AUDITOR)  # demoted: their approval no longer counts
    after = (await gql(APPROVE, {"id": request["id"]}, token=third.token))["approveRequest"]
    assert after["status"] == "PENDING", "the demoted approver's approval still counted"
    await set_role(scene, third, None)  # removed: neither does theirs, and they no longer see the request
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=third.token)) == ["NOT_FOUND"]
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=second.token)) == ["FORBIDDEN"]
    done = (await gql(APPROVE, {"id": request["id"]}, token=first.token))["approveRequest"]
    assert done["status"] == "PENDING", "one eligible approval of two required"
    assert await Certificate.all().count() == 0


async def test_cancel_is_the_requesters(gql: GraphQL, scene: ApprovalScene) -> None:
    approver = scene.approvers[1]
    await create_policy(gql, scene, [([approver], 1)])
    request = await _pending(gql, scene)
    assert await _codes(gql(CANCEL, {"id": request["id"]}, token=approver.token)) == ["FORBIDDEN"]
    cancelled = (await gql(CANCEL, {"id": request["id"]}, token=scene.requester.token))["cancelRequest"]
    assert cancelled["status"] == "CANCELLED"
    assert await _codes(gql(APPROVE, {"id": request["id"]}, token=approver.token)) == ["INVALID_STATE"]
    assert await Certificate.all().count() == 0
    assert await AuditEvent.filter(action="approval.cancel").count() == 1


async def test_the_worker_expires_requests_past_their_ttl(gql: GraphQL, scene: ApprovalScene) -> None:
    approver = scene.approvers[1]
    await create_policy(gql, scene, [([approver], 1)], maxRequestTtl="1h")
    old = await _pending(gql, scene)
    fresh = await _pending(gql, scene)
    row = await ApprovalRequest.get(id=old["id"])
    assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1, seconds=5)
    await ApprovalRequest.filter(id=old["id"]).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    job = next(job for job in all_jobs() if job.id == "approvals.expire")
    assert await job.run() == 1
    assert await job.run() == 0
    expired = (await gql(REQUEST, {"id": old["id"]}, token=approver.token))["approvalRequest"]
    assert expired["status"] == "EXPIRED" and expired["certificate"] is None
    assert await _codes(gql(APPROVE, {"id": old["id"]}, token=approver.token)) == ["INVALID_STATE"]
    assert (await ApprovalRequest.get(id=fresh["id"])).status == "pending"
    assert await AuditEvent.filter(action="approval.expire", resource_id=old["id"]).count() == 1
    assert await Certificate.all().count() == 0


async def test_machine_identities_bypass_when_the_policy_says_so(gql: GraphQL, scene: ApprovalScene) -> None:
    robot = await machine_operator(scene)
    policy_id = await create_policy(gql, scene, [([scene.approvers[1]], 1)])
    csr, _ = make_csr_pem(common_name="robot.example.com")
    held = await gql(ISSUE, scene.issue_input(csr=csr), token=robot.token)
    assert held["issueCertificate"]["certificate"] is None
    await gql(
        UPDATE_POLICY,
        {"id": policy_id, "input": {"bypassMachineIdentities": True}},
        token=scene.app_admin.token,
    )
    issued = await gql(ISSUE, scene.issue_input(csr=csr), token=robot.token)
    assert issued["issueCertificate"]["certificate"]["serialNumber"]
    assert issued["issueCertificate"]["approvalRequest"] is None
    # Users still wait.
    await _pending(gql, scene)


async def test_inactive_or_deleted_policies_hold_nothing(gql: GraphQL, scene: ApprovalScene) -> None:
    policy_id = await create_policy(gql, scene, [([scene.approvers[1]], 1)])
    await gql(UPDATE_POLICY, {"id": policy_id, "input": {"isActive": False}}, token=scene.app_admin.token)
    csr, _ = make_csr_pem(common_name="free.example.com")
    issued = await gql(ISSUE, scene.issue_input(csr=csr), token=scene.requester.token)
    assert issued["issueCertificate"]["certificate"] is not None
    await gql(UPDATE_POLICY, {"id": policy_id, "input": {"isActive": True}}, token=scene.app_admin.token)
    request = await _pending(gql, scene)
    assert await gql(DELETE_POLICY, {"id": policy_id}, token=scene.app_admin.token)
    assert (await gql(POLICIES, {"a": str(scene.application.id)}, token=scene.auditor.token))[
        "approvalPolicies"
    ] == []
    # A request already pending keeps its own copy of the steps and can still be decided.
    done = (await gql(APPROVE, {"id": request["id"]}, token=scene.approvers[1].token))["approveRequest"]
    assert done["status"] == "ISSUED" and done["policyId"] is None


async def test_policy_violations_are_refused_before_any_request(gql: GraphQL, scene: ApprovalScene) -> None:
    await create_policy(gql, scene, [([scene.approvers[1]], 1)])
    csr, _ = make_csr_pem(common_name="www.not-allowed.test")
    codes = await _codes(gql(ISSUE, scene.issue_input(csr=csr), token=scene.requester.token))
    assert codes == ["POLICY_VIOLATION"]
    assert await ApprovalRequest.all().count() == 0


async def test_the_list_shows_what_the_caller_may_act_on(gql: GraphQL, scene: ApprovalScene) -> None:
    first, second, _ = scene.approvers
    await create_policy(gql, scene, [([second], 1)])
    ids = [(await _pending(gql, scene))["id"] for _ in range(3)]

    async def listed(token: str, **variables: Any) -> list[str]:
        data = await gql(REQUESTS, {"first": 50, **variables}, token=token)
        return [e["node"]["id"] for e in data["approvalRequests"]["edges"]]

    assert await listed(second.token) == ids
    assert await listed(scene.requester.token) == ids  # their own, to cancel
    assert await listed(scene.admin_token) == ids  # Product Admin
    assert await listed(first.token) == []  # an Admin not named in the policy
    assert await listed(scene.auditor.token) == []
    assert await listed(scene.outsider.token) == []
    await gql(REJECT, {"id": ids[0], "c": "no"}, token=second.token)
    assert await listed(second.token, status="PENDING") == ids[1:]
    assert await listed(second.token, status="REJECTED") == ids[:1]
    assert await listed(second.token, p=str(scene.pki.profile.id), a=str(scene.application.id)) == ids
    page = await gql(REQUESTS, {"first": 2}, token=second.token)
    assert page["approvalRequests"]["pageInfo"]["hasNextPage"]
    rest = await listed(second.token, after=page["approvalRequests"]["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in page["approvalRequests"]["edges"]] + rest == ids
    # Someone who may not see the request gets NOT_FOUND, not a hint that it exists.
    assert await _codes(gql(REQUEST, {"id": ids[1]}, token=scene.outsider.token)) == ["NOT_FOUND"]


BAD_POLICIES: list[tuple[str, Any]] = [
    ("no steps", lambda s: s.policy_input([])),
    ("a step without approvers", lambda s: s.policy_input([([], 1)])),
    ("more required than approvers", lambda s: s.policy_input([([s.approvers[1]], 2)])),
    ("zero required", lambda s: s.policy_input([([s.approvers[1]], 0)])),
    ("an Auditor approver", lambda s: s.policy_input([([s.auditor], 1)])),
    ("an approver outside the application", lambda s: s.policy_input([([s.outsider], 1)])),
    ("a TTL under an hour", lambda s: s.policy_input([([s.approvers[1]], 1)], maxRequestTtl="0h")),
    ("a TTL over 30 days", lambda s: s.policy_input([([s.approvers[1]], 1)], maxRequestTtl="31d")),
    ("an unreadable TTL", lambda s: s.policy_input([([s.approvers[1]], 1)], maxRequestTtl="soon")),
    ("an empty name", lambda s: s.policy_input([([s.approvers[1]], 1)], name=" ")),
]


@pytest.mark.parametrize(("case", "make"), BAD_POLICIES, ids=[c for c, _ in BAD_POLICIES])
async def test_invalid_policies_are_refused_with_nothing_saved(
    gql: GraphQL, scene: ApprovalScene, case: str, make: Any
) -> None:
    from approval_support import CREATE_POLICY

    codes = await _codes(gql(CREATE_POLICY, make(scene), token=scene.app_admin.token))
    assert codes == ["INVALID_INPUT"], case
    assert await ApprovalPolicy.all().count() == 0


async def test_a_profile_not_attached_or_already_covered_is_refused(
    gql: GraphQL, scene: ApprovalScene, org_admin: OrgAdmin
) -> None:
    from approval_support import CREATE_POLICY
    from factories import make_pki

    other = await make_pki(scene.org)
    variables = scene.policy_input([([scene.approvers[1]], 1)])
    variables["input"]["profileIds"] = [str(other.profile.id)]
    codes = await _codes(gql(CREATE_POLICY, variables, token=scene.app_admin.token))
    assert codes == ["INVALID_INPUT"]
    assert await ApprovalPolicy.all().count() == 0
    await create_policy(gql, scene, [([scene.approvers[1]], 1)])
    codes = await _codes(
        gql(
            CREATE_POLICY,
            scene.policy_input([([scene.approvers[1]], 1)], name="again"),
            token=scene.app_admin.token,
        )
    )
    assert codes == ["INVALID_INPUT"]
    assert await ApprovalPolicy.all().count() == 1
    data = await gql(POLICIES, {"a": str(scene.application.id)}, token=scene.auditor.token)
    assert [(p["name"], p["profileIds"], p["maxRequestTtl"]) for p in data["approvalPolicies"]] == [
        ("two-eyes", [str(scene.pki.profile.id)], "7d")
    ]
