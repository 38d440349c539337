"""What an imported project serves: a root and an intermediate from the file become one chain, the imported
API profile issues from the imported CA, and the committed example is what its script makes."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from conftest import OrgAdmin
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from legacy_import_support import ROOT, certificate_index, example, paths, profile_index, refused, run_import

from core.authz import Actor
from core.issuance import issue_certificate
from models import ApplicationProfile, Certificate, CertificateAuthority, CertificateProfile
from models.enums import CaKind
from pki.certificate import load_certificate, load_certificates, verify_issued_by


def _pem(value: Any) -> str:
    if isinstance(value, x509.Certificate):
        return value.public_bytes(serialization.Encoding.PEM).decode()
    return value.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _ca(subject: str, issuer: tuple[x509.Certificate, Any] | None) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def _leaf(issuer: tuple[x509.Certificate, Any], common_name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(issuer[1], hashes.SHA256())
    )


async def test_an_intermediate_signed_by_a_root_of_the_file_gets_that_parent(org_admin: OrgAdmin) -> None:
    root = _ca("Legacy Root", None)
    issuing = _ca("Legacy Issuing", root)
    document = example()
    document["certificateAuthorities"] = [
        # Child first: the import creates parents before children whatever the order.
        {"slug": "issuing", "certificatePem": _pem(issuing[0]), "privateKeyPem": _pem(issuing[1])},
        {"slug": "root", "certificatePem": _pem(root[0]), "privateKeyPem": _pem(root[1])},
    ]
    for profile in document["profiles"]:
        profile["ca"] = "issuing"
    for index, item in enumerate(document["certificates"]):
        item["certificatePem"] = _pem(_leaf(issuing, f"host-{index}.payments.example.com"))
        item["privateKeyPem"] = None
    report = await run_import(document, org_admin.organization_id)
    assert report.created["ca"] == 2
    cas = {ca.name: ca for ca in await CertificateAuthority.filter(name__startswith="payments-")}
    assert cas["payments-root"].kind == CaKind.ROOT and cas["payments-root"].parent_id is None
    assert cas["payments-issuing"].kind == CaKind.INTERMEDIATE
    assert cas["payments-issuing"].parent_id == cas["payments-root"].id
    row = await Certificate.filter(legacy_project_id=report.project_id).first()
    assert row is not None and row.ca_id == cas["payments-issuing"].id
    assert [c.subject for c in load_certificates(row.chain_pem)] == [issuing[0].subject]


async def test_an_intermediate_from_outside_needs_its_chain(org_admin: OrgAdmin) -> None:
    outside_root = _ca("Outside Root", None)
    issuing = _ca("Issued Outside", outside_root)
    document = example()
    document["certificateAuthorities"].append(
        {"slug": "outside", "certificatePem": _pem(issuing[0]), "privateKeyPem": _pem(issuing[1])}
    )
    problems = await refused(document, org_admin.organization_id)
    assert paths(problems) == {"$.certificateAuthorities[1].chainPem"}

    document["certificateAuthorities"][1]["chainPem"] = _pem(outside_root[0])
    report = await run_import(document, org_admin.organization_id)
    outside = await CertificateAuthority.get(name="payments-outside")
    assert outside.kind == CaKind.INTERMEDIATE and outside.external_parent and outside.parent_id is None
    assert outside.chain_pem == _pem(outside_root[0])
    assert report.created["ca"] == 2


async def test_the_imported_api_profile_issues_from_the_imported_ca(org_admin: OrgAdmin) -> None:
    document = example()
    report = await run_import(document, org_admin.organization_id)
    profile = await CertificateProfile.get(name="payments-web-api")
    issued = await issue_certificate(
        actor=Actor.system(org_admin.organization_id),
        application_id=report.project_id,
        profile_id=profile.id,
        subject=[("CN", "new.payments.example.com")],
        sans=["new.payments.example.com"],
    )
    ca_cert = load_certificate(document["certificateAuthorities"][0]["certificatePem"])
    assert verify_issued_by(load_certificate(issued.certificate_pem), ca_cert)
    assert issued.application_id == report.project_id
    gateway = document["certificates"][certificate_index(document, "gateway")]
    assert load_certificate(gateway["certificatePem"]).issuer == ca_cert.subject
    assert profile_index(document, "web-api") == 0


def test_the_committed_example_is_what_the_script_makes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-legacy-example"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


async def test_argon2_hashes_from_the_legacy_system_are_taken_as_they_are(org_admin: OrgAdmin) -> None:
    hasher = PasswordHasher()
    est_hash, scep_hash = hasher.hash("legacy-est-secret-1"), hasher.hash("legacy-scep-secret-1")
    document = example()
    est = document["profiles"][profile_index(document, "web-est")]["enrollment"]["est"]
    del est["passphrase"]
    est["passphraseHash"] = est_hash
    scep = document["profiles"][profile_index(document, "devices-scep")]["enrollment"]["scep"]
    del scep["challenge"]
    scep["challengeHash"] = scep_hash
    report = await run_import(document, org_admin.organization_id)
    attachments = {
        a.profile.name: a
        for a in await ApplicationProfile.filter(application_id=report.project_id).prefetch_related("profile")
    }
    assert attachments["payments-web-est"].est_passphrase_hash == est_hash
    assert (
        attachments["payments-web-est"].est_enabled
        and attachments["payments-web-est"].est_username == "payments-est"
    )
    assert attachments["payments-devices-scep"].scep_static_challenge_hash == scep_hash
    assert attachments["payments-devices-scep"].scep_enabled
    assert hasher.verify(est_hash, "legacy-est-secret-1")


async def test_a_dynamic_scep_profile_and_an_unhashable_hash(org_admin: OrgAdmin) -> None:
    document = example()
    scep_index = profile_index(document, "devices-scep")
    scep = document["profiles"][scep_index]["enrollment"]["scep"]
    scep["challengeHash"] = "$argon2id$garbage"
    problems = await refused(document, org_admin.organization_id)
    assert paths(problems) == {f"$.profiles[{scep_index}].enrollment.scep"}  # challenge and hash: not both

    del scep["challenge"]
    problems = await refused(document, org_admin.organization_id)
    assert problems == [
        {
            "path": f"$.profiles[{scep_index}].enrollment.scep.challengeHash",
            "message": "is not a readable argon2 hash",
        }
    ]

    del scep["challengeHash"]
    scep["challengeMode"] = "dynamic"
    scep["challengeTtlSeconds"] = 600
    report = await run_import(document, org_admin.organization_id)
    attachment = await ApplicationProfile.get(
        application_id=report.project_id, profile__name="payments-devices-scep"
    )
    assert attachment.scep_challenge_mode == "dynamic" and attachment.scep_challenge_ttl_seconds == 600
    assert attachment.scep_static_challenge_hash is None
