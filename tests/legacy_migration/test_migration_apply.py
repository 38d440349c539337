"""applyMigration carries the example's plan out: a dry run writes nothing; the run copies the enrollment with
the same credentials, recreates alerts, syncs and the approval policy through their services, adds members
with their roles, audits it, and leaves legacy certificates where they are; a second run changes nothing; a
plan made before the legacy project changed is refused with what changed; each application is all or
nothing; members can do exactly what their new role allows."""

from __future__ import annotations

import migration_support  # noqa: F401  # isort: skip - puts tests/acme, est, scep, worker on sys.path
import base64
import uuid
from typing import Any

import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from delivery_support import loopback_webhooks
from factories import ISSUE, make_csr_pem
from migration_support import (
    APPLY,
    apply,
    attachment_of,
    example_document,
    example_secrets,
    guide_entry,
    import_example,
    migrated,
    plan,
    token_for,
)

from core import runtime
from core import sync as sync_service
from core.authz import Actor
from core.legacy import migration as migration_service
from models import (
    Alert,
    AlertChannel,
    Application,
    ApplicationMembership,
    ApplicationProfile,
    ApprovalPolicy,
    ApprovalPolicyAttachment,
    AuditEvent,
    Certificate,
    LegacyMembership,
    LegacyMigration,
    Principal,
    ProductMembership,
    Sync,
)
from models.enums import AuditOutcome
from pki import sealing


async def counts() -> dict[str, int]:
    return {
        "applications": await Application.all().count(),
        "attachments": await ApplicationProfile.all().count(),
        "members": await ApplicationMembership.all().count(),
        "alerts": await Alert.all().count(),
        "channels": await AlertChannel.all().count(),
        "syncs": await Sync.all().count(),
        "policies": await ApprovalPolicy.all().count(),
        "coverage": await ApprovalPolicyAttachment.all().count(),
        "migrations": await LegacyMigration.all().count(),
        "product_members": await ProductMembership.all().count(),
        "audit_success": await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).count(),
        "certificates": await Certificate.all().count(),
    }


def _unseal(sealed: Any, context: str) -> bytes:
    return sealing.unseal(kek=runtime.kek(), sealed=bytes(sealed), context=context.encode())


async def test_dry_run_then_apply_then_nothing_more(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    data = await plan(gql, org_admin.token, imported.project_id)
    before = await counts()

    dry = await apply(gql, org_admin.token, data["document"], dry_run=True)
    assert dry["dryRun"] is True and dry["message"].startswith("dry run")
    (would,) = dry["applications"]
    assert would["status"] == "CREATED" and would["applicationId"] is None
    assert would["created"] == {
        "applications": 1,
        "profiles": 4,
        "members": 4,
        "alerts": 1,
        "syncs": 1,
        "approvalPolicies": 1,
    }
    assert await counts() == before, "a dry run wrote something"

    done = await apply(gql, org_admin.token, data["document"])
    assert done["changed"] is True and done["dryRun"] is False
    (result,) = done["applications"]
    assert result["status"] == "CREATED" and result["created"] == would["created"]
    application = await migrated(org_admin.organization_id)
    assert result["applicationId"] == str(application.id)

    # Step 3: the enrollment, copied with the same credentials
    secrets = example_secrets()
    legacy = {a.profile_id: a for a in await ApplicationProfile.filter(application_id=imported.project_id)}
    acme = await attachment_of(application, imported.profile_ids["web-acme"])
    old_acme = legacy[acme.profile_id]
    assert acme.acme_enabled and acme.acme_eab_required and not acme.api_enabled
    assert acme.acme_eab_kid == old_acme.acme_eab_kid == secrets["eab_kid"]
    hmac_key = _unseal(acme.acme_eab_hmac_encrypted, f"eab:{acme.id}")
    assert base64.urlsafe_b64encode(hmac_key).rstrip(b"=").decode() == secrets["eab_hmac_key"]
    assert bytes(acme.acme_eab_hmac_encrypted) != bytes(old_acme.acme_eab_hmac_encrypted)  # sealed anew
    est = await attachment_of(application, imported.profile_ids["web-est"])
    old_est = legacy[est.profile_id]
    assert est.est_enabled and est.est_username == secrets["est_username"]
    assert est.est_passphrase_hash == old_est.est_passphrase_hash
    scep = await attachment_of(application, imported.profile_ids["devices-scep"])
    old_scep = legacy[scep.profile_id]
    assert scep.scep_enabled and scep.scep_challenge_mode == "static"
    assert scep.scep_static_challenge_hash == old_scep.scep_static_challenge_hash
    assert scep.scep_ra_certificate_pem == old_scep.scep_ra_certificate_pem
    assert _unseal(scep.scep_ra_key_encrypted, f"scep-ra:{scep.id}") == _unseal(
        old_scep.scep_ra_key_encrypted, f"scep-ra:{old_scep.id}"
    )
    api = await attachment_of(application, imported.profile_ids["web-api"])
    assert (api.api_enabled, api.api_auto_renew, api.api_renew_before_days) == (True, True, 30)

    # Steps 4-6: alerts (with the same channel secrets), syncs (same credentials), the approval policy
    alert = await Alert.get(application_id=application.id)
    assert alert.name == "payments-expiry-and-issuance" and alert.is_active
    assert set(alert.profile_ids) == {
        str(imported.profile_ids["web-api"]),
        str(imported.profile_ids["web-acme"]),
    }
    webhook = await AlertChannel.get(alert_id=alert.id, type="webhook")
    assert _unseal(webhook.encrypted_secret, f"channel:{webhook.id}") == b"legacy-webhook-signing-secret-01"
    sync = await Sync.get(application_id=application.id)
    assert sync_service.unseal_credentials(sync) == {"signingSecret": "legacy-sync-signing-secret-0001"}
    assert sync.profile_ids == [str(imported.profile_ids["web-api"])]
    policy = await ApprovalPolicy.get(application_id=application.id)
    assert policy.is_active is False and policy.max_request_ttl_seconds == 24 * 3600
    alice = await Principal.get(email="alice@payments.example.com")
    bob = await Principal.get(email="bob@payments.example.com")
    assert policy.steps == [{"approvers": [str(alice.id), str(bob.id)], "required": 1}]

    # Step 7: members and roles
    roles = {
        m.principal.name: m.role.value
        for m in await ApplicationMembership.filter(application_id=application.id).prefetch_related(
            "principal"
        )
    }
    assert roles == {
        "Alice Admin": "admin",
        "Bob Member": "operator",
        "Victor Viewer": "auditor",
        "Carol Syncs": "auditor",
    }

    # Legacy certificates stay in the legacy project; the legacy copies are untouched (not asked to disable).
    assert await Certificate.filter(legacy_project_id=imported.project_id).count() == 5
    assert await Certificate.filter(application_id=application.id).count() == 0
    assert (await Alert.get(application_id=imported.project_id)).is_active is True
    assert (await Sync.get(application_id=imported.project_id)).auto_sync is True
    assert done["disabledLegacyAlerts"] == [] and done["disabledLegacySyncs"] == []

    # Audited: one summary event for the application, and each creation by its service
    (summary,) = await AuditEvent.filter(action="legacy_project.migrate", outcome=AuditOutcome.SUCCESS)
    assert summary.application_id == application.id and summary.actor_id == org_admin.principal_id
    assert summary.details["created"] == result["created"]
    actions = [e.action for e in await AuditEvent.filter(application_id=application.id)]
    for action, times in (
        ("application.create", 1),
        ("application_profile.attach", 4),
        ("application_profile.acme_enable", 1),
        ("application_profile.est_enable", 1),
        ("application_profile.scep_enable", 1),
        ("application_member.add", 4),
        ("alert.create", 1),
        ("sync.create", 1),
        ("approval_policy.create", 1),
    ):
        assert actions.count(action) == times, (action, actions)

    # The guide now names the application
    acme_guide = guide_entry(done["clientGuide"], "web-acme", "acme")
    assert acme_guide["pending"] is False and acme_guide["applicationId"] == str(application.id)
    assert acme_guide["new"] == (
        f"{runtime.settings().public_url}/acme/applications/{application.id}/profiles/{acme.profile_id}/directory"
    )

    # A second run of the same plan changes nothing, and says so; a new plan has nothing left to do.
    after = await counts()
    again = await apply(gql, org_admin.token, data["document"])
    assert again["changed"] is False and again["message"].startswith("nothing to do")
    assert [a["status"] for a in again["applications"]] == ["UNCHANGED"]
    assert await counts() == after
    fresh = await plan(gql, org_admin.token, imported.project_id)
    (app,) = fresh["applications"]
    assert app["status"] == "EXISTS" and app["pending"] == 0
    assert {p["status"] for p in app["profiles"] + app["members"] + app["alerts"]} == {"DONE"}


async def test_a_stale_plan_is_refused_with_what_changed(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    data = await plan(gql, org_admin.token, imported.project_id)
    legacy_alert = await Alert.get(application_id=imported.project_id)
    renamed = await gql(
        'mutation($id: ID!) { updateAlert(id: $id, input: {name: "payments-expiry"}) { name } }',
        {"id": str(legacy_alert.id)},
        token=org_admin.token,
    )
    assert renamed["updateAlert"]["name"] == "payments-expiry"  # legacy alerts can be modified
    before = await counts()
    with pytest.raises(GraphQLError) as refused:
        await apply(gql, org_admin.token, data["document"])
    assert refused.value.codes == ["STALE_PLAN"]
    changes = refused.value.errors[0]["extensions"]["changes"]
    assert changes == ["alert 'payments-expiry-and-issuance' renamed to 'payments-expiry'"]
    after = await counts()
    assert after.pop("audit_success") == before.pop("audit_success")
    assert after == before
    # The refusal is in the audit log; a new plan goes through.
    assert (
        await AuditEvent.filter(action="mutation.applyMigration", outcome=AuditOutcome.FAILURE).count() == 1
    )
    fresh = await plan(gql, org_admin.token, imported.project_id)
    assert [a["name"] for a in fresh["applications"][0]["alerts"]] == ["payments-expiry"]
    done = await apply(gql, org_admin.token, fresh["document"])
    assert done["applications"][0]["status"] == "CREATED"

    # Other changes are named too: a member removed, a sync's credentials, a profile's enrollment.
    second = await plan(gql, org_admin.token, imported.project_id)
    victor = await Principal.get(email="victor@payments.example.com")
    await LegacyMembership.filter(project_id=imported.project_id, principal_id=victor.id).delete()
    legacy_sync = await Sync.get(application_id=imported.project_id)
    await sync_service.update_sync(
        actor=Actor.system(org_admin.organization_id, "tests"),
        sync_id=legacy_sync.id,
        credentials={"signingSecret": "another-signing-secret-0002"},
    )
    with pytest.raises(GraphQLError) as refused_again:
        await apply(gql, org_admin.token, second["document"])
    assert refused_again.value.errors[0]["extensions"]["changes"] == [
        "member 'Victor Viewer' removed",
        "sync 'edge-push': its credentials changed",
    ]


async def test_bad_plan_documents(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    data = await plan(gql, org_admin.token, imported.project_id)
    document = data["document"]
    for bad in (
        "not a plan",
        {**document, "format": "something else"},
        {**document, "projectId": "nope"},
        {**document, "state": []},
        {**document, "options": {"applications": [{"name": "x", "profileSlugs": ["missing"]}]}},
    ):
        body = await gql.raw(APPLY, {"plan": bad}, token=org_admin.token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_INPUT"], body
    body = await gql.raw(APPLY, {"plan": {**document, "projectId": str(uuid.uuid4())}}, token=org_admin.token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert await Application.filter(legacy=False).count() == 0


async def test_each_application_is_all_or_nothing(gql: GraphQL, org_admin: OrgAdmin) -> None:
    """The legacy alert's webhook is on loopback (allowed when it was imported, refused when it is recreated):
    payments-web fails after its application, profiles and members were written, and none of them stays;
    payments-devices is created all the same."""
    document = example_document()
    document["alerts"][0]["channels"][0]["config"]["url"] = "http://127.0.0.1:9/hook"
    with loopback_webhooks():
        imported = await import_example(org_admin.organization_id, document)
    mapping = [
        {"name": "payments-web", "profileSlugs": ["web-api", "web-acme"]},
        {"name": "payments-devices", "profileSlugs": ["web-est", "devices-scep"]},
    ]
    data = await plan(gql, org_admin.token, imported.project_id, applications=mapping)
    result = await apply(gql, org_admin.token, data["document"])
    web, devices = result["applications"]
    assert (web["status"], web["errorCode"]) == ("FAILED", "INVALID_INPUT")
    assert "KEYWARD_ALLOW_LOOPBACK_WEBHOOKS" in web["message"]
    assert devices["status"] == "CREATED"
    assert not await Application.exists(name="payments-web")
    web_profiles = [imported.profile_ids["web-api"], imported.profile_ids["web-acme"]]
    assert await ApplicationProfile.filter(profile_id__in=web_profiles).count() == 2  # the legacy ones only
    devices_app = await migrated(org_admin.organization_id, "payments-devices")
    assert {m.application_id for m in await LegacyMigration.all()} == {devices_app.id}
    failure = await AuditEvent.get(action="legacy_project.migrate", outcome=AuditOutcome.FAILURE)
    assert failure.details["application"] == "payments-web" and failure.details["code"] == "INVALID_INPUT"
    assert result["message"].endswith("failed (rolled back): payments-web")

    # Once the receiver is allowed the same plan completes payments-web and leaves payments-devices as it is.
    with loopback_webhooks():
        again = await apply(gql, org_admin.token, data["document"])
    assert [a["status"] for a in again["applications"]] == ["CREATED", "UNCHANGED"]
    assert await Application.exists(name="payments-web")


ACME_SECRETS = (
    "query($id: ID!) { application(id: $id) { profiles { profile { name } acme { eabKid eabHmacKey } } } }"
)
INVENTORY = (
    "query($id: ID!) { application(id: $id) { name certificates(first: 10) { edges { node { id } } } } }"
)
CREATE_ALERT = "mutation($input: CreateAlertInput!) { createAlert(input: $input) { id } }"


async def test_members_can_do_exactly_what_their_new_role_allows(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    data = await plan(gql, org_admin.token, imported.project_id)
    await apply(gql, org_admin.token, data["document"])
    application = await migrated(org_admin.organization_id)
    app_id = {"id": str(application.id)}
    alice = await token_for(email="alice@payments.example.com")
    bob = await token_for(email="bob@payments.example.com")
    victor = await token_for(email="victor@payments.example.com")
    bot = await token_for(name="payments-ci-bot")

    # Bob (legacy member -> Operator) issues, and cannot manage alerts.
    csr, _ = make_csr_pem(common_name="api.payments.example.com")
    issue = {
        "input": {
            "applicationId": str(application.id),
            "profileId": str(imported.profile_ids["web-api"]),
            "csr": csr,
        }
    }
    issued = await gql(ISSUE, issue, token=bob)
    assert issued["issueCertificate"]["certificate"]["commonName"] == "api.payments.example.com"
    alert_input = {
        "input": {
            "applicationId": str(application.id),
            "name": "bob's alert",
            "eventTypes": ["ISSUANCE"],
            "channels": [{"type": "EMAIL", "config": {"recipients": ["bob@payments.example.com"]}}],
        }
    }
    with pytest.raises(GraphQLError) as refused:
        await gql(CREATE_ALERT, alert_input, token=bob)
    assert refused.value.codes == ["FORBIDDEN"]
    with pytest.raises(GraphQLError) as secrets_refused:
        await gql(ACME_SECRETS, app_id, token=bob)
    assert "FORBIDDEN" in secrets_refused.value.codes

    # Victor (viewer -> Auditor) reads the inventory, issues nothing, never reads a secret.
    listed = await gql(INVENTORY, app_id, token=victor)
    assert len(listed["application"]["certificates"]["edges"]) == 1
    with pytest.raises(GraphQLError) as auditor_issue:
        await gql(ISSUE, issue, token=victor)
    assert auditor_issue.value.codes == ["FORBIDDEN"]
    with pytest.raises(GraphQLError) as auditor_secrets:
        await gql(ACME_SECRETS, app_id, token=victor)
    assert "FORBIDDEN" in auditor_secrets.value.codes

    # Alice (admin -> Admin) reads the ACME credentials: the legacy ones.
    profiles = (await gql(ACME_SECRETS, app_id, token=alice))["application"]["profiles"]
    (acme,) = [p["acme"] for p in profiles if p["profile"]["name"] == "payments-web-acme"]
    assert (acme["eabKid"], acme["eabHmacKey"]) == (
        example_secrets()["eab_kid"],
        example_secrets()["eab_hmac_key"],
    )
    assert (await gql(CREATE_ALERT, alert_input, token=alice))["createAlert"]["id"]

    # The CI bot's custom role covered no application role: the application does not exist for it.
    with pytest.raises(GraphQLError) as hidden:
        await gql(INVENTORY, app_id, token=bot)
    assert hidden.value.codes == ["NOT_FOUND"]


async def test_disabling_the_legacy_copies(gql: GraphQL, org_admin: OrgAdmin) -> None:
    imported = await import_example(org_admin.organization_id)
    data = await plan(gql, org_admin.token, imported.project_id)
    result = await apply(gql, org_admin.token, data["document"], disable=True)
    assert result["disabledLegacyAlerts"] == ["payments-expiry-and-issuance"]
    assert result["disabledLegacySyncs"] == ["edge-push"]
    legacy_alert = await Alert.get(application_id=imported.project_id)
    legacy_sync = await Sync.get(application_id=imported.project_id)
    assert legacy_alert.is_active is False and legacy_sync.auto_sync is False
    application = await migrated(org_admin.organization_id)
    assert (await Alert.get(application_id=application.id)).is_active is True
    assert (await Sync.get(application_id=application.id)).auto_sync is True
    (summary,) = await AuditEvent.filter(action="legacy_project.migrate")
    assert summary.details["disabledLegacyAlerts"] == ["payments-expiry-and-issuance"]
    # The plan stays good for a second run: switching the copies off was the migration's own doing.
    again = await apply(gql, org_admin.token, data["document"], disable=True)
    assert again["changed"] is False and again["disabledLegacyAlerts"] == []


async def test_the_service_plans_for_the_cli_actor(org_admin: OrgAdmin) -> None:
    """The system actor (the CLI's) finds the project by slug or id and plans like a Product Admin."""
    imported = await import_example(org_admin.organization_id)
    actor = Actor.system(org_admin.organization_id, "tests")
    by_slug = await migration_service.find_project(actor=actor, reference="payments")
    by_id = await migration_service.find_project(actor=actor, reference=str(imported.project_id))
    assert by_slug.id == by_id.id == imported.project_id
    options = migration_service.parse_mapping(["web=web-api,web-acme", "devices=web-est,devices-scep"])
    built = await migration_service.migration_plan(
        actor=actor, legacy_project_id=imported.project_id, options=options
    )
    assert [a.name for a in built.applications] == ["web", "devices"]


async def test_members_without_a_product_role_get_product_member_first(
    gql: GraphQL, org_admin: OrgAdmin
) -> None:
    """Step 7 of the seed: grant the Product Member role, then the application role."""
    imported = await import_example(org_admin.organization_id)
    victor = await Principal.get(email="victor@payments.example.com")
    await ProductMembership.filter(principal_id=victor.id).delete()
    data = await plan(gql, org_admin.token, imported.project_id)
    grants = {m["name"]: m["grantProductMember"] for m in data["applications"][0]["members"]}
    assert grants == {"Alice Admin": False, "Bob Member": False, "Victor Viewer": True, "Carol Syncs": False}
    await apply(gql, org_admin.token, data["document"])
    assert (await ProductMembership.get(principal_id=victor.id)).role.value == "member"
    application = await migrated(org_admin.organization_id)
    membership = await ApplicationMembership.get(application_id=application.id, principal_id=victor.id)
    assert membership.role.value == "auditor"
    assert await AuditEvent.filter(action="product_membership.set_role", resource_id=str(victor.id)).exists()


async def test_a_secret_that_cannot_be_decrypted_fails_its_application_clearly(
    gql: GraphQL, org_admin: OrgAdmin
) -> None:
    imported = await import_example(org_admin.organization_id)
    legacy_alert = await Alert.get(application_id=imported.project_id)
    await AlertChannel.filter(alert_id=legacy_alert.id, type="webhook").update(encrypted_secret=b"\x00" * 48)
    data = await plan(gql, org_admin.token, imported.project_id)
    result = await apply(gql, org_admin.token, data["document"])
    (app,) = result["applications"]
    assert (app["status"], app["errorCode"]) == ("FAILED", "INVALID_STATE")
    assert "legacy alert 'payments-expiry-and-issuance'" in app["message"]
    assert not await Application.filter(legacy=False).exists()
