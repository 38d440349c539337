"""The legacy rules (SPEC §12), in core and through GraphQL: a legacy profile's enrollment is read-only
(LEGACY_READ_ONLY, pointing to Applications), new alerts, syncs and approval policies are created inside
Applications only (CREATE_INSIDE_APPLICATION), legacy ones can still be changed and deleted, legacy members
are not application members, and the importer (inside rules.importing()) writes what the rules refuse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from conftest import GraphQL, OrgAdmin
from legacy_rules_support import LegacyPayments, legacy_payments

from core import alert as alert_service
from core import application as application_service
from core import approval as approval_service
from core import est as est_service
from core import scep as scep_service
from core import sync as sync_service
from core.errors import CreateInsideApplication, LegacyReadOnly, NotFound
from core.legacy.rules import importing
from models import (
    Alert,
    Application,
    ApplicationMembership,
    ApplicationProfile,
    ApprovalPolicy,
    AuditEvent,
    LegacyMembership,
    Sync,
)
from models.enums import ApplicationRole, AuditOutcome


async def snapshot() -> dict[str, Any]:
    """What a refused call must leave as it was: enrollment settings, alerts, syncs, policies, members."""
    return {
        "attachments": await ApplicationProfile.all().order_by("id").values(),
        "alerts": await Alert.all().order_by("id").values(),
        "syncs": await Sync.all().order_by("id").values(),
        "policies": await ApprovalPolicy.all().order_by("id").values(),
        "members": await ApplicationMembership.all().order_by("id").values(),
        "legacy_members": await LegacyMembership.all().order_by("id").values(),
        "applications": await Application.all().order_by("id").values(),
        "audit_successes": await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).count(),
    }


CoreCall = Callable[[LegacyPayments], Awaitable[Any]]


def _enrollment_calls() -> dict[str, CoreCall]:
    def app(p: LegacyPayments) -> dict[str, Any]:
        return {"actor": p.system(), "application_id": p.project_id}

    return {
        "attach_profile": lambda p: application_service.attach_profile(
            **app(p),
            profile_id=p.profiles["web-api"],
            api=application_service.ApiEnrollmentSettings(),
        ),
        "update_attachment": lambda p: application_service.update_attachment(
            **app(p), profile_id=p.profiles["web-api"], changes={"auto_renew": False}
        ),
        "detach_profile": lambda p: application_service.detach_profile(
            **app(p), profile_id=p.profiles["web-api"]
        ),
        "enable_acme": lambda p: application_service.enable_acme(
            **app(p), profile_id=p.profiles["web-acme"], eab_required=False
        ),
        "disable_acme": lambda p: application_service.disable_acme(
            **app(p), profile_id=p.profiles["web-acme"]
        ),
        "rotate_acme_eab": lambda p: application_service.rotate_acme_eab(
            **app(p), profile_id=p.profiles["web-acme"]
        ),
        "enable_est": lambda p: est_service.enable_est(
            **app(p), profile_id=p.profiles["web-api"], passphrase="a-new-passphrase-1"
        ),
        "update_est": lambda p: est_service.update_est(
            **app(p), profile_id=p.profiles["web-est"], username="someone-else"
        ),
        "disable_est": lambda p: est_service.disable_est(**app(p), profile_id=p.profiles["web-est"]),
        "enable_scep": lambda p: scep_service.enable_scep(
            **app(p), profile_id=p.profiles["web-api"], static_challenge="a-new-challenge-1"
        ),
        "update_scep": lambda p: scep_service.update_scep(
            **app(p), profile_id=p.profiles["devices-scep"], changes={"include_ca": False}
        ),
        "disable_scep": lambda p: scep_service.disable_scep(**app(p), profile_id=p.profiles["devices-scep"]),
    }


ENROLLMENT_CALLS = _enrollment_calls()


@pytest.mark.parametrize("name", sorted(ENROLLMENT_CALLS))
async def test_enrollment_of_a_legacy_profile_is_read_only_in_core(org_admin: OrgAdmin, name: str) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    before = await snapshot()
    with pytest.raises(LegacyReadOnly) as refused:
        await ENROLLMENT_CALLS[name](payments)
    assert refused.value.code == "LEGACY_READ_ONLY"
    assert "Application" in refused.value.message
    assert await snapshot() == before


def _create_calls() -> dict[str, CoreCall]:
    return {
        "alert": lambda p: alert_service.create_alert(
            actor=p.system(),
            application_id=p.project_id,
            name="new-alert",
            event_types=["issuance"],
            channels=[
                alert_service.ChannelSpec(
                    type="webhook", config={"url": "https://hooks.example.com/new"}, secret="signing-secret-1"
                )
            ],
        ),
        "sync": lambda p: sync_service.create_sync(
            actor=p.system(),
            application_id=p.project_id,
            name="new-sync",
            destination="http",
            connection={"url": "https://edge.example.com/new"},
            credentials={"signingSecret": "sync-signing-secret-0001"},
        ),
        "approval policy": lambda p: approval_service.create_policy(
            actor=p.system(),
            application_id=p.project_id,
            name="new-policy",
            profile_ids=[p.profiles["web-acme"]],
            steps=[approval_service.StepSpec([p.principals["admin"]], 1)],
            max_request_ttl=timedelta(hours=1),
        ),
    }


CREATE_CALLS = _create_calls()


@pytest.mark.parametrize("what", sorted(CREATE_CALLS))
async def test_new_alerts_syncs_and_policies_are_created_inside_applications(
    org_admin: OrgAdmin, what: str
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    before = await snapshot()
    with pytest.raises(CreateInsideApplication) as refused:
        await CREATE_CALLS[what](payments)
    assert refused.value.code == "CREATE_INSIDE_APPLICATION"
    assert f"a new {what} cannot be created in a legacy project" in refused.value.message
    assert "inside an Application" in refused.value.message
    assert await snapshot() == before


async def test_the_importer_writes_what_the_rules_refuse_and_only_inside_importing(
    org_admin: OrgAdmin,
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    with importing():
        for call in CREATE_CALLS.values():
            await call(payments)
        await ENROLLMENT_CALLS["update_attachment"](payments)
    assert await Alert.filter(application_id=payments.project_id, name="new-alert").exists()
    assert await Sync.filter(application_id=payments.project_id, name="new-sync").exists()
    assert await ApprovalPolicy.filter(application_id=payments.project_id, name="new-policy").exists()
    # Outside the block, the rules hold again.
    with pytest.raises(LegacyReadOnly):
        await ENROLLMENT_CALLS["update_attachment"](payments)


async def test_legacy_alerts_syncs_and_policies_can_be_changed_and_deleted_in_core(
    org_admin: OrgAdmin,
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    system = payments.system()
    assert payments.alert_id and payments.sync_id and payments.policy_id
    alert = await alert_service.update_alert(actor=system, alert_id=payments.alert_id, daily_repeat=True)
    assert alert.daily_repeat
    sync = await sync_service.update_sync(actor=system, sync_id=payments.sync_id, name="edge-push-2")
    assert sync.name == "edge-push-2"
    policy = await approval_service.update_policy(actor=system, policy_id=payments.policy_id, is_active=True)
    assert policy.is_active
    await alert_service.delete_alert(actor=system, alert_id=payments.alert_id)
    await sync_service.delete_sync(actor=system, sync_id=payments.sync_id)
    await approval_service.delete_policy(actor=system, policy_id=payments.policy_id)
    for model in (Alert, Sync, ApprovalPolicy):
        assert not await model.filter(application_id=payments.project_id).exists()


# ---------------------------------------------------------------- through GraphQL


def _attachment_args(profile: str) -> Callable[[LegacyPayments], dict[str, Any]]:
    return lambda p: {"a": str(p.project_id), "p": str(p.profiles[profile])}


GRAPHQL_ENROLLMENT = {
    "attachProfile": (
        "mutation($a: ID!, $p: ID!) { attachProfile(input: {applicationId: $a, profileId: $p}) { id } }",
        _attachment_args("web-api"),
    ),
    "updateAttachedProfile": (
        "mutation($a: ID!, $p: ID!) { updateAttachedProfile(input: {applicationId: $a, profileId: $p, "
        "api: {autoRenew: false}}) { id } }",
        _attachment_args("web-api"),
    ),
    "detachProfile": (
        "mutation($a: ID!, $p: ID!) { detachProfile(applicationId: $a, profileId: $p) }",
        _attachment_args("web-api"),
    ),
    "enableAcme": (
        "mutation($a: ID!, $p: ID!) { enableAcme(input: {applicationId: $a, profileId: $p, "
        "eabRequired: false}) { id } }",
        _attachment_args("web-acme"),
    ),
    "disableAcme": (
        "mutation($a: ID!, $p: ID!) { disableAcme(applicationId: $a, profileId: $p) { id } }",
        _attachment_args("web-acme"),
    ),
    "rotateAcmeEab": (
        "mutation($a: ID!, $p: ID!) { rotateAcmeEab(applicationId: $a, profileId: $p) { id } }",
        _attachment_args("web-acme"),
    ),
    "enableEst": (
        "mutation($a: ID!, $p: ID!) { enableEst(input: {applicationId: $a, profileId: $p, "
        'passphrase: "a-new-passphrase-1"}) { id } }',
        _attachment_args("web-api"),
    ),
    "updateEst": (
        'mutation($a: ID!, $p: ID!) { updateEst(input: {applicationId: $a, profileId: $p, username: "x"}) '
        "{ id } }",
        _attachment_args("web-est"),
    ),
    "disableEst": (
        "mutation($a: ID!, $p: ID!) { disableEst(applicationId: $a, profileId: $p) { id } }",
        _attachment_args("web-est"),
    ),
    "enableScep": (
        "mutation($a: ID!, $p: ID!) { enableScep(input: {applicationId: $a, profileId: $p, "
        'staticChallenge: "a-new-challenge-1"}) { id } }',
        _attachment_args("web-api"),
    ),
    "updateScep": (
        "mutation($a: ID!, $p: ID!) { updateScep(input: {applicationId: $a, profileId: $p, "
        "includeCa: false}) { id } }",
        _attachment_args("devices-scep"),
    ),
    "disableScep": (
        "mutation($a: ID!, $p: ID!) { disableScep(applicationId: $a, profileId: $p) { id } }",
        _attachment_args("devices-scep"),
    ),
}


async def _refused(gql: GraphQL, document: str, variables: dict[str, Any], token: str) -> dict[str, Any]:
    body = await gql.raw(document, variables, token=token)
    assert body["data"] is None, body
    (error,) = body["errors"]
    return dict(error)


@pytest.mark.parametrize("mutation", sorted(GRAPHQL_ENROLLMENT))
async def test_graphql_enrollment_mutations_on_a_legacy_profile_answer_legacy_read_only(
    gql: GraphQL, org_admin: OrgAdmin, mutation: str
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    document, variables = GRAPHQL_ENROLLMENT[mutation]
    before = await snapshot()
    error = await _refused(gql, document, variables(payments), org_admin.token)
    assert error["extensions"]["code"] == "LEGACY_READ_ONLY", error
    assert "Application" in error["message"]
    assert await snapshot() == before
    # The refusal is in the audit log, with its code.
    failure = await AuditEvent.filter(outcome=AuditOutcome.FAILURE, action=f"mutation.{mutation}").first()
    assert failure is not None and failure.details["code"] == "LEGACY_READ_ONLY"


CREATE_ALERT = (
    'mutation($a: ID!) { createAlert(input: {applicationId: $a, name: "new", eventTypes: [ISSUANCE], '
    'channels: [{type: WEBHOOK, config: {url: "https://hooks.example.com/new"}, '
    'secret: "signing-secret-1"}]}) { id } }'
)
CREATE_SYNC = (
    'mutation($a: ID!) { createSync(input: {applicationId: $a, name: "new", destination: HTTP, '
    'connection: {url: "https://edge.example.com/new"}, '
    'credentials: {signingSecret: "sync-signing-secret-0001"}}) { id } }'
)
CREATE_POLICY = (
    'mutation($a: ID!, $p: ID!, $u: ID!) { createApprovalPolicy(input: {applicationId: $a, name: "new", '
    "profileIds: [$p], steps: [{approverIds: [$u], required: 1}]}) { id } }"
)


@pytest.mark.parametrize("who", ["product_admin", "admin"])
async def test_graphql_creations_in_a_legacy_project_answer_create_inside_application(
    gql: GraphQL, org_admin: OrgAdmin, who: str
) -> None:
    """The Product Admin and the project's legacy admin (who may manage alerts, syncs and policies) alike."""
    payments = await legacy_payments(org_admin.organization_id)
    token = org_admin.token if who == "product_admin" else payments.tokens["admin"]
    project = str(payments.project_id)
    before = await snapshot()
    for document, variables in (
        (CREATE_ALERT, {"a": project}),
        (CREATE_SYNC, {"a": project}),
        (
            CREATE_POLICY,
            {"a": project, "p": str(payments.profiles["web-acme"]), "u": str(payments.principals["admin"])},
        ),
    ):
        error = await _refused(gql, document, variables, token)
        assert error["extensions"]["code"] == "CREATE_INSIDE_APPLICATION", error
        assert "inside an Application" in error["message"]
    assert await snapshot() == before


async def test_the_same_creations_succeed_inside_an_application(gql: GraphQL, org_admin: OrgAdmin) -> None:
    """The refused documents are valid: inside an Application, with the legacy profile attached, they pass."""
    payments = await legacy_payments(org_admin.organization_id)
    system = payments.system()
    app = await application_service.create_application(actor=system, name="payments-api")
    await application_service.attach_profile(
        actor=system,
        application_id=app.id,
        profile_id=payments.profiles["web-acme"],
        api=application_service.ApiEnrollmentSettings(),
    )
    await application_service.add_member(
        actor=system,
        application_id=app.id,
        principal_id=payments.principals["admin"],
        role=ApplicationRole.ADMIN,
    )
    variables = {
        "a": str(app.id),
        "p": str(payments.profiles["web-acme"]),
        "u": str(payments.principals["admin"]),
    }
    for document in (CREATE_ALERT, CREATE_SYNC, CREATE_POLICY):
        (created,) = (await gql(document, variables, token=org_admin.token)).values()
        assert created["id"]
    for model in (Alert, Sync, ApprovalPolicy):
        assert await model.filter(application_id=app.id, name="new").exists()


UPDATE_AND_DELETE = [
    (
        "mutation($id: ID!) { updateAlert(id: $id, input: {dailyRepeat: true}) { id dailyRepeat } }",
        "alert_id",
    ),
    ("mutation($id: ID!) { updateSync(id: $id, input: {autoSync: true}) { id autoSync } }", "sync_id"),
    (
        "mutation($id: ID!) { updateApprovalPolicy(id: $id, input: {isActive: true}) { id isActive } }",
        "policy_id",
    ),
    ("mutation($id: ID!) { deleteAlert(id: $id) }", "alert_id"),
    ("mutation($id: ID!) { deleteSync(id: $id) }", "sync_id"),
    ("mutation($id: ID!) { deleteApprovalPolicy(id: $id) }", "policy_id"),
]


@pytest.mark.parametrize("who", ["product_admin", "admin"])
async def test_graphql_legacy_alerts_syncs_and_policies_are_changed_and_deleted(
    gql: GraphQL, org_admin: OrgAdmin, who: str
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    token = org_admin.token if who == "product_admin" else payments.tokens["admin"]
    for document, attribute in UPDATE_AND_DELETE:
        data = await gql(document, {"id": str(getattr(payments, attribute))}, token=token)
        (value,) = data.values()
        assert value == str(getattr(payments, attribute)) or value["id"] == str(getattr(payments, attribute))
    for model in (Alert, Sync, ApprovalPolicy):
        assert not await model.filter(application_id=payments.project_id).exists()


MEMBER_MUTATIONS = [
    (
        "mutation($a: ID!, $u: ID!) { addApplicationMember(input: {applicationId: $a, principalId: $u, "
        "role: ADMIN}) { id } }",
        "outsider",
    ),
    (
        "mutation($a: ID!, $u: ID!) { changeApplicationMemberRole(input: {applicationId: $a, "
        "principalId: $u, role: AUDITOR}) { id } }",
        "member",
    ),
    ("mutation($a: ID!, $u: ID!) { removeApplicationMember(applicationId: $a, principalId: $u) }", "member"),
]


@pytest.mark.parametrize("who", ["product_admin", "admin"])
async def test_legacy_members_are_not_managed_as_application_members(
    gql: GraphQL, org_admin: OrgAdmin, who: str
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    token = org_admin.token if who == "product_admin" else payments.tokens["admin"]
    before = await snapshot()
    for document, member in MEMBER_MUTATIONS:
        variables = {"a": str(payments.project_id), "u": str(payments.principals[member])}
        error = await _refused(gql, document, variables, token)
        assert error["extensions"]["code"] == "LEGACY_READ_ONLY", error
        assert "legacy roles" in error["message"]
    assert await snapshot() == before
    with pytest.raises(LegacyReadOnly):
        await application_service.add_member(
            actor=payments.system(),
            application_id=payments.project_id,
            principal_id=payments.principals["outsider"],
            role=ApplicationRole.ADMIN,
        )


async def test_a_container_is_no_application(gql: GraphQL, org_admin: OrgAdmin) -> None:
    """Not listed, not found by id, not renamed, not deleted: a legacy project's container is no
    Application."""
    payments = await legacy_payments(org_admin.organization_id)
    real = await application_service.create_application(actor=payments.system(), name="payments-api")
    listed = await gql("{ applications(first: 50) { edges { node { id name } } } }", token=org_admin.token)
    assert [edge["node"]["id"] for edge in listed["applications"]["edges"]] == [str(real.id)]
    page = await application_service.list_applications(actor=payments.system(), first=50)
    assert [row.id for row in page.rows] == [real.id]
    # A legacy member's own container is not listed to them either.
    mine = await gql("{ applications(first: 50) { edges { node { id } } } }", token=payments.tokens["admin"])
    assert mine["applications"]["edges"] == []
    container = {"id": str(payments.project_id)}
    for document in (
        "query($id: ID!) { application(id: $id) { id } }",
        'mutation($id: ID!) { updateApplication(id: $id, input: {description: "x"}) { id } }',
        "mutation($id: ID!) { deleteApplication(id: $id) }",
    ):
        for token in (org_admin.token, payments.tokens["admin"]):
            error = await _refused(gql, document, container, token)
            assert error["extensions"]["code"] in {"NOT_FOUND", "FORBIDDEN"}, error
    error = await _refused(gql, "query($id: ID!) { application(id: $id) { id } }", container, org_admin.token)
    assert error["extensions"]["code"] == "NOT_FOUND"
    with pytest.raises(NotFound):
        await application_service.get_application(actor=payments.system(), application_id=payments.project_id)
    assert await Application.filter(id=payments.project_id, name="legacy:payments", legacy=True).exists()


async def test_rules_leave_applications_alone(org_admin: OrgAdmin) -> None:
    """The same calls on an Application's attachment do what they always did."""
    payments = await legacy_payments(org_admin.organization_id)
    system = payments.system()
    app = await application_service.create_application(actor=system, name="web")
    await application_service.attach_profile(
        actor=system,
        application_id=app.id,
        profile_id=payments.profiles["web-acme"],
        api=application_service.ApiEnrollmentSettings(),
    )
    attachment = await application_service.enable_acme(
        actor=system, application_id=app.id, profile_id=payments.profiles["web-acme"]
    )
    assert attachment.acme_enabled
    alert = await CREATE_CALLS["alert"](
        LegacyPayments(**{**payments.__dict__, "project_id": app.id})  # the same call, in the Application
    )
    assert alert.application_id == app.id
