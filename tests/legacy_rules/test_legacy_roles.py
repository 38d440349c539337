"""Legacy roles govern legacy resources (SPEC §12), decided in core.authz: the built-in admin, member and
viewer, and custom roles with and without conditions (profileSlugs, syncNames), each allowed and refused
exactly what it should, through GraphQL and through core. A condition that cannot be evaluated denies."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import GraphQL, OrgAdmin
from legacy_rules_support import LegacyPayments, example_export, legacy_payments, token_for

from core import authn, authz, issuance
from core import certificate as certificate_service
from core import sync as sync_service
from core.approval import ApprovalPending
from core.authz import Permission, Scope
from core.errors import Forbidden, NotFound
from core.legacy.rules import importing
from models import (
    Alert,
    ApprovalPolicy,
    ApprovalRequest,
    Certificate,
    LegacyMembership,
    LegacyRole,
    Principal,
    Sync,
)
from models.enums import CertificateStatus, PrincipalKind

OK, FORBIDDEN, NOT_FOUND, INVALID_STATE = "OK", "FORBIDDEN", "NOT_FOUND", "INVALID_STATE"
ROLES = ("product_admin", "admin", "member", "viewer", "web-issuers", "sync-operators", "outsider")
CONDITIONED_CERTIFICATES = {"gateway", "checkout", "www"}  # web-api and web-acme: the web-issuers' profiles
ALL_CERTIFICATES = {"gateway", "checkout", "www", "terminal-gw", "device-42"}


def expect(default: str, **overrides: str) -> dict[str, str]:
    """`default` for every legacy member; the Product Admin OK; the outsider cannot see the project."""
    codes = {role: default for role in ROLES}
    codes.update(product_admin=OK, outsider=NOT_FOUND)
    codes.update(
        {key.replace("_", "-") if key != "product_admin" else key: v for key, v in overrides.items()}
    )
    return codes


Prepare = Callable[[LegacyPayments], Awaitable[dict[str, Any]]]
Check = Callable[[dict[str, Any], LegacyPayments, str], None]


async def project(p: LegacyPayments) -> dict[str, Any]:
    return {"id": str(p.project_id)}


def certificate(slug: str) -> Prepare:
    async def prepare(p: LegacyPayments) -> dict[str, Any]:
        return {"id": str(p.certificates[slug])}

    return prepare


def issue_on(profile: str) -> Prepare:
    async def prepare(p: LegacyPayments) -> dict[str, Any]:
        return {"a": str(p.project_id), "p": str(p.profiles[profile])}

    return prepare


async def fresh_certificate(p: LegacyPayments) -> dict[str, Any]:
    row = await issuance.issue_certificate(
        actor=p.system(),
        application_id=p.project_id,
        profile_id=p.profiles["web-api"],
        subject=[("CN", "fresh.payments.example.com")],
    )
    return {"id": str(row.id)}


def attribute(name: str) -> Prepare:
    async def prepare(p: LegacyPayments) -> dict[str, Any]:
        return {"id": str(getattr(p, name))}

    return prepare


def inventory_check(data: dict[str, Any], p: LegacyPayments, role: str) -> None:
    names = {p.certificates[slug]: slug for slug in p.certificates}
    edges = data["certificateManager"]["legacyProject"]["certificates"]["edges"]
    seen = {names[uuid.UUID(edge["node"]["id"])] for edge in edges}
    assert seen == (CONDITIONED_CERTIFICATES if role == "web-issuers" else ALL_CERTIFICATES), role


def eab_check(data: dict[str, Any], p: LegacyPayments, role: str) -> None:
    profiles = data["certificateManager"]["legacyProject"]["profiles"]
    keys = {profile["slug"]: profile["enrollment"]["acme"]["eabHmacKey"] for profile in profiles}
    acme = example_export()["profiles"][1]["enrollment"]["acme"]
    assert keys["web-acme"] == acme["eabHmacKey"]


def key_check(data: dict[str, Any], p: LegacyPayments, role: str) -> None:
    assert "PRIVATE KEY" in data["certificate"]["privateKeyPem"]


@dataclass(frozen=True)
class Row:
    name: str
    document: str
    expected: dict[str, str]
    prepare: Prepare = project
    check: Check | None = None


LEGACY_PROJECT = "query($id: ID!) { certificateManager { legacyProject(id: $id) { id slug %s } } }"

ROWS = [
    Row("legacyProject", LEGACY_PROJECT % "counts { certificates }", expect(OK)),
    Row(
        "legacyProject.members",
        LEGACY_PROJECT % "members { role permissions principal { name } customRole { slug conditions "
        "{ profileSlugs syncNames other } } }",
        expect(OK),
    ),
    Row(
        "legacyProject.certificates",
        LEGACY_PROJECT % "certificates(first: 50) { edges { node { id commonName } } }",
        expect(OK),
        check=inventory_check,
    ),
    Row(
        "legacyProject.profiles.eabHmacKey",
        LEGACY_PROJECT % "profiles { slug enrollment { acme { eabHmacKey } } }",
        expect(FORBIDDEN, admin=OK),
        check=eab_check,
    ),
    Row(
        "certificate.inTheirProfiles",
        "query($id: ID!) { certificate(id: $id) { id serialNumber sans { value } } }",
        expect(OK),
        certificate("gateway"),
    ),
    Row(
        "certificate.outsideTheirProfiles",
        "query($id: ID!) { certificate(id: $id) { id serialNumber } }",
        expect(OK, web_issuers=NOT_FOUND),
        certificate("terminal-gw"),
    ),
    Row(
        "certificate.privateKeyPem",
        "query($id: ID!) { certificate(id: $id) { privateKeyPem } }",
        expect(FORBIDDEN, admin=OK, member=OK),
        certificate("gateway"),
        check=key_check,
    ),
    Row(
        "issueCertificate.inTheirProfiles",
        "mutation($a: ID!, $p: ID!) { issueCertificate(input: {applicationId: $a, profileId: $p, "
        'commonName: "new.payments.example.com"}) { certificate { id commonName } } }',
        expect(FORBIDDEN, admin=OK, member=OK, web_issuers=OK),
        issue_on("web-api"),
    ),
    Row(
        # The profile's API enrollment is off: who may issue there learns that; who may not, only FORBIDDEN.
        "issueCertificate.outsideTheirProfiles",
        "mutation($a: ID!, $p: ID!) { issueCertificate(input: {applicationId: $a, profileId: $p, "
        'commonName: "new.payments.example.com"}) { certificate { id } } }',
        expect(FORBIDDEN, product_admin=INVALID_STATE, admin=INVALID_STATE, member=INVALID_STATE),
        issue_on("web-est"),
    ),
    Row(
        "revokeCertificate",
        "mutation($id: ID!) { revokeCertificate(input: {certificateId: $id}) { certificate { id status } } }",
        expect(FORBIDDEN, admin=OK, member=OK),
        fresh_certificate,
    ),
    Row(
        "generateScepChallenge",
        "mutation($a: ID!, $p: ID!) { generateScepChallenge(applicationId: $a, profileId: $p) { id } }",
        # Allowed callers reach the service, which answers that this profile's challenge is static.
        expect(FORBIDDEN, product_admin=INVALID_STATE, admin=INVALID_STATE, member=INVALID_STATE),
        issue_on("devices-scep"),
    ),
    Row(
        "updateAlert",
        "mutation($id: ID!) { updateAlert(id: $id, input: {dailyRepeat: true}) { id } }",
        expect(FORBIDDEN, admin=OK, sync_operators=OK),
        attribute("alert_id"),
    ),
    Row(
        "runSync",
        "mutation($id: ID!) { runSync(id: $id) { queued sync { id } } }",
        expect(FORBIDDEN, admin=OK, member=OK, sync_operators=OK),
        attribute("sync_id"),
    ),
    Row(
        "updateSync",
        "mutation($id: ID!) { updateSync(id: $id, input: {autoSync: false}) { id } }",
        expect(FORBIDDEN, admin=OK),
        attribute("sync_id"),
    ),
    Row(
        "updateApprovalPolicy",
        'mutation($id: ID!) { updateApprovalPolicy(id: $id, input: {maxRequestTtl: "12h"}) { id } }',
        expect(FORBIDDEN, admin=OK),
        attribute("policy_id"),
    ),
    Row(
        "auditEvents",
        "query($id: ID!) { auditEvents(applicationId: $id, first: 5) { edges { node { id } } } }",
        expect(FORBIDDEN, admin=OK, viewer=OK, sync_operators=OK),
    ),
]


async def rows_of_the_project() -> dict[str, Any]:
    return {
        "certificates": await Certificate.all().order_by("id").values("id", "status"),
        "alerts": await Alert.all().order_by("id").values(),
        "syncs": await Sync.all().order_by("id").values(),
        "policies": await ApprovalPolicy.all().order_by("id").values(),
    }


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_legacy_roles_through_graphql(gql: GraphQL, org_admin: OrgAdmin, row: Row) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    assert set(row.expected) == set(ROLES)
    for role in ROLES:
        token = org_admin.token if role == "product_admin" else payments.tokens[role]
        variables = await row.prepare(payments)
        before = await rows_of_the_project()
        body = await gql.raw(row.document, variables, token=token)
        codes = sorted({str(error["extensions"]["code"]) for error in body.get("errors") or []})
        got = ",".join(codes) if codes else OK
        assert got == row.expected[role], (role, body.get("errors"))
        if got == OK:
            if row.check is not None:
                row.check(body["data"], payments, role)
        else:
            assert await rows_of_the_project() == before, f"{role}: a refused call changed something"


async def test_legacy_projects_lists_what_each_caller_may_see(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    document = "{ certificateManager { legacyProjects { id slug } } }"
    for role in ROLES:
        token = org_admin.token if role == "product_admin" else payments.tokens[role]
        projects = (await gql(document, token=token))["certificateManager"]["legacyProjects"]
        expected = [] if role == "outsider" else [{"id": str(payments.project_id), "slug": "payments"}]
        assert projects == expected, role


# ---------------------------------------------------------------- in core


async def test_the_actor_carries_its_legacy_grants_keyed_by_the_container(org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    org, app = payments.organization_id, payments.project_id
    web_api, web_est = payments.profiles["web-api"], payments.profiles["web-est"]

    admin = await payments.actor("admin")
    assert set(admin.legacy_grants) == {app} and admin.application_roles == {}
    for permission in (
        Permission.APPLICATION_READ,
        Permission.CERTIFICATE_ISSUE,
        Permission.CONFIG_SECRET_READ,
        Permission.MEMBERS_MANAGE,
        Permission.SYNC_MANAGE,
    ):
        assert authz.can(admin, permission, Scope(org, app)), permission
    # Enrollment is no legacy permission: legacy profiles' enrollment is read-only anyway.
    assert not authz.can(admin, Permission.ENROLLMENT_MANAGE, Scope(org, app))
    assert not authz.can(admin, Permission.APPLICATION_UPDATE, Scope(org, app))

    viewer = await payments.actor("viewer")
    assert authz.can(viewer, Permission.CERTIFICATE_READ, Scope(org, app, profile_id=web_est))
    assert authz.can(viewer, Permission.AUDIT_READ, Scope(org, app))
    for permission in (
        Permission.CERTIFICATE_ISSUE,
        Permission.PRIVATE_KEY_READ,
        Permission.CONFIG_SECRET_READ,
    ):
        assert not authz.can(viewer, permission, Scope(org, app, profile_id=web_api)), permission

    bot = await payments.actor("web-issuers")
    assert authz.can(bot, Permission.APPLICATION_READ, Scope(org, app))
    assert authz.can(bot, Permission.CERTIFICATE_ISSUE, Scope(org, app, profile_id=web_api))
    assert not authz.can(bot, Permission.CERTIFICATE_ISSUE, Scope(org, app, profile_id=web_est))
    # Not naming a profile is not being in the allowed ones: denied.
    assert not authz.can(bot, Permission.CERTIFICATE_READ, Scope(org, app))
    assert authz.profile_limit(bot, Permission.CERTIFICATE_READ, Scope(org, app)) == {
        web_api,
        payments.profiles["web-acme"],
    }
    assert authz.profile_limit(admin, Permission.CERTIFICATE_READ, Scope(org, app)) is None
    assert authz.profile_limit(bot, Permission.CERTIFICATE_REVOKE, Scope(org, app)) == frozenset()

    # A legacy grant is no grant anywhere else.
    other = Scope(org, payments.principals["admin"])
    assert not authz.can(admin, Permission.APPLICATION_READ, other)
    assert not authz.can(admin, Permission.APPLICATION_READ, Scope(payments.principals["admin"], app))


async def test_a_conditioned_role_acts_on_its_profiles_only_in_core(org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    bot = await payments.actor("web-issuers")
    page = await certificate_service.list_certificates(
        actor=bot, application_id=payments.project_id, first=50
    )
    slugs = {v: k for k, v in payments.certificates.items()}
    assert {slugs[row.id] for row in page.items} == CONDITIONED_CERTIFICATES
    # Filtering on a profile outside the condition finds nothing, rather than everything.
    page = await certificate_service.list_certificates(
        actor=bot, application_id=payments.project_id, profile_id=payments.profiles["web-est"], first=50
    )
    assert page.items == []
    with pytest.raises(NotFound):
        await certificate_service.get_certificate(
            actor=bot, certificate_id=payments.certificates["terminal-gw"]
        )
    issued = await issuance.issue_certificate(
        actor=bot,
        application_id=payments.project_id,
        profile_id=payments.profiles["web-api"],
        subject=[("CN", "ci.payments.example.com")],
    )
    assert issued.profile_id == payments.profiles["web-api"]
    with pytest.raises(Forbidden):
        await issuance.issue_certificate(
            actor=bot,
            application_id=payments.project_id,
            profile_id=payments.profiles["web-est"],
            subject=[("CN", "ci.payments.example.com")],
        )
    with pytest.raises(Forbidden):
        await certificate_service.revoke_certificate(actor=bot, certificate_id=issued.id, reason="superseded")
    renewed = await certificate_service.renew_certificate(actor=bot, certificate_id=issued.id, mode="new_key")
    assert renewed.renewed_from_id == issued.id
    with pytest.raises(Forbidden):
        await certificate_service.read_private_key(actor=bot, certificate_id=renewed.id)


async def add_member(
    payments: LegacyPayments, name: str, permissions: list[str], conditions: Any
) -> tuple[Any, str]:
    """A machine identity holding a new custom role (written as the importer writes roles)."""
    role = await LegacyRole.create(
        project_id=payments.project_id, slug=name, name=name, permissions=permissions, conditions=conditions
    )
    principal = await Principal.create(
        organization_id=payments.organization_id, kind=PrincipalKind.MACHINE, name=name
    )
    await LegacyMembership.create(
        project_id=payments.project_id, principal=principal, role="custom", custom_role=role
    )
    token = await token_for(principal)
    return await authn.load_actor(principal), token


async def test_sync_names_limit_sync_permissions_to_those_syncs(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    assert payments.sync_id is not None
    with importing():
        other = await sync_service.create_sync(
            actor=payments.system(),
            application_id=payments.project_id,
            name="other-push",
            destination="http",
            connection={"url": "https://other.payments.example.com/push"},
            credentials={"signingSecret": "other-signing-secret-01"},
            auto_sync=False,
        )
    actor, token = await add_member(
        payments, "edge-operator", ["project:read", "syncs:run", "syncs:manage"], {"syncNames": ["edge-push"]}
    )
    _, queued = await sync_service.run_sync(actor=actor, sync_id=payments.sync_id)
    assert queued >= 0
    with pytest.raises(Forbidden):
        await sync_service.run_sync(actor=actor, sync_id=other.id)
    updated = await sync_service.update_sync(actor=actor, sync_id=payments.sync_id, auto_sync=False)
    assert not updated.auto_sync
    # Renaming it out of the condition would take it out of reach: refused, nothing changed.
    with pytest.raises(Forbidden):
        await sync_service.update_sync(actor=actor, sync_id=payments.sync_id, name="edge-push-2")
    assert (await Sync.get(id=payments.sync_id)).name == "edge-push"
    # Reading syncs is not a sync permission: both are listed.
    names = await sync_service.list_syncs(actor=actor, application_id=payments.project_id)
    assert sorted(s.name for s in names) == ["edge-push", "other-push"]

    run = "mutation($id: ID!) { runSync(id: $id) { queued } }"
    assert "queued" in (await gql(run, {"id": str(payments.sync_id)}, token=token))["runSync"]
    body = await gql.raw(run, {"id": str(other.id)}, token=token)
    assert [e["extensions"]["code"] for e in body["errors"]] == [FORBIDDEN]


@pytest.mark.parametrize(
    "conditions",
    [
        {"ipRanges": ["10.0.0.0/8"]},  # a condition this server cannot evaluate
        {"profileSlugs": "web-api"},  # a malformed one
        {"profileSlugs": ["web-api"], "notAfter": "2030-01-01"},
        ["profileSlugs"],
    ],
    ids=["unknown-key", "not-a-list", "unknown-beside-known", "not-an-object"],
)
async def test_a_condition_that_cannot_be_evaluated_denies_everything(
    gql: GraphQL, org_admin: OrgAdmin, conditions: Any
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    actor, token = await add_member(payments, "odd-role", ["project:read", "certificates:read"], conditions)
    assert actor.legacy_grants[payments.project_id].permissions == frozenset()
    body = await gql.raw(LEGACY_PROJECT % "", {"id": str(payments.project_id)}, token=token)
    assert [e["extensions"]["code"] for e in body["errors"]] == [NOT_FOUND]
    listed = await gql("{ certificateManager { legacyProjects { id } } }", token=token)
    assert listed["certificateManager"]["legacyProjects"] == []


async def test_profile_slugs_the_project_lacks_match_no_profile(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    actor, token = await add_member(
        payments, "nowhere", ["project:read", "certificates:read"], {"profileSlugs": ["no-such-profile"]}
    )
    grant = actor.legacy_grants[payments.project_id]
    assert grant.profile_ids == frozenset() and Permission.CERTIFICATE_READ in grant.permissions
    # It sees the project, but not one certificate.
    data = await gql(LEGACY_PROJECT % "", {"id": str(payments.project_id)}, token=token)
    assert data["certificateManager"]["legacyProject"]["slug"] == "payments"
    body = await gql.raw(
        LEGACY_PROJECT % "certificates(first: 5) { edges { node { id } } }",
        {"id": str(payments.project_id)},
        token=token,
    )
    assert [e["extensions"]["code"] for e in body["errors"]] == [FORBIDDEN]
    with pytest.raises(NotFound):
        await certificate_service.get_certificate(
            actor=actor, certificate_id=payments.certificates["gateway"]
        )


async def test_legacy_approvers_decide_requests_of_a_legacy_policy(gql: GraphQL, org_admin: OrgAdmin) -> None:
    """The imported policy names alice and bob: bob (member, approvals:decide) approves what the CI bot
    asked for; the viewer may not, and the request was listed to bob only."""
    payments = await legacy_payments(org_admin.organization_id)
    await ApprovalPolicy.filter(id=payments.policy_id).update(is_active=True)
    bot = await payments.actor("web-issuers")
    with pytest.raises(ApprovalPending) as held:
        await issuance.issue_certificate(
            actor=bot,
            application_id=payments.project_id,
            profile_id=payments.profiles["web-api"],
            subject=[("CN", "held.payments.example.com")],
        )
    request_id = str(held.value.request.id)
    listing = "{ approvalRequests(first: 10) { edges { node { id status legacyProject { slug } } } } }"
    listed = (await gql(listing, token=payments.tokens["member"]))["approvalRequests"]["edges"]
    assert [(e["node"]["id"], e["node"]["legacyProject"]) for e in listed] == [
        (request_id, {"slug": "payments"})
    ]
    assert (await gql(listing, token=payments.tokens["viewer"]))["approvalRequests"]["edges"] == []
    approve = "mutation($id: ID!) { approveRequest(id: $id) { id status certificate { id commonName } } }"
    refused = await gql.raw(approve, {"id": request_id}, token=payments.tokens["viewer"])
    assert [e["extensions"]["code"] for e in refused["errors"]] == [FORBIDDEN]
    approved = (await gql(approve, {"id": request_id}, token=payments.tokens["member"]))["approveRequest"]
    assert approved["status"] == "ISSUED"
    assert approved["certificate"]["commonName"] == "held.payments.example.com"
    row = await ApprovalRequest.get(id=request_id)
    issued = await Certificate.get(id=row.certificate_id)
    assert issued.application_id == payments.project_id and issued.status == CertificateStatus.ACTIVE
