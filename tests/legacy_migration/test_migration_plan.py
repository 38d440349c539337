"""migrationPlan reviews the imported example export (step 1) and proposes steps 2-8: one application by
default or several by mapping, the enrollment copied, alerts/syncs/policies where their profiles land, members
with roles (custom roles to the closest role, never wider, every dropped permission and condition a warning),
conflicts, and each old URL beside its new one. Planning writes nothing and never shows a secret."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin, create_principal_with_token
from migration_support import (
    PLAN,
    example_document,
    example_secrets,
    guide_entry,
    import_example,
    plan,
    token_for,
)

from core import runtime
from core.authz import APPLICATION_ROLE_PERMISSIONS, PROFILE_CONDITIONED, SYNC_CONDITIONED
from core.legacy.migration_roles import map_builtin_role, map_custom_role
from core.legacy.roles import BUILTIN_ROLES, LEGACY_PERMISSIONS, granted_permissions
from models import (
    Application,
    AuditEvent,
    CertificateAuthority,
    CertificateProfile,
    LegacyMembership,
    LegacyMigration,
    Organization,
    Principal,
    Sync,
)
from models.enums import ApplicationRole, AuditOutcome, CaStatus


def by_name(items: list[dict[str, str]], key: str = "name") -> dict[str, dict[str, str]]:
    return {item[key]: item for item in items}


async def test_the_default_plan_of_the_example(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    audit_before = await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).count()
    data = await plan(gql, org_admin.token, imported.project_id)

    # Step 1: the review
    review = data["review"]
    assert {p["slug"]: p["method"] for p in review["profiles"]} == {
        "web-api": "api",
        "web-acme": "acme",
        "web-est": "est",
        "devices-scep": "scep",
    }
    assert [a["name"] for a in review["alerts"]] == ["payments-expiry-and-issuance"]
    assert [s["name"] for s in review["syncs"]] == ["edge-push"]
    assert [p["name"] for p in review["approvalPolicies"]] == ["payments-api-approval"]
    assert {r["slug"] for r in review["roles"]} == {"web-issuers", "sync-operators"}
    assert len(review["members"]) == 5

    # Steps 2-7: one application named after the project
    (app,) = data["applications"]
    assert (app["name"], app["status"], app["applicationId"]) == ("payments", "CREATE", None)
    assert {p["slug"]: p["methods"] for p in app["profiles"]} == {
        "web-api": ["api"],
        "web-acme": ["acme"],
        "web-est": ["est"],
        "devices-scep": ["scep"],
    }
    assert all(p["status"] == "CREATE" for p in app["profiles"])
    assert [(a["name"], sorted(a["profiles"])) for a in app["alerts"]] == [
        ("payments-expiry-and-issuance", ["web-acme", "web-api"])
    ]
    assert [(s["name"], s["profiles"]) for s in app["syncs"]] == [("edge-push", ["web-api"])]
    (policy,) = app["approvalPolicies"]
    assert policy["steps"] == [{"approvers": ["Alice Admin", "Bob Member"], "required": 1}]
    members = by_name(app["members"])
    assert {name: m["role"] for name, m in members.items()} == {
        "Alice Admin": "ADMIN",
        "Bob Member": "OPERATOR",
        "Victor Viewer": "AUDITOR",
        "Carol Syncs": "AUDITOR",  # sync-operators covers the Auditor's permissions, not the Operator's
    }
    assert "payments-ci-bot" not in members  # web-issuers covers no role: never widened
    assert app["pending"] == 1 + 4 + 1 + 1 + 1 + 4

    # Warnings: every dropped permission and condition; no conflict
    warnings = [(w["kind"], w["subject"], w["message"]) for w in data["warnings"]]
    dropped = sorted(m for k, s, m in warnings if k == "permission_dropped" and s == "member Carol Syncs")
    assert len(dropped) == 2
    assert "'alerts:manage'" in dropped[0] and "'syncs:run'" in dropped[1]
    assert any(
        k == "condition_dropped" and s == "member payments-ci-bot" and "profileSlugs" in m
        for k, s, m in warnings
    )
    assert any(k == "role_not_migrated" and s == "member payments-ci-bot" for k, s, _ in warnings)
    assert data["conflicts"] == []

    # Step 8: each old URL beside its new one
    base = runtime.settings().public_url
    ids = {slug: str(pid) for slug, pid in imported.profile_ids.items()}
    guide = data["clientGuide"]
    acme = guide_entry(guide, "web-acme", "acme")
    assert acme["old"] == f"{base}/acme/profiles/{ids['web-acme']}/directory"
    assert acme["new"] == f"{base}/acme/applications/{{applicationId}}/profiles/{ids['web-acme']}/directory"
    assert acme["pending"] is True and acme["applicationId"] is None
    assert "EAB key id and HMAC key" in acme["keeps"]
    est = guide_entry(guide, "web-est", "est")
    assert est["old"] == f"{base}/.well-known/est/{ids['web-est']}"
    assert est["new"] == f"{base}/.well-known/est/applications/{{applicationId}}/profiles/{ids['web-est']}"
    # The imported profile is named payments-web-est: the single-label form `{app}.{profile}` fits it.
    assert est["newLabel"] == f"{base}/.well-known/est/payments.payments-web-est"
    scep = guide_entry(guide, "devices-scep", "scep")
    assert scep["old"] == f"{base}/scep/{ids['devices-scep']}/pkiclient.exe"
    assert (
        scep["new"]
        == f"{base}/scep/applications/{{applicationId}}/profiles/{ids['devices-scep']}/pkiclient.exe"
    )
    agent = guide_entry(guide, "web-api", "agent")
    assert agent["new"] == "application-name: payments\nprofile-name: payments-web-api"
    api = guide_entry(guide, "web-api", "api")
    assert str(imported.project_id) in api["old"] and "{applicationId}" in api["new"]

    # The document is JSON, carries no secret, and planning wrote nothing
    text = json.dumps(data)
    for secret in [
        *example_secrets().values(),
        "legacy-webhook-signing-secret-01",
        "legacy-sync-signing-secret",
    ]:
        if secret != example_secrets()["eab_kid"] and secret != example_secrets()["est_username"]:
            assert secret not in text
    assert data["document"]["fingerprint"] == data["fingerprint"]
    assert await Application.filter(legacy=False).count() == 0
    assert await LegacyMigration.all().count() == 0
    assert await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).count() == audit_before


async def test_a_mapping_makes_several_applications(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    data = await plan(
        gql,
        org_admin.token,
        imported.project_id,
        applications=[
            {"name": "payments-web", "profileSlugs": ["web-api", "web-acme"]},
            {"name": "payments-devices", "profileSlugs": ["web-est", "devices-scep"]},
        ],
    )
    web, devices = data["applications"]
    assert [p["slug"] for p in web["profiles"]] == ["web-api", "web-acme"]
    assert [p["slug"] for p in devices["profiles"]] == ["web-est", "devices-scep"]
    # The alert, sync and policy cover web profiles only: recreated in payments-web only.
    assert [a["name"] for a in web["alerts"]] == ["payments-expiry-and-issuance"]
    assert [s["name"] for s in web["syncs"]] == ["edge-push"]
    assert [p["name"] for p in web["approvalPolicies"]] == ["payments-api-approval"]
    assert devices["alerts"] == devices["syncs"] == devices["approvalPolicies"] == []
    # web-issuers is limited to web-api and web-acme: in payments-web that condition is moot (no warning), in
    # payments-devices it cannot be kept (a warning); either way it covers no role (no audit:read).
    conditions = [
        (w["application"], w["subject"]) for w in data["warnings"] if w["kind"] == "condition_dropped"
    ]
    assert conditions == [("payments-devices", "member payments-ci-bot")]
    not_migrated = {w["application"] for w in data["warnings"] if w["kind"] == "role_not_migrated"}
    assert not_migrated == {"payments-web", "payments-devices"}
    assert (
        {m["name"] for m in web["members"]}
        == {m["name"] for m in devices["members"]}
        == {
            "Alice Admin",
            "Bob Member",
            "Victor Viewer",
            "Carol Syncs",
        }
    )
    ids = {g["application"] for g in data["clientGuide"]}
    assert ids == {"payments-web", "payments-devices"}
    assert guide_entry(data["clientGuide"], "web-est", "est")["application"] == "payments-devices"

    # A mapping that leaves profiles out says so.
    partial = await plan(
        gql, org_admin.token, imported.project_id, applications=[{"name": "web", "profileSlugs": ["web-api"]}]
    )
    unmapped = {w["subject"] for w in partial["warnings"] if w["kind"] == "profile_not_mapped"}
    assert unmapped == {"profile web-acme", "profile web-est", "profile devices-scep"}
    (web_only,) = partial["applications"]
    assert [a["profiles"] for a in web_only["alerts"]] == [["web-api"]]  # the filter as it lands
    assert any(w["kind"] == "filter_split" for w in partial["warnings"])


async def test_conflicts_keep_things_out(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    # An unrelated application holds one planned name; a profile was deleted; an approver left the project.
    await Application.create(organization_id=org_admin.organization_id, name="payments-devices")
    await CertificateProfile.filter(id=imported.profile_ids["web-acme"]).update(deleted_at=datetime.now(UTC))
    bob = await Principal.get(email="bob@payments.example.com")
    await LegacyMembership.filter(project_id=imported.project_id, principal_id=bob.id).delete()
    data = await plan(
        gql,
        org_admin.token,
        imported.project_id,
        applications=[
            {"name": "payments-web", "profileSlugs": ["web-api", "web-acme"]},
            {"name": "payments-devices", "profileSlugs": ["web-est", "devices-scep"]},
        ],
    )
    web, devices = data["applications"]
    assert devices["status"] == "BLOCKED" and devices["profiles"] == []
    assert [p["slug"] for p in web["profiles"]] == ["web-api"]
    kinds = {(c["kind"], c["subject"]) for c in data["conflicts"]}
    assert kinds == {
        ("application_name_taken", "application payments-devices"),
        ("profile_deleted", "profile web-acme"),
        ("approver_not_member", "approval policy payments-api-approval"),
    }
    # The policy keeps Alice, who can still approve; Bob is no longer there.
    (policy,) = web["approvalPolicies"]
    assert policy["steps"] == [{"approvers": ["Alice Admin"], "required": 1}]
    assert {g["application"] for g in data["clientGuide"]} == {"payments-web"}

    # A CA that cannot issue keeps every profile of it out, and an application without profiles is blocked.
    await CertificateAuthority.filter(organization_id=org_admin.organization_id).update(
        status=CaStatus.DISABLED
    )
    blocked = await plan(gql, org_admin.token, imported.project_id)
    (app,) = blocked["applications"]
    assert app["status"] == "BLOCKED"
    kinds_now = [c["kind"] for c in blocked["conflicts"]]
    assert kinds_now.count("profile_ca_unusable") == 3 and "no_profiles" in kinds_now


async def test_bad_options_and_callers(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    for applications, field in (
        ([{"name": "web", "profileSlugs": ["nope"]}], "options.applications[0].profileSlugs"),
        ([{"name": "a", "profileSlugs": ["web-api"]}, {"name": "a", "profileSlugs": ["web-est"]}], None),
        ([{"name": "a", "profileSlugs": []}], "options.applications[0].profileSlugs"),
    ):
        with pytest.raises(GraphQLError) as refused:
            await plan(gql, org_admin.token, imported.project_id, applications=applications)
        assert refused.value.codes == ["INVALID_INPUT"]
        if field:
            assert refused.value.errors[0]["extensions"]["field"] == field
    # Product Members (even the legacy project's admin) may not plan; another organization finds nothing.
    alice = await token_for(email="alice@payments.example.com")
    other = await Organization.create(name="globex")
    _, foreign = await create_principal_with_token(other.id, "admin@globex.test", "admin")
    for token, code in ((alice, "FORBIDDEN"), (foreign, "NOT_FOUND"), (None, "UNAUTHENTICATED")):
        body = await gql.raw(PLAN, {"id": str(imported.project_id)}, token=token)
        assert [e["extensions"]["code"] for e in body["errors"]] == [code]


# ---------------------------------------------------------------- custom roles, without a database


def test_builtin_roles_map_one_to_one() -> None:
    assert map_builtin_role("admin").role == ApplicationRole.ADMIN
    assert map_builtin_role("member").role == ApplicationRole.OPERATOR
    assert map_builtin_role("viewer").role == ApplicationRole.AUDITOR
    # The built-in legacy sets are exactly the application roles' (nothing dropped, nothing widened).
    assert (
        granted_permissions(BUILTIN_ROLES["member"]) == APPLICATION_ROLE_PERMISSIONS[ApplicationRole.OPERATOR]
    )
    assert (
        granted_permissions(BUILTIN_ROLES["viewer"]) == APPLICATION_ROLE_PERMISSIONS[ApplicationRole.AUDITOR]
    )


def test_custom_roles_map_to_the_closest_role() -> None:
    app = {"application": "payments", "profile_slugs": ["a", "b"], "sync_names": ["s1", "s2"]}
    operator = sorted(BUILTIN_ROLES["member"])
    exact = map_custom_role(operator, {}, **app)  # type: ignore[arg-type]
    assert (exact.role, exact.dropped_permissions, exact.dropped_conditions) == (
        ApplicationRole.OPERATOR,
        (),
        (),
    )
    more = map_custom_role([*operator, "alerts:manage"], {}, **app)  # type: ignore[arg-type]
    assert more.role == ApplicationRole.OPERATOR and more.dropped_permissions == ("alerts:manage",)
    # A condition over every profile of the application is moot: no warning.
    moot = map_custom_role(operator, {"profileSlugs": ["a", "b", "c"]}, **app)  # type: ignore[arg-type]
    assert (moot.role, moot.dropped_conditions) == (ApplicationRole.OPERATOR, ())
    # Over some of them: the conditioned permissions are not kept, so the role falls (here to none).
    limited = map_custom_role(operator, {"profileSlugs": ["a"]}, **app)  # type: ignore[arg-type]
    assert limited.role is None and len(limited.dropped_conditions) == 1
    assert "also holds b" in limited.dropped_conditions[0]
    # Sync names: an admin limited to one of two syncs keeps no sync permission, so is no Admin/Operator.
    admin = sorted(BUILTIN_ROLES["admin"])
    syncs = map_custom_role(admin, {"syncNames": ["s1"]}, **app)  # type: ignore[arg-type]
    assert syncs.role == ApplicationRole.AUDITOR and "syncs:run" in syncs.dropped_permissions
    # With both syncs the condition is moot. Still no Admin: the vocabulary grants no enrollment or
    # application settings permission (enrollment was baked into legacy profiles): Operator at most.
    every = map_custom_role(admin, {"syncNames": ["s1", "s2"]}, **app)  # type: ignore[arg-type]
    assert (every.role, every.dropped_conditions) == (ApplicationRole.OPERATOR, ())
    assert set(every.dropped_permissions) == {
        "alerts:manage",
        "approval-policies:manage",
        "audit:read",
        "enrollment:read-secrets",
        "members:manage",
        "syncs:manage",
    }
    # A condition the role's permissions do not touch is not reported.
    quiet = map_custom_role(["project:read", "alerts:manage"], {"profileSlugs": ["a"]}, **app)  # type: ignore[arg-type]
    assert quiet.dropped_conditions == ()
    unknown = map_custom_role(operator, {"hostnames": ["x"]}, **app)  # type: ignore[arg-type]
    assert unknown.role is None and unknown.dropped_conditions == ("unknown condition 'hostnames'",)


def test_migration_never_widens_access() -> None:
    """Every subset of the vocabulary, unconditioned and limited to one of two profiles and syncs."""
    vocabulary = sorted(LEGACY_PERMISSIONS)
    app = {"application": "x", "profile_slugs": ["a", "b"], "sync_names": ["s", "t"]}
    for size in range(len(vocabulary) + 1):
        for subset in itertools.combinations(vocabulary, size):
            granted = granted_permissions(subset)
            free = map_custom_role(subset, {}, **app)  # type: ignore[arg-type]
            if free.role is not None:
                assert APPLICATION_ROLE_PERMISSIONS[free.role] <= granted, subset
            limited = map_custom_role(subset, {"profileSlugs": ["a"], "syncNames": ["s"]}, **app)  # type: ignore[arg-type]
            if limited.role is not None:
                kept = APPLICATION_ROLE_PERMISSIONS[limited.role]
                assert kept <= granted - PROFILE_CONDITIONED - SYNC_CONDITIONED, subset


async def test_the_example_document_is_unchanged_by_planning(gql: GraphQL, org_admin: OrgAdmin) -> None:
    """Two plans of an unchanged project carry the same fingerprint."""
    imported = await import_example(org_admin.organization_id, example_document())
    first = await plan(gql, org_admin.token, imported.project_id)
    second = await plan(gql, org_admin.token, imported.project_id)
    assert first["fingerprint"] == second["fingerprint"]
    assert first["document"]["state"] == second["document"]["state"]


async def test_an_unfiltered_sync_is_copied_to_every_application(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    await Sync.filter(application_id=imported.project_id).update(profile_ids=[])
    data = await plan(
        gql,
        org_admin.token,
        imported.project_id,
        applications=[
            {"name": "payments-web", "profileSlugs": ["web-api", "web-acme"]},
            {"name": "payments-devices", "profileSlugs": ["web-est", "devices-scep"]},
        ],
    )
    assert [[s["profiles"] for s in a["syncs"]] for a in data["applications"]] == [[[]], [[]]]
    (note,) = [w for w in data["warnings"] if w["kind"] == "copied_to_several"]
    assert note["subject"] == "sync edge-push" and "'payments-web', 'payments-devices'" in note["message"]


async def test_a_member_role_chosen_by_hand_replaces_the_closest(gql: GraphQL, org_admin: OrgAdmin) -> None:
    """The ci bot's custom role covers no application role, so by default it is left out; an admin may
    choose its role in the options, and the plan then lists what that grants beyond the legacy role."""
    imported = await import_example(org_admin.organization_id)
    data = await plan(
        gql,
        org_admin.token,
        imported.project_id,
        memberRoles=[
            {"member": "payments-ci-bot", "role": "operator"},
            {"member": "victor@payments.example.com", "role": "none"},
        ],
    )
    (app,) = data["applications"]
    members = {m["name"]: m["role"] for m in app["members"]}
    assert members["payments-ci-bot"] == "OPERATOR"
    assert "Victor Viewer" not in members
    assert members["Alice Admin"] == "ADMIN"  # the others keep their computed roles
    kinds = {(w["kind"], w["subject"]) for w in data["warnings"]}
    assert ("role_not_migrated", "member payments-ci-bot") not in kinds
    gained = [w["message"] for w in data["warnings"] if w["kind"] == "permission_gained"]
    assert any("certificate:revoke" in message for message in gained)  # web-issuers could not revoke
    assert ("role_not_migrated", "member Victor Viewer") in kinds
    assert data["document"]["options"]["memberRoles"] == [
        {"member": "payments-ci-bot", "role": "operator"},
        {"member": "victor@payments.example.com", "role": "none"},
    ]

    for roles, code in (
        ([{"member": "nobody@example.com", "role": "auditor"}], "INVALID_INPUT"),
        ([{"member": "payments-ci-bot", "role": "owner"}], "INVALID_INPUT"),
    ):
        with pytest.raises(GraphQLError) as refused:
            await plan(gql, org_admin.token, imported.project_id, memberRoles=roles)
        assert refused.value.codes == [code]
