"""Renew, revoke, export, private keys and import over GraphQL."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import factories
import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin, tool_or_skip, write
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from factories import CERTIFICATE, EXPORT, IMPORT, ISSUE, RENEW, REVOKE, Scene, issue_input, row_counts

from core.ca import issuer_urls
from models import AuditEvent, Certificate, CertificateAuthority, CertificatePolicy, OutboxEvent
from models.enums import AuditOutcome
from pki.certificate import build_root_ca, public_keys_match, sign_ca_certificate, sign_leaf_certificate
from pki.key import KeyAlgorithm, generate_private_key
from pki.name import build_name
from pki.san import SubjectAltName


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> Scene:
    return await factories.make_scene(org_admin.organization_id, org_admin.token)


async def issue(gql: GraphQL, scene: Scene, **fields: Any) -> dict[str, Any]:
    if "csr" not in fields:
        fields = {"commonName": "svc.example.com", "sans": ["svc.example.com"], **fields}
    data = await gql(ISSUE, issue_input(scene, **fields), token=scene.operator.token)
    certificate: dict[str, Any] = data["issueCertificate"]["certificate"]
    return certificate


async def renew(gql: GraphQL, scene: Scene, certificate_id: str, mode: str, **fields: Any) -> dict[str, Any]:
    data = await gql(
        RENEW,
        {"input": {"certificateId": certificate_id, "mode": mode, **fields}},
        token=scene.operator.token,
    )
    payload: dict[str, Any] = data["renewCertificate"]
    return payload


async def revoke(
    gql: GraphQL, scene: Scene, certificate_id: str, reason: str = "KEY_COMPROMISE"
) -> dict[str, Any]:
    data = await gql(
        REVOKE, {"input": {"certificateId": certificate_id, "reason": reason}}, token=scene.operator.token
    )
    certificate: dict[str, Any] = data["revokeCertificate"]["certificate"]
    return certificate


def public_key_of(pem: str) -> Any:
    return x509.load_pem_x509_certificate(pem.encode()).public_key()


# ---------------------------------------------------------------- renewal


async def test_renew_with_a_new_key(gql: GraphQL, scene: Scene) -> None:
    old = await issue(gql, scene, metadata={"owner": "team-a"})
    payload = await renew(gql, scene, old["id"], "NEW_KEY")
    new, previous = payload["certificate"], payload["previous"]
    assert previous == {"id": old["id"], "status": "RENEWED", "renewedBy": {"id": new["id"]}}
    assert new["renewedFrom"] == {"id": old["id"]} and new["status"] == "ACTIVE"
    assert new["hasPrivateKey"] is True and new["metadata"] == {"owner": "team-a"}
    assert new["sans"] == old["sans"] and new["subjectDn"] == old["subjectDn"]
    assert new["serialNumber"] != old["serialNumber"]
    assert not public_keys_match(public_key_of(new["certificatePem"]), public_key_of(old["certificatePem"]))
    # The old certificate stays valid: renewed, not revoked.
    old_row = await Certificate.get(id=old["id"])
    assert old_row.revoked_at is None and old_row.not_after > datetime.now(UTC)
    event = await OutboxEvent.get(certificate_id=new["id"])
    assert event.event_type == "certificate.renewed" and event.payload["renewed_from_id"] == old["id"]
    assert await AuditEvent.filter(action="certificate.renew", resource_id=new["id"]).count() == 1


async def test_renew_with_the_same_key(gql: GraphQL, scene: Scene) -> None:
    old = await issue(gql, scene)
    new = (await renew(gql, scene, old["id"], "SAME_KEY"))["certificate"]
    assert public_keys_match(public_key_of(new["certificatePem"]), public_key_of(old["certificatePem"]))
    data = await gql(
        "query($id: ID!) { certificate(id: $id) { privateKeyPem } }",
        {"id": new["id"]},
        token=scene.operator.token,
    )
    key = serialization.load_pem_private_key(data["certificate"]["privateKeyPem"].encode(), password=None)
    assert public_keys_match(public_key_of(new["certificatePem"]), key)


async def test_renew_with_a_csr(gql: GraphQL, scene: Scene) -> None:
    csr, _ = factories.make_csr_pem(
        KeyAlgorithm.EC_P256, common_name="svc.example.com", sans=["svc.example.com"]
    )
    old = await issue(gql, scene, csr=csr)
    with pytest.raises(GraphQLError) as caught:
        await renew(gql, scene, old["id"], "SAME_KEY")
    assert caught.value.codes == ["INVALID_STATE"]
    assert "NEW_KEY" in caught.value.errors[0]["message"]
    with pytest.raises(GraphQLError) as caught:
        await renew(gql, scene, old["id"], "CSR")
    assert caught.value.codes == ["INVALID_INPUT"]
    new_csr, new_key = factories.make_csr_pem(
        KeyAlgorithm.RSA_2048, common_name="svc.example.com", sans=["svc.example.com", "svc2.example.com"]
    )
    new = (await renew(gql, scene, old["id"], "CSR", csr=new_csr))["certificate"]
    assert new["keyAlgorithm"] == "RSA_2048" and new["hasPrivateKey"] is False
    assert [s["value"] for s in new["sans"]] == ["svc.example.com", "svc2.example.com"]
    assert public_keys_match(public_key_of(new["certificatePem"]), new_key)


async def test_a_certificate_is_renewed_only_once(gql: GraphQL, scene: Scene) -> None:
    old = await issue(gql, scene)
    new = (await renew(gql, scene, old["id"], "NEW_KEY"))["certificate"]
    before = await row_counts()
    for mode in ("NEW_KEY", "SAME_KEY"):
        with pytest.raises(GraphQLError) as caught:
            await renew(gql, scene, old["id"], mode)
        assert caught.value.codes == ["INVALID_STATE"]
        assert new["id"] in caught.value.errors[0]["message"]
        assert caught.value.errors[0]["extensions"]["successor_id"] == new["id"]
    assert await row_counts() == before
    # The successor itself renews normally.
    newest = (await renew(gql, scene, new["id"], "NEW_KEY"))["certificate"]
    assert newest["renewedFrom"] == {"id": new["id"]}


async def test_concurrent_renewals_produce_one_successor(gql: GraphQL, scene: Scene) -> None:
    old = await issue(gql, scene)
    results = await asyncio.gather(
        *(renew(gql, scene, old["id"], "SAME_KEY") for _ in range(4)), return_exceptions=True
    )
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    assert len(succeeded) == 1
    assert all(
        isinstance(r, GraphQLError) and r.codes == ["INVALID_STATE"] for r in results if r not in succeeded
    )
    assert await Certificate.filter(renewed_from_id=old["id"]).count() == 1


async def test_renewal_checks_the_policy_again(gql: GraphQL, scene: Scene) -> None:
    old = await issue(gql, scene)
    rules = dict(factories.DEFAULT_RULES)
    rules["sans"] = [{"type": "DNS", "allowed": ["*.internal.example.com"]}]
    await CertificatePolicy.filter(id=scene.pki.policy.id).update(rules=rules, updated_at=datetime.now(UTC))
    before = await row_counts()
    with pytest.raises(GraphQLError) as caught:
        await renew(gql, scene, old["id"], "NEW_KEY")
    assert caught.value.codes == ["POLICY_VIOLATION"]
    assert caught.value.errors[0]["extensions"]["violations"][0]["value"] == "svc.example.com"
    assert await row_counts() == before
    assert (await Certificate.get(id=old["id"])).status == "active"


async def test_revoked_certificates_are_not_renewed(gql: GraphQL, scene: Scene) -> None:
    old = await issue(gql, scene)
    await revoke(gql, scene, old["id"])
    with pytest.raises(GraphQLError) as caught:
        await renew(gql, scene, old["id"], "NEW_KEY")
    assert caught.value.codes == ["INVALID_STATE"]


# ---------------------------------------------------------------- revocation


def crl_serials(crl_der: bytes | None) -> dict[int, x509.ReasonFlags | None]:
    assert crl_der is not None
    crl = x509.load_der_x509_crl(bytes(crl_der))
    result: dict[int, x509.ReasonFlags | None] = {}
    for entry in crl:
        try:
            result[entry.serial_number] = entry.extensions.get_extension_for_class(
                x509.CRLReason
            ).value.reason
        except x509.ExtensionNotFound:
            result[entry.serial_number] = None
    return result


async def test_revoke_with_a_reason_updates_the_crl(gql: GraphQL, scene: Scene) -> None:
    cert = await issue(gql, scene)
    revoked = await revoke(gql, scene, cert["id"], "KEY_COMPROMISE")
    assert revoked["status"] == "REVOKED" and revoked["revocationReason"] == "KEY_COMPROMISE"
    assert revoked["revokedAt"] is not None
    ca = await CertificateAuthority.get(id=scene.pki.intermediate.id)
    assert crl_serials(ca.crl_der) == {int(cert["serialNumber"], 16): x509.ReasonFlags.key_compromise}
    assert ca.crl_next_update is not None and ca.crl_next_update > datetime.now(UTC)
    event = await OutboxEvent.get(certificate_id=cert["id"], event_type="certificate.revoked")
    assert event.payload["reason"] == "keyCompromise"
    audit = await AuditEvent.get(action="certificate.revoke", resource_id=cert["id"])
    assert audit.details["reason"] == "keyCompromise"


async def test_revoking_twice_says_already_revoked(gql: GraphQL, scene: Scene) -> None:
    cert = await issue(gql, scene)
    await revoke(gql, scene, cert["id"], "SUPERSEDED")
    before = await row_counts()
    crl_before = (await CertificateAuthority.get(id=scene.pki.intermediate.id)).crl_number
    with pytest.raises(GraphQLError) as caught:
        await revoke(gql, scene, cert["id"], "KEY_COMPROMISE")
    assert caught.value.codes == ["INVALID_STATE"]
    assert "already revoked" in caught.value.errors[0]["message"]
    assert await row_counts() == before
    row = await Certificate.get(id=cert["id"])
    assert row.revocation_reason == "superseded"
    assert (await CertificateAuthority.get(id=scene.pki.intermediate.id)).crl_number == crl_before


async def test_an_expired_certificate_can_be_revoked(gql: GraphQL, scene: Scene) -> None:
    cert = await issue(gql, scene)
    await Certificate.filter(id=cert["id"]).update(not_after=datetime.now(UTC) - timedelta(days=1))
    data = await gql(CERTIFICATE, {"id": cert["id"]}, token=scene.operator.token)
    assert data["certificate"]["status"] == "EXPIRED"  # reported before any sweep touches the row
    revoked = await revoke(gql, scene, cert["id"], "CESSATION_OF_OPERATION")
    assert revoked["status"] == "REVOKED"
    audit = await AuditEvent.get(action="certificate.revoke", resource_id=cert["id"])
    assert audit.details["previous_status"] == "expired"
    ca = await CertificateAuthority.get(id=scene.pki.intermediate.id)
    assert int(cert["serialNumber"], 16) in crl_serials(ca.crl_der)


async def test_who_may_revoke(gql: GraphQL, scene: Scene) -> None:
    cert = await issue(gql, scene)
    variables = {"input": {"certificateId": cert["id"], "reason": "UNSPECIFIED"}}
    for token, code in (
        (scene.auditor.token, "FORBIDDEN"),
        (scene.outsider.token, "NOT_FOUND"),
        (None, "UNAUTHENTICATED"),
    ):
        with pytest.raises(GraphQLError) as caught:
            await gql(REVOKE, variables, token=token)
        assert caught.value.codes == [code]
    with pytest.raises(GraphQLError) as caught:
        await gql(
            REVOKE, {"input": {"certificateId": cert["id"], "reason": "BECAUSE"}}, token=scene.operator.token
        )
    assert (await Certificate.get(id=cert["id"])).status == "active"


# ---------------------------------------------------------------- export and keys


async def export(gql: GraphQL, token: str, certificate_id: str, **fields: Any) -> dict[str, Any]:
    data = await gql(EXPORT, {"input": {"certificateId": certificate_id, **fields}}, token=token)
    result: dict[str, Any] = data["exportCertificate"]
    return result


async def test_pem_export(gql: GraphQL, scene: Scene) -> None:
    cert = await issue(gql, scene, commonName="*.example.com", sans=["*.example.com"])
    plain = await export(gql, scene.auditor.token, cert["id"])
    assert plain["filename"] == "wildcard.example.com.pem" and plain["pkcs12Base64"] is None
    certs = x509.load_pem_x509_certificates(plain["pem"].encode())
    assert [c.subject for c in certs[1:]] == [scene.pki.intermediate_certificate.subject]
    assert "PRIVATE KEY" not in plain["pem"]
    full = await export(gql, scene.operator.token, cert["id"], includeRoot=True, includePrivateKey=True)
    certs = x509.load_pem_x509_certificates(full["pem"].encode())
    assert certs[-1] == scene.pki.root_certificate and len(certs) == 3
    key = serialization.load_pem_private_key(full["pem"].encode(), password=None)
    assert public_keys_match(certs[0].public_key(), key)
    with pytest.raises(GraphQLError) as caught:
        await export(gql, scene.auditor.token, cert["id"], includePrivateKey=True)
    assert caught.value.codes == ["FORBIDDEN"]
    exports = await AuditEvent.filter(action="certificate.export", resource_id=cert["id"]).order_by("id")
    assert [e.details["include_private_key"] for e in exports] == [False, True]


async def test_pkcs12_export_reads_with_openssl(gql: GraphQL, scene: Scene, tmp_path: Path) -> None:
    openssl = tool_or_skip("openssl")
    cert = await issue(gql, scene)
    with pytest.raises(GraphQLError) as caught:
        await export(gql, scene.operator.token, cert["id"], format="PKCS12", includePrivateKey=True)
    assert caught.value.codes == ["INVALID_INPUT"]
    result = await export(
        gql, scene.operator.token, cert["id"], format="PKCS12", includePrivateKey=True, password="s3cret pass"
    )
    assert result["filename"] == "svc.example.com.p12" and result["pem"] is None
    path = write(tmp_path / "bundle.p12", base64.b64decode(result["pkcs12Base64"]))
    out = await asyncio.to_thread(
        subprocess.run,
        [openssl, "pkcs12", "-in", str(path), "-passin", "pass:s3cret pass", "-nodes"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("BEGIN CERTIFICATE") == 2 and "BEGIN PRIVATE KEY" in out.stdout
    wrong = await asyncio.to_thread(
        subprocess.run,
        [openssl, "pkcs12", "-in", str(path), "-passin", "pass:wrong", "-nodes"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
    # A PKCS#12 of a CSR-issued certificate carries no key; asking for one is refused.
    csr, _ = factories.make_csr_pem(common_name="csr.example.com", sans=["csr.example.com"])
    from_csr = await issue(gql, scene, csr=csr)
    with pytest.raises(GraphQLError) as caught:
        await export(
            gql, scene.operator.token, from_csr["id"], format="PKCS12", includePrivateKey=True, password="x"
        )
    assert caught.value.codes == ["INVALID_STATE"]
    result = await export(gql, scene.operator.token, from_csr["id"], format="PKCS12", password="x")
    loaded = pkcs12.load_pkcs12(base64.b64decode(result["pkcs12Base64"]), b"x")
    assert loaded.key is None
    names = [c.certificate.subject.rfc4514_string() for c in loaded.additional_certs]
    assert names[0] == "CN=csr.example.com" and len(names) == 2


async def test_reading_a_private_key_is_audited_and_never_logged(gql: GraphQL, scene: Scene) -> None:
    cert = await issue(gql, scene)
    query = "query($id: ID!) { certificate(id: $id) { privateKeyPem } }"
    data = await gql(query, {"id": cert["id"]}, token=scene.operator.token)
    pem = data["certificate"]["privateKeyPem"]
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    reads = await AuditEvent.filter(action="certificate.private_key_read", resource_id=cert["id"])
    assert len(reads) == 1 and reads[0].actor_id == scene.operator.principal.id
    for entry in await AuditEvent.all():
        assert "PRIVATE KEY" not in str(entry.details)
    for event in await OutboxEvent.all():
        assert "PRIVATE KEY" not in str(event.payload)
    # Stored sealed, never in clear.
    row = await Certificate.get(id=cert["id"])
    assert row.encrypted_private_key is not None and b"PRIVATE KEY" not in bytes(row.encrypted_private_key)
    # A CSR-issued certificate has no key: null, and no audit entry.
    csr, _ = factories.make_csr_pem(common_name="csr.example.com", sans=["csr.example.com"])
    from_csr = await issue(gql, scene, csr=csr)
    data = await gql(query, {"id": from_csr["id"]}, token=scene.operator.token)
    assert data["certificate"]["privateKeyPem"] is None
    assert await AuditEvent.filter(action="certificate.private_key_read").count() == 1


# ---------------------------------------------------------------- import


def external_hierarchy() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate, Any]:
    """A root, intermediate and leaf (with its key) from a PKI Keyward does not run."""
    now = datetime.now(UTC)
    root_key = factories.cached_key(KeyAlgorithm.EC_P256, "external-root")
    root = build_root_ca(
        key=root_key,
        subject=build_name([("CN", "External Root")]),
        not_after=now + timedelta(days=365),
        path_length=None,
    )
    inter_key = factories.cached_key(KeyAlgorithm.EC_P256, "external-intermediate")
    urls = issuer_urls(uuid.uuid4())
    inter = sign_ca_certificate(
        issuer_cert=root,
        issuer_key=root_key,
        public_key=inter_key.public_key(),
        subject=build_name([("CN", "External Issuing")]),
        not_after=now + timedelta(days=300),
        path_length=0,
        urls=urls,
    )
    leaf_key = generate_private_key(KeyAlgorithm.EC_P256)
    leaf = sign_leaf_certificate(
        issuer_cert=inter,
        issuer_key=inter_key,
        public_key=leaf_key.public_key(),
        subject=build_name([("CN", "legacy.example.com")]),
        sans=[SubjectAltName("DNS", "legacy.example.com")],
        key_usages=frozenset(),
        extended_key_usages=frozenset({"serverAuth"}),
        not_after=now + timedelta(days=90),
        urls=urls,
    )
    return root, inter, leaf, leaf_key


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


async def import_(gql: GraphQL, scene: Scene, token: str | None = None, **fields: Any) -> dict[str, Any]:
    data = await gql(
        IMPORT,
        {"input": {"applicationId": str(scene.application.id), **fields}},
        token=token or scene.operator.token,
    )
    certificate: dict[str, Any] = data["importCertificate"]["certificate"]
    return certificate


async def test_import_pem(gql: GraphQL, scene: Scene) -> None:
    root, inter, leaf, _ = external_hierarchy()
    cert = await import_(gql, scene, pem=pem(leaf, inter, root), metadata={"origin": "legacy"})
    assert (cert["source"], cert["enrollmentMethod"], cert["status"]) == ("IMPORTED", "IMPORT", "ACTIVE")
    assert cert["commonName"] == "legacy.example.com" and cert["hasPrivateKey"] is False
    assert cert["fingerprintSha256"] == leaf.fingerprint(hashes.SHA256()).hex()
    assert x509.load_pem_x509_certificates(cert["chainPem"].encode()) == [inter]
    assert cert["metadata"] == {"origin": "legacy"}
    row = await Certificate.get(id=cert["id"])
    assert row.ca_id is None and row.profile_id is None
    exported = await export(gql, scene.operator.token, cert["id"], includeRoot=True)
    assert x509.load_pem_x509_certificates(exported["pem"].encode()) == [leaf, inter, root]
    before = await row_counts()
    with pytest.raises(GraphQLError) as caught:
        await import_(gql, scene, pem=pem(leaf))
    assert caught.value.codes == ["CONFLICT"]
    assert await row_counts() == before
    # Another application may hold the same certificate.
    other = await factories.make_application(scene.org)
    data = await gql(
        IMPORT, {"input": {"applicationId": str(other.id), "pem": pem(leaf)}}, token=scene.admin_token
    )
    assert data["importCertificate"]["certificate"]["id"] != cert["id"]


async def test_import_pkcs12_with_key(gql: GraphQL, scene: Scene) -> None:
    root, inter, leaf, leaf_key = external_hierarchy()
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption

    data = pkcs12.serialize_key_and_certificates(
        b"legacy", leaf_key, leaf, [inter], BestAvailableEncryption(b"pw-123")
    )
    with pytest.raises(GraphQLError) as caught:
        await import_(gql, scene, pkcs12Base64=base64.b64encode(data).decode(), password="wrong")
    assert caught.value.codes == ["INVALID_INPUT"]
    cert = await import_(
        gql,
        scene,
        pkcs12Base64=base64.b64encode(data).decode(),
        password="pw-123",
        profileId=str(scene.pki.profile.id),
    )
    assert cert["hasPrivateKey"] is True
    key_pem = (
        await gql(
            "query($id: ID!) { certificate(id: $id) { privateKeyPem profile { id } } }",
            {"id": cert["id"]},
            token=scene.operator.token,
        )
    )["certificate"]
    assert key_pem["profile"] == {"id": str(scene.pki.profile.id)}
    key = serialization.load_pem_private_key(key_pem["privateKeyPem"].encode(), password=None)
    assert public_keys_match(leaf.public_key(), key)
    # An imported certificate with a server-held key and a profile renews like an issued one.
    renewed = (await renew(gql, scene, cert["id"], "SAME_KEY"))["certificate"]
    assert renewed["source"] == "ISSUED" and renewed["renewedFrom"] == {"id": cert["id"]}
    assert public_keys_match(public_key_of(renewed["certificatePem"]), leaf.public_key())


async def test_import_matches_our_issuing_ca(gql: GraphQL, scene: Scene) -> None:
    """A certificate one of our CAs signed is linked to it on import, so revocation reaches its CRL."""
    leaf_key = generate_private_key(KeyAlgorithm.EC_P256)
    leaf = sign_leaf_certificate(
        issuer_cert=scene.pki.intermediate_certificate,
        issuer_key=factories.cached_key(KeyAlgorithm.EC_P256, "intermediate"),
        public_key=leaf_key.public_key(),
        subject=build_name([("CN", "old.example.com")]),
        sans=[SubjectAltName("DNS", "old.example.com")],
        key_usages=frozenset(),
        extended_key_usages=frozenset(),
        not_after=datetime.now(UTC) + timedelta(days=30),
        urls=issuer_urls(scene.pki.intermediate.id),
    )
    cert = await import_(gql, scene, pem=pem(leaf))
    row = await Certificate.get(id=cert["id"])
    assert row.ca_id == scene.pki.intermediate.id
    assert x509.load_pem_x509_certificates(cert["chainPem"].encode()) == [scene.pki.intermediate_certificate]
    await revoke(gql, scene, cert["id"])
    ca = await CertificateAuthority.get(id=scene.pki.intermediate.id)
    assert leaf.serial_number in crl_serials(ca.crl_der)


async def test_bad_imports(gql: GraphQL, scene: Scene) -> None:
    root, inter, leaf, _ = external_hierarchy()
    before = await row_counts()
    for fields, code in (
        ({"pem": "garbage"}, "INVALID_INPUT"),
        ({"pkcs12Base64": "!!!"}, "INVALID_INPUT"),
        ({}, "INVALID_INPUT"),
        ({"pem": pem(leaf), "pkcs12Base64": "AAAA"}, "INVALID_INPUT"),
        ({"pem": pem(root)}, "INVALID_INPUT"),  # a CA certificate is not inventory
        (
            {"pem": pem(leaf), "profileId": str((await factories.make_pki(scene.org)).profile.id)},
            "INVALID_INPUT",
        ),
    ):
        with pytest.raises(GraphQLError) as caught:
            await import_(gql, scene, **fields)
        assert caught.value.codes == [code], fields
    with pytest.raises(GraphQLError) as caught:
        await import_(gql, scene, token=scene.auditor.token, pem=pem(leaf))
    assert caught.value.codes == ["FORBIDDEN"]
    assert await row_counts() == before
    assert (
        await AuditEvent.filter(outcome=AuditOutcome.FAILURE, action="mutation.importCertificate").count()
        == 7
    )
