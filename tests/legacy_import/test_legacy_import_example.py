"""Importing examples/legacy-export.json: every kind of item becomes the row the services would have made,
secrets sealed or hashed, revocations in the CRL and OCSP at once; a re-run changes nothing; another file
for the same project is refused with what changed."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
from argon2 import PasswordHasher
from conftest import OrgAdmin
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from legacy_import_support import (
    EXAMPLE_CREATED,
    certificate_index,
    example,
    profile_index,
    refused,
    row_counts,
    run_import,
)

from core import application as application_service
from core import runtime
from core import sync as sync_service
from core.authz import Actor
from core.certificate import read_private_key
from core.legacy.import_document import sha256_of
from core.legacy.importer import import_legacy_project
from models import (
    Alert,
    AlertChannel,
    Application,
    ApplicationProfile,
    ApprovalPolicy,
    ApprovalPolicyAttachment,
    AuditEvent,
    Certificate,
    CertificateAuthority,
    CertificatePolicy,
    CertificateProfile,
    LegacyMembership,
    LegacyProject,
    LegacyResource,
    LegacyRole,
    Principal,
    ProductMembership,
    Sync,
)
from models.enums import CaKind, CaStatus, CertificateSource, CertificateStatus, EnrollmentMethod, ProductRole
from pki import sealing
from pki.certificate import load_certificate, verify_issued_by

_hasher = PasswordHasher()


async def _import(org_admin: OrgAdmin) -> tuple[dict[str, Any], uuid.UUID]:
    document = example()
    report = await run_import(document, org_admin.organization_id)
    assert report.created == EXAMPLE_CREATED and report.existing == {}
    assert report.project_slug == "payments"
    return document, report.project_id


async def test_container_project_roles_and_members(org_admin: OrgAdmin) -> None:
    document, project_id = await _import(org_admin)
    container = await Application.get(id=project_id)
    assert container.legacy and container.name == "legacy:payments"
    project = await LegacyProject.get(id=project_id)
    assert project.application_id == project_id and project.slug == "payments" and project.name == "Payments"
    assert project.format_version == "1"
    assert (
        project.source_sha256
        == hashlib.sha256(
            json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
    )

    roles = {r.slug: r for r in await LegacyRole.filter(project_id=project_id)}
    assert roles["web-issuers"].conditions == {"profileSlugs": ["web-api", "web-acme"]}
    assert roles["web-issuers"].permissions == sorted(
        ["project:read", "certificates:read", "certificates:issue"]
    )
    assert set(roles["sync-operators"].permissions) == set(document["roles"][1]["permissions"])

    memberships = await LegacyMembership.filter(project_id=project_id).prefetch_related(
        "principal", "custom_role"
    )
    by_name = {m.principal.email or m.principal.name: m for m in memberships}
    assert {k: m.role for k, m in by_name.items()} == {
        "alice@payments.example.com": "admin",
        "bob@payments.example.com": "member",
        "victor@payments.example.com": "viewer",
        "payments-ci-bot": "custom",
        "carol@payments.example.com": "custom",
    }
    bot = by_name["payments-ci-bot"]
    assert bot.principal.kind == "machine" and bot.principal.email is None
    assert bot.custom_role is not None and bot.custom_role.slug == "web-issuers"
    assert by_name["carol@payments.example.com"].custom_role.slug == "sync-operators"  # type: ignore[union-attr]
    for membership in memberships:
        assert membership.principal.organization_id == org_admin.organization_id
        product = await ProductMembership.get(principal_id=membership.principal_id)
        assert product.role == "member"  # a product member: the legacy role decides inside the project


async def test_ca_policies_profiles_and_enrollment_settings(org_admin: OrgAdmin) -> None:
    document, project_id = await _import(org_admin)
    org = org_admin.organization_id
    ca = await CertificateAuthority.get(organization_id=org, name="payments-payments-root")
    assert ca.status == CaStatus.ACTIVE and ca.kind == CaKind.ROOT and ca.key_algorithm == "EC_P256"
    assert ca.certificate_pem == document["certificateAuthorities"][0]["certificatePem"]
    sealed_key = sealing.unseal(
        kek=runtime.kek(), sealed=bytes(ca.encrypted_private_key), context=f"ca:{ca.id}".encode()
    )
    assert (
        serialization.load_pem_private_key(sealed_key, None).private_numbers()
        == serialization.load_pem_private_key(  # type: ignore[union-attr]
            document["certificateAuthorities"][0]["privateKeyPem"].encode(), None
        ).private_numbers()
    )  # type: ignore[union-attr]
    assert b"PRIVATE KEY" not in bytes(ca.encrypted_private_key)

    policies = {p.name: p for p in await CertificatePolicy.filter(organization_id=org)}
    assert set(policies) == {"payments-web", "payments-devices"}
    assert policies["payments-web"].rules["maxValidity"] == "397d"

    profiles = {p.name: p for p in await CertificateProfile.filter(organization_id=org)}
    assert set(profiles) == {
        "payments-web-api",
        "payments-web-acme",
        "payments-web-est",
        "payments-devices-scep",
    }
    for profile in profiles.values():
        assert profile.legacy_project_id == project_id and profile.ca_id == ca.id
    assert profiles["payments-devices-scep"].policy_id == policies["payments-devices"].id
    assert profiles["payments-devices-scep"].default_key_algorithm == "RSA_2048"
    assert profiles["payments-web-api"].default_subject == [["O", "Payments"]]

    attachments = {
        a.profile.name: a
        for a in await ApplicationProfile.filter(application_id=project_id).prefetch_related("profile")
    }
    assert set(attachments) == set(profiles)
    enabled = {
        name: [m for m in ("api", "acme", "est", "scep") if getattr(a, f"{m}_enabled")]
        for name, a in attachments.items()
    }
    assert enabled == {
        "payments-web-api": ["api"],
        "payments-web-acme": ["acme"],
        "payments-web-est": ["est"],
        "payments-devices-scep": ["scep"],
    }
    api = attachments["payments-web-api"]
    assert api.api_auto_renew is True and api.api_renew_before_days == 30

    acme = attachments["payments-web-acme"]
    settings = document["profiles"][profile_index(document, "web-acme")]["enrollment"]["acme"]
    assert acme.acme_eab_kid == settings["eabKid"] and acme.acme_eab_required is True
    assert settings["eabHmacKey"].encode() not in bytes(acme.acme_eab_hmac_encrypted or b"")
    admin = Actor.system(org)
    assert application_service.acme_eab_hmac_key(
        actor=admin, attachment=acme, organization_id=org
    ) == settings["eabHmacKey"].rstrip("=")

    est = attachments["payments-web-est"]
    est_settings = document["profiles"][profile_index(document, "web-est")]["enrollment"]["est"]
    assert est.est_username == est_settings["username"]
    assert est.est_passphrase_hash and est.est_passphrase_hash.startswith("$argon2")
    assert _hasher.verify(est.est_passphrase_hash, est_settings["passphrase"])

    scep = attachments["payments-devices-scep"]
    scep_settings = document["profiles"][profile_index(document, "devices-scep")]["enrollment"]["scep"]
    assert scep.scep_challenge_mode == "static" and scep.scep_include_ca and scep.scep_allow_renewal
    assert scep.scep_static_challenge_hash and _hasher.verify(
        scep.scep_static_challenge_hash, scep_settings["challenge"]
    )
    assert scep.scep_ra_certificate_pem and scep.scep_ra_key_encrypted
    ca_cert = load_certificate(ca.certificate_pem or "")
    assert verify_issued_by(load_certificate(scep.scep_ra_certificate_pem), ca_cert)


async def test_certificates_keys_and_revocation(org_admin: OrgAdmin, client: httpx.AsyncClient) -> None:
    document, project_id = await _import(org_admin)
    rows = {
        r.id: r for r in await Certificate.filter(legacy_project_id=project_id).prefetch_related("profile")
    }
    assert len(rows) == len(document["certificates"]) == 5
    ca = await CertificateAuthority.get(
        organization_id=org_admin.organization_id, name="payments-payments-root"
    )
    by_slug: dict[str, Certificate] = {}
    for item in document["certificates"]:
        cert = load_certificate(item["certificatePem"])
        row = next(r for r in rows.values() if r.certificate_pem == item["certificatePem"])
        by_slug[item["slug"]] = row
        assert row.application_id == project_id and row.legacy_project_id == project_id
        assert row.source == CertificateSource.IMPORTED and row.ca_id == ca.id
        assert row.profile.name == f"payments-{item['profile']}"
        assert row.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
        assert row.metadata == item["metadata"]
    methods = {slug: EnrollmentMethod(row.enrollment_method) for slug, row in by_slug.items()}
    assert methods["gateway"] == EnrollmentMethod.API and methods["device-42"] == EnrollmentMethod.SCEP

    revoked = by_slug["device-42"]
    assert revoked.status == CertificateStatus.REVOKED and revoked.revocation_reason == "keyCompromise"
    assert revoked.revoked_at is not None and revoked.revoked_at.isoformat().startswith("2025-06-01")
    assert revoked.renewal_due_at is None
    assert all(
        by_slug[s].status == CertificateStatus.ACTIVE for s in ("gateway", "checkout", "www", "terminal-gw")
    )

    gateway = by_slug["gateway"]
    assert gateway.auto_renew and gateway.renewal_due_at is not None and gateway.encrypted_private_key
    key_pem = await read_private_key(actor=Actor.system(org_admin.organization_id), certificate_id=gateway.id)
    expected = serialization.load_pem_private_key(
        document["certificates"][certificate_index(document, "gateway")]["privateKeyPem"].encode(), None
    )
    loaded = serialization.load_pem_private_key(key_pem.encode(), None)
    assert loaded.private_numbers() == expected.private_numbers()  # type: ignore[union-attr]
    assert all(
        by_slug[s].encrypted_private_key is None for s in ("checkout", "www", "terminal-gw", "device-42")
    )

    # The CRL and OCSP answer for the imported revocation at once.
    crl_response = await client.get(f"/pki/cas/{ca.id}/crl")
    assert crl_response.status_code == 200
    crl = x509.load_der_x509_crl(crl_response.content)
    revoked_serials = {entry.serial_number for entry in crl}
    device = load_certificate(revoked.certificate_pem)
    assert revoked_serials == {device.serial_number}
    ca_cert = load_certificate(ca.certificate_pem or "")
    for cert, expected_status in (
        (device, ocsp.OCSPCertStatus.REVOKED),
        (load_certificate(gateway.certificate_pem), ocsp.OCSPCertStatus.GOOD),
    ):
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, ca_cert, hashes.SHA1()).build()
        answer = await client.post(
            f"/pki/ocsp/{ca.id}",
            content=request.public_bytes(serialization.Encoding.DER),
            headers={"Content-Type": "application/ocsp-request"},
        )
        assert ocsp.load_der_ocsp_response(answer.content).certificate_status == expected_status


async def test_alerts_syncs_approval_policies_and_resources(org_admin: OrgAdmin) -> None:
    document, project_id = await _import(org_admin)
    profiles = {
        p.name.removeprefix("payments-"): p
        for p in await CertificateProfile.filter(legacy_project_id=project_id)
    }

    alert = await Alert.get(application_id=project_id)
    assert alert.name == "payments-expiry-and-issuance"
    assert alert.event_types == ["expiration", "issuance"] and alert.thresholds_days == [30, 7]
    assert alert.profile_ids == [str(profiles["web-api"].id), str(profiles["web-acme"].id)]
    channels = await AlertChannel.filter(alert_id=alert.id).order_by("position")
    assert [c.type for c in channels] == ["webhook", "email"]
    webhook_secret = document["alerts"][0]["channels"][0]["secret"]
    assert channels[0].encrypted_secret and webhook_secret.encode() not in bytes(channels[0].encrypted_secret)
    assert channels[1].config == {"recipients": ["pki-team@payments.example.com"]}

    sync = await Sync.get(application_id=project_id)
    assert sync.name == "edge-push" and sync.destination == "http"
    assert sync.profile_ids == [str(profiles["web-api"].id)]
    assert sync.name_template == "{{commonName}}-{{certificateId}}"
    assert sync_service.unseal_credentials(sync) == document["syncs"][0]["credentials"]
    assert document["syncs"][0]["credentials"]["signingSecret"].encode() not in bytes(
        sync.encrypted_credentials or b""
    )

    policy = await ApprovalPolicy.get(application_id=project_id)
    assert policy.name == "payments-api-approval" and policy.is_active is False
    assert policy.max_request_ttl_seconds == 24 * 3600
    alice = await Principal.get(email="alice@payments.example.com")
    bob = await Principal.get(email="bob@payments.example.com")
    assert policy.steps == [{"approvers": [str(alice.id), str(bob.id)], "required": 1}]
    covered = await ApprovalPolicyAttachment.filter(policy_id=policy.id).prefetch_related("attachment")
    assert [c.attachment.profile_id for c in covered] == [profiles["web-api"].id]

    resources = await LegacyResource.filter(project_id=project_id)
    assert len(resources) == sum(
        len(document[s])
        for s in (
            "roles",
            "members",
            "certificateAuthorities",
            "policies",
            "profiles",
            "certificates",
            "alerts",
            "syncs",
            "approvalPolicies",
        )
    )
    index = {(r.kind, r.slug): r for r in resources}
    assert index[("profile", "web-acme")].target_id == profiles["web-acme"].id
    assert index[("alert", alert.name)].target_id == alert.id
    assert index[("sync", "edge-push")].target_id == sync.id
    assert index[("approval_policy", policy.name)].target_id == policy.id
    assert index[("member", "payments-ci-bot")].content_sha256 == sha256_of(document["members"][3])
    certificate = await Certificate.get(id=index[("certificate", "www")].target_id)
    assert (
        certificate.certificate_pem
        == document["certificates"][certificate_index(document, "www")]["certificatePem"]
    )


async def test_secrets_never_reach_the_audit_log(org_admin: OrgAdmin) -> None:
    document, project_id = await _import(org_admin)
    secrets = [
        document["profiles"][profile_index(document, "web-acme")]["enrollment"]["acme"]["eabHmacKey"],
        document["profiles"][profile_index(document, "web-est")]["enrollment"]["est"]["passphrase"],
        document["profiles"][profile_index(document, "devices-scep")]["enrollment"]["scep"]["challenge"],
        document["alerts"][0]["channels"][0]["secret"],
        document["syncs"][0]["credentials"]["signingSecret"],
        "PRIVATE KEY",
    ]
    events = await AuditEvent.all()
    text = json.dumps([e.details for e in events])
    assert not [s for s in secrets if s in text]
    imports = [e for e in events if e.action == "legacy_project.import"]
    assert len(imports) == 1 and imports[0].resource_id == str(project_id)
    assert imports[0].details["created"] == EXAMPLE_CREATED


async def test_a_rerun_changes_nothing_and_reports_everything_existing(org_admin: OrgAdmin) -> None:
    document, project_id = await _import(org_admin)
    before = await row_counts()
    # The same export with its keys in another order and other whitespace is the same document.
    reordered = json.loads(json.dumps(document, indent=4, sort_keys=True))
    again = await run_import(reordered, org_admin.organization_id)
    assert again.project_id == project_id and again.created == {}
    assert again.existing == {k: v for k, v in EXAMPLE_CREATED.items() if k != "principal"}
    # Informational fields alone (exportedAt) change no item: still nothing to do.
    document["exportedAt"] = "2026-01-01T00:00:00Z"
    assert (await run_import(document, org_admin.organization_id)).created == {}
    assert await row_counts() == before


async def test_another_export_of_the_same_project_is_refused_with_what_changed(org_admin: OrgAdmin) -> None:
    await _import(org_admin)
    changed = example()
    acme = profile_index(changed, "web-acme")
    changed["profiles"][acme]["enrollment"]["acme"]["eabKid"] = "another-kid"
    changed["alerts"] = []
    extra = dict(changed["certificates"][certificate_index(changed, "checkout")], slug="checkout-copy")
    changed["certificates"].append(extra)
    changed["project"]["description"] = "renamed"
    problems = await refused(changed, org_admin.organization_id)
    by_path = {p["path"]: p["message"] for p in problems}
    assert set(by_path) == {"$.project", f"$.profiles[{acme}]", "$.certificates[5]", "$.alerts"}
    assert "changed" in by_path[f"$.profiles[{acme}]"] and "added" in by_path["$.certificates[5]"]
    assert "payments-expiry-and-issuance" in by_path["$.alerts"] and "missing" in by_path["$.alerts"]

    # A file that is also malformed gets its schema problems only (no comparison with a broken file).
    broken = example()
    broken["profiles"][0]["slug"] = "Not A Slug"
    assert [p["path"] for p in await refused(broken, org_admin.organization_id)] == ["$.profiles[0].slug"]


async def test_the_import_needs_a_product_admin(org_admin: OrgAdmin) -> None:
    from conftest import create_principal_with_token

    from core.errors import Forbidden, Unauthenticated

    member_id, _ = await create_principal_with_token(org_admin.organization_id, "member@acme.test", "member")
    member = Actor(
        member_id, org_admin.organization_id, "user", "member@acme.test", product_role=ProductRole.MEMBER
    )
    before = await row_counts()
    for actor, error in ((member, Forbidden), (Actor.anonymous(), Unauthenticated)):
        try:
            await import_legacy_project(example(), actor=actor)
        except error:
            pass
        else:
            raise AssertionError(f"{actor.name} imported a legacy project")
    assert await row_counts() == before
