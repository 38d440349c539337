"""All or nothing: an item that fails while the import is writing rolls every earlier write back; and a CA
the file only refers to (existingCaName) is used, not created."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import OrgAdmin
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from legacy_import_support import example, paths, refused, row_counts, run_import

from core import approval as approval_service
from core import ca as ca_service
from core import sync as sync_service
from core.authz import Actor
from core.errors import InvalidInput
from models import (
    Application,
    ApplicationProfile,
    Certificate,
    CertificateAuthority,
    CertificateProfile,
    LegacyMembership,
    LegacyMigration,
    LegacyProject,
    LegacyResource,
    LegacyRole,
    Principal,
)
from models.enums import CertificateStatus


@pytest.mark.parametrize(
    ("module", "service", "field", "path"),
    [
        (sync_service, "create_sync", "connection.url", "$.syncs[0].connection.url"),
        (
            approval_service,
            "create_policy",
            "steps[0].approverIds",
            "$.approvalPolicies[0].steps[0].approvers",
        ),
    ],
)
async def test_a_late_failure_leaves_no_row_at_all(
    org_admin: OrgAdmin, monkeypatch: pytest.MonkeyPatch, module: Any, service: str, field: str, path: str
) -> None:
    """Everything before the syncs (or the approval policies, the last items) was written when the service
    refuses; afterwards no legacy table, application, profile, certificate or principal has a new row."""
    calls: list[str] = []

    async def refuse(**kwargs: Any) -> Any:
        calls.append(kwargs["name"])
        # The rows written so far are visible inside the import's transaction.
        assert await Certificate.filter(legacy_project_id=kwargs["application_id"]).count() == 5
        raise InvalidInput("the destination refused the test", field=field)

    monkeypatch.setattr(module, service, refuse)
    problems = await refused(example(), org_admin.organization_id)
    assert calls and problems == [{"path": path, "message": "the destination refused the test"}]
    for model in (
        LegacyProject,
        LegacyRole,
        LegacyMembership,
        LegacyResource,
        LegacyMigration,
        CertificateProfile,
        ApplicationProfile,
        Certificate,
        CertificateAuthority,
    ):
        assert await model.all().count() == 0, model.__name__
    assert await Application.all().count() == 0
    assert await Principal.all().count() == 1  # the organization's admin only

    monkeypatch.undo()
    report = await run_import(example(), org_admin.organization_id)
    assert report.created["sync"] == 1 and report.created["approval_policy"] == 1


def leaf_signed_by(issuer_cert: x509.Certificate, issuer_key: Any, common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_a_reference_to_an_existing_ca_is_used_and_its_crl_shows_the_revocations(
    org_admin: OrgAdmin,
) -> None:
    actor = Actor.system(org_admin.organization_id)
    corp = await ca_service.create_root_ca(
        actor=actor,
        name="Corp Root CA",
        subject="CN=Corp Root CA,O=Corp",
        key_algorithm="EC_P256",
        validity="20y",
        path_length=None,
    )
    material = await ca_service.signing_material(corp)
    document = example()
    document["certificateAuthorities"].append({"slug": "corp", "existingCaName": "Corp Root CA"})
    profile = dict(document["profiles"][0], slug="corp-api", ca="corp")
    document["profiles"].append(profile)
    document["certificates"].append(
        {
            "slug": "corp-old",
            "profile": "corp-api",
            "certificatePem": leaf_signed_by(
                material.certificate, material.private_key, "old.corp.example.com"
            ),
            "status": "revoked",
            "revokedAt": "2025-02-01T12:00:00Z",
            "revocationReason": "superseded",
        }
    )
    before = await CertificateAuthority.all().count()
    report = await run_import(document, org_admin.organization_id)
    assert report.created["ca"] == 1 and report.created["ca_reference"] == 1
    assert await CertificateAuthority.all().count() == before + 1
    reference = await LegacyResource.get(project_id=report.project_id, kind="ca", slug="corp")
    assert reference.target_id == corp.id
    row = await Certificate.get(legacy_project_id=report.project_id, ca_id=corp.id)
    assert row.status == CertificateStatus.REVOKED and row.revocation_reason == "superseded"
    refreshed = await CertificateAuthority.get(id=corp.id)
    assert refreshed.crl_der is not None
    crl = x509.load_der_x509_crl(bytes(refreshed.crl_der))
    assert {entry.serial_number for entry in crl} == {int(row.serial_hex, 16)}
    # The same file again: nothing changes.
    counts = await row_counts()
    assert (await run_import(document, org_admin.organization_id)).created == {}
    assert await row_counts() == counts


async def test_a_certificate_of_a_referenced_ca_must_be_issued_by_it(org_admin: OrgAdmin) -> None:
    actor = Actor.system(org_admin.organization_id)
    await ca_service.create_root_ca(
        actor=actor,
        name="Corp Root CA",
        subject="CN=Corp Root CA",
        key_algorithm="EC_P256",
        validity="20y",
        path_length=None,
    )
    document = example()
    document["certificateAuthorities"].append({"slug": "corp", "existingCaName": "Corp Root CA"})
    document["profiles"].append(dict(document["profiles"][0], slug="corp-api", ca="corp"))
    payments_ca = document["certificateAuthorities"][0]
    issuer = x509.load_pem_x509_certificate(payments_ca["certificatePem"].encode())
    issuer_key = serialization.load_pem_private_key(payments_ca["privateKeyPem"].encode(), None)
    stray = leaf_signed_by(issuer, issuer_key, "stray.payments.example.com")
    document["certificates"].append({"slug": "wrong-ca", "profile": "corp-api", "certificatePem": stray})
    problems = await refused(document, org_admin.organization_id)
    assert paths(problems) == {"$.certificates[5].certificatePem"}
    assert "not issued by certificate authority 'corp'" in problems[0]["message"]
