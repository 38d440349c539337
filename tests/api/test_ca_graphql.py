"""Certificate authorities over GraphQL: root, intermediate, external intermediate, disable, errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from cryptography import x509
from cryptography.x509.oid import NameOID
from pki_admin_support import CA_FIELDS, create_intermediate, create_root, member_token

from api.graphql.schema import schema
from core import ca as core_ca
from core.bootstrap import init_organization
from core.errors import InvalidState
from models import AuditEvent, CertificateAuthority
from models.enums import AuditOutcome
from pki.certificate import (
    build_root_ca,
    certificate_pem,
    describe_certificate,
    load_certificate,
    sign_ca_certificate,
    verify_issued_by,
)
from pki.csr import parse_csr
from pki.key import KeyAlgorithm, generate_private_key

EXTERNAL = (
    "mutation($input: CreateExternalIntermediateCaInput!) "
    f"{{ createExternalIntermediateCa(input: $input) {{ {CA_FIELDS} }} }}"
)
IMPORT = (
    f"mutation($input: ImportCaCertificateInput!) {{ importCaCertificate(input: $input) {{ {CA_FIELDS} }} }}"
)


async def test_create_root_ca(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token, validity="10y", pathLength=1)
    assert root["kind"] == "ROOT"
    assert root["status"] == "ACTIVE"
    assert root["keyAlgorithm"] == "EC_P256"
    assert root["subjectDn"] == "CN=Acme Root CA,O=Acme"
    assert root["pathLength"] == 1
    assert root["parent"] is None
    cert = load_certificate(root["certificatePem"])
    facts = describe_certificate(cert)
    assert facts.is_ca and facts.path_length == 1
    assert verify_issued_by(cert, cert)
    assert facts.serial_hex == root["serialNumber"]
    assert timedelta(days=3649) < facts.not_after - datetime.now(UTC) <= timedelta(days=3650)
    assert root["crlUrl"].endswith(f"/pki/cas/{root['id']}/crl")
    row = await CertificateAuthority.get(id=root["id"])
    assert b"PRIVATE KEY" not in bytes(row.encrypted_private_key)  # sealed, never plaintext
    event = await AuditEvent.get(action="ca.create_root")
    assert event.resource_id == root["id"] and event.outcome == AuditOutcome.SUCCESS
    assert "PRIVATE" not in str(event.details)


def test_no_private_key_field_in_the_schema() -> None:
    sdl = str(schema)
    start = sdl.index("type CertificateAuthority ")
    block = sdl[start : sdl.index("}", start)]
    assert "private" not in block.lower() and "encrypted" not in block.lower()


@pytest.mark.parametrize("algorithm", ["EC_P384", "ED25519", "RSA_2048"])
async def test_root_key_algorithms(gql: GraphQL, org_admin: OrgAdmin, algorithm: str) -> None:
    root = await create_root(gql, org_admin.token, keyAlgorithm=algorithm)
    assert root["keyAlgorithm"] == algorithm
    assert describe_certificate(load_certificate(root["certificatePem"])).key_algorithm == KeyAlgorithm(
        algorithm
    )


async def test_bad_key_algorithm_enum_is_refused(gql: GraphQL, org_admin: OrgAdmin) -> None:
    with pytest.raises(GraphQLError) as caught:
        await gql(
            'mutation { createRootCa(input: {name: "r", subject: "CN=r", keyAlgorithm: DSA_1024}) { id } }',
            token=org_admin.token,
        )
    assert "DSA_1024" in caught.value.errors[0]["message"]
    assert "KeyAlgorithm" in caught.value.errors[0]["message"]
    assert await CertificateAuthority.all().count() == 0


@pytest.mark.parametrize("validity", ["ten years", "0d", "10w", ""])
async def test_bad_validity_is_invalid_input(gql: GraphQL, org_admin: OrgAdmin, validity: str) -> None:
    with pytest.raises(GraphQLError) as caught:
        await create_root(gql, org_admin.token, validity=validity)
    assert caught.value.codes == ["INVALID_INPUT"]
    assert caught.value.errors[0]["extensions"]["field"] == "validity"
    assert await CertificateAuthority.all().count() == 0
    failure = await AuditEvent.get(action="mutation.createRootCa")
    assert failure.outcome == AuditOutcome.FAILURE


@pytest.mark.parametrize(
    ("subject", "path_length", "field"),
    [("XX=nope", None, "subject"), ("", None, "subject"), ("CN=ok", -1, "pathLength")],
)
async def test_bad_subject_or_path_length(
    gql: GraphQL, org_admin: OrgAdmin, subject: str, path_length: int | None, field: str
) -> None:
    with pytest.raises(GraphQLError) as caught:
        await create_root(gql, org_admin.token, subject=subject, pathLength=path_length)
    assert caught.value.codes == ["INVALID_INPUT"]
    assert caught.value.errors[0]["extensions"]["field"] == field


async def test_duplicate_name_is_a_conflict(gql: GraphQL, org_admin: OrgAdmin) -> None:
    await create_root(gql, org_admin.token)
    with pytest.raises(GraphQLError) as caught:
        await create_root(gql, org_admin.token, subject="CN=Other")
    assert caught.value.codes == ["CONFLICT"]
    assert await CertificateAuthority.all().count() == 1


async def test_same_name_in_another_organization_is_fine(gql: GraphQL, org_admin: OrgAdmin) -> None:
    _, _, other_token = await init_organization(org_name="globex", admin_email="admin@globex.test")
    await create_root(gql, org_admin.token)
    other = await create_root(gql, other_token)
    # And each organization sees only its own.
    data = await gql("{ certificateAuthorities { id } }", token=org_admin.token)
    assert other["id"] not in [ca["id"] for ca in data["certificateAuthorities"]]
    with pytest.raises(GraphQLError) as caught:
        await gql(
            "query($id: ID!) { certificateAuthority(id: $id) { name } }",
            {"id": other["id"]},
            token=org_admin.token,
        )
    assert caught.value.codes == ["NOT_FOUND"]


async def test_intermediate_chains_to_root(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token, validity="2y")
    inter = await create_intermediate(gql, org_admin.token, root["id"], validity="10y", pathLength=0)
    assert inter["kind"] == "INTERMEDIATE" and inter["status"] == "ACTIVE"
    assert inter["parent"] == {"id": root["id"], "name": "Acme Root"}
    root_cert = load_certificate(root["certificatePem"])
    inter_cert = load_certificate(inter["certificatePem"])
    assert verify_issued_by(inter_cert, root_cert)
    # Never outlives its parent: 10y asked under a 2y root is capped at the root's notAfter.
    assert inter_cert.not_valid_after_utc <= root_cert.not_valid_after_utc
    assert describe_certificate(inter_cert).path_length == 0
    # Issued CA certificates carry the parent's AIA / CRL URLs.
    aia = inter_cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert any(root["id"] in d.access_location.value for d in aia)

    material = await core_ca.signing_material(await CertificateAuthority.get(id=inter["id"]))
    assert material.chain == [inter_cert]
    assert material.root == root_cert
    assert material.urls.ocsp.endswith(f"/pki/ocsp/{inter['id']}")
    assert material.signature_algorithm == "ECDSA_WITH_SHA256"
    again = await core_ca.signing_material(await CertificateAuthority.get(id=inter["id"]))
    assert again is material  # cached: no unsealing per issuance


async def test_two_level_chain_is_whole(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token, pathLength=2)
    policy_ca = await create_intermediate(gql, org_admin.token, root["id"], name="Policy CA", pathLength=1)
    issuing = await create_intermediate(
        gql, org_admin.token, policy_ca["id"], name="Issuing CA", subject="CN=Iss"
    )
    material = await core_ca.signing_material(await CertificateAuthority.get(id=issuing["id"]))
    assert [c.subject.rfc4514_string() for c in material.chain] == ["CN=Iss", "CN=Acme Issuing CA,O=Acme"]
    assert material.root == load_certificate(root["certificatePem"])


async def test_path_length_zero_parent_cannot_sign_a_ca(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token, pathLength=0)
    with pytest.raises(GraphQLError) as caught:
        await create_intermediate(gql, org_admin.token, root["id"])
    assert caught.value.codes == ["INVALID_INPUT"]
    assert caught.value.errors[0]["extensions"]["field"] == "parentCaId"
    assert "path length 0" in caught.value.errors[0]["message"]
    root1 = await create_root(gql, org_admin.token, name="r1", pathLength=1)
    with pytest.raises(GraphQLError) as caught:
        await create_intermediate(gql, org_admin.token, root1["id"], pathLength=1)
    assert caught.value.errors[0]["extensions"]["field"] == "pathLength"
    assert await CertificateAuthority.all().count() == 2


@pytest.mark.parametrize("parent_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_parent_is_not_found(gql: GraphQL, org_admin: OrgAdmin, parent_id: str) -> None:
    with pytest.raises(GraphQLError) as caught:
        await create_intermediate(gql, org_admin.token, parent_id)
    assert caught.value.codes == ["NOT_FOUND"]


async def test_member_reads_but_cannot_manage(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    token = await member_token(org_admin.organization_id)
    data = await gql(f"{{ certificateAuthorities {{ {CA_FIELDS} }} }}", token=token)
    assert [ca["id"] for ca in data["certificateAuthorities"]] == [root["id"]]
    assert data["certificateAuthorities"][0]["certificatePem"] == root["certificatePem"]
    mutations = [
        ('mutation { createRootCa(input: {name: "x", subject: "CN=x"}) { id } }', None),
        (
            'mutation($id: ID!) { createIntermediateCa(input: {name: "x", parentCaId: $id, subject: "CN=x"}) '
            "{ id } }",
            {"id": root["id"]},
        ),
        ('mutation { createExternalIntermediateCa(input: {name: "x", subject: "CN=x"}) { id } }', None),
        (
            'mutation($id: ID!) { importCaCertificate(input: {caId: $id, certificatePem: "", chainPem: ""}) '
            "{ id } }",
            {"id": root["id"]},
        ),
        ("mutation($id: ID!) { disableCa(id: $id) { id } }", {"id": root["id"]}),
        ("mutation($id: ID!) { enableCa(id: $id) { id } }", {"id": root["id"]}),
    ]
    for query, variables in mutations:
        with pytest.raises(GraphQLError) as caught:
            await gql(query, variables, token=token)
        assert caught.value.codes == ["FORBIDDEN"], query
        with pytest.raises(GraphQLError) as caught:
            await gql(query, variables, token=None)
        assert caught.value.codes == ["UNAUTHENTICATED"], query
    assert await CertificateAuthority.all().count() == 1
    row = await CertificateAuthority.get(id=root["id"])
    assert row.status == "active"


async def test_unauthenticated_queries_are_refused(gql: GraphQL, org_admin: OrgAdmin) -> None:
    await create_root(gql, org_admin.token)
    with pytest.raises(GraphQLError) as caught:
        await gql("{ certificateAuthorities { id } }", token=None)
    assert caught.value.codes == ["UNAUTHENTICATED"]


async def test_disable_and_enable(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    data = await gql(
        "mutation($id: ID!) { disableCa(id: $id) { status } }", {"id": root["id"]}, token=org_admin.token
    )
    assert data["disableCa"]["status"] == "DISABLED"
    row = await CertificateAuthority.get(id=root["id"])
    with pytest.raises(InvalidState, match="disabled"):
        core_ca.require_active(row)
    with pytest.raises(GraphQLError) as caught:
        await gql(
            "mutation($id: ID!) { disableCa(id: $id) { status } }", {"id": root["id"]}, token=org_admin.token
        )
    assert caught.value.codes == ["INVALID_STATE"]
    # A disabled parent signs no intermediate either.
    with pytest.raises(GraphQLError) as caught:
        await create_intermediate(gql, org_admin.token, root["id"])
    assert caught.value.codes == ["INVALID_STATE"]
    data = await gql(
        "mutation($id: ID!) { enableCa(id: $id) { status } }", {"id": root["id"]}, token=org_admin.token
    )
    assert data["enableCa"]["status"] == "ACTIVE"
    core_ca.require_active(await CertificateAuthority.get(id=root["id"]))
    actions = await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).values_list("action", flat=True)
    assert "ca.disable" in actions and "ca.enable" in actions


def _throwaway_root() -> tuple[x509.Certificate, object]:
    key = generate_private_key(KeyAlgorithm.EC_P384)
    cert = build_root_ca(
        key=key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corporate Offline Root")]),
        not_after=datetime.now(UTC) + timedelta(days=3650),
        path_length=None,
    )
    return cert, key


async def test_external_parent_end_to_end(gql: GraphQL, org_admin: OrgAdmin) -> None:
    data = await gql(
        EXTERNAL,
        {"input": {"name": "Ext Issuing", "subject": "CN=Ext Issuing CA,O=Acme", "keyAlgorithm": "EC_P256"}},
        token=org_admin.token,
    )
    pending = data["createExternalIntermediateCa"]
    assert pending["status"] == "PENDING_CERTIFICATE"
    assert pending["externalParent"] is True and pending["certificatePem"] is None
    csr = parse_csr(pending["csrPem"])
    assert csr.subject == [("O", "Acme"), ("CN", "Ext Issuing CA")]  # encoding order
    row = await CertificateAuthority.get(id=pending["id"])
    with pytest.raises(InvalidState, match="no certificate yet"):
        core_ca.require_active(row)
    with pytest.raises(GraphQLError) as caught:
        await gql(
            "mutation($id: ID!) { enableCa(id: $id) { id } }", {"id": pending["id"]}, token=org_admin.token
        )
    assert caught.value.codes == ["INVALID_STATE"]

    # The external parent (made here with pki functions) signs the CSR.
    ext_root, ext_root_key = _throwaway_root()
    ext_mid_key = generate_private_key(KeyAlgorithm.EC_P256)
    ext_mid = sign_ca_certificate(
        issuer_cert=ext_root,
        issuer_key=ext_root_key,  # type: ignore[arg-type]
        public_key=ext_mid_key.public_key(),
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corporate Policy CA")]),
        not_after=datetime.now(UTC) + timedelta(days=2000),
        path_length=1,
        urls=None,
    )
    signed = sign_ca_certificate(
        issuer_cert=ext_mid,
        issuer_key=ext_mid_key,
        public_key=csr.public_key,
        subject=csr.csr.subject,
        not_after=datetime.now(UTC) + timedelta(days=1000),
        path_length=0,
        urls=None,
    )
    chain_pem = certificate_pem(ext_mid) + certificate_pem(ext_root)

    # A certificate for another key is refused, as is one whose chain does not sign it.
    stranger, _ = _throwaway_root()
    for certificate, chain, field in [
        (certificate_pem(stranger), chain_pem, "certificatePem"),
        (certificate_pem(signed), certificate_pem(ext_root), "chainPem"),
        (certificate_pem(signed), "", "chainPem"),
        ("garbage", chain_pem, "certificatePem"),
    ]:
        with pytest.raises(GraphQLError) as caught:
            await gql(
                IMPORT,
                {"input": {"caId": pending["id"], "certificatePem": certificate, "chainPem": chain}},
                token=org_admin.token,
            )
        assert caught.value.codes == ["INVALID_INPUT"]
        assert caught.value.errors[0]["extensions"]["field"] == field
    assert (await CertificateAuthority.get(id=pending["id"])).status == "pending_certificate"

    data = await gql(
        IMPORT,
        {"input": {"caId": pending["id"], "certificatePem": certificate_pem(signed), "chainPem": chain_pem}},
        token=org_admin.token,
    )
    active = data["importCaCertificate"]
    assert active["status"] == "ACTIVE"
    assert active["serialNumber"] == describe_certificate(signed).serial_hex
    assert active["notAfter"] is not None and active["chainPem"] == chain_pem
    row = await CertificateAuthority.get(id=pending["id"])
    core_ca.require_active(row)
    material = await core_ca.signing_material(row)
    assert material.chain == [signed, ext_mid]  # whole chain, without the root
    assert material.root == ext_root

    # A second import is refused: the CA is no longer pending.
    with pytest.raises(GraphQLError) as caught:
        await gql(
            IMPORT,
            {
                "input": {
                    "caId": pending["id"],
                    "certificatePem": certificate_pem(signed),
                    "chainPem": chain_pem,
                }
            },
            token=org_admin.token,
        )
    assert caught.value.codes == ["INVALID_STATE"]
    actions = await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).values_list("action", flat=True)
    assert "ca.create_external_intermediate" in actions and "ca.import_certificate" in actions


async def test_non_ca_certificate_is_refused_on_import(gql: GraphQL, org_admin: OrgAdmin) -> None:
    from pki.certificate import IssuerUrls, sign_leaf_certificate

    data = await gql(
        EXTERNAL,
        {"input": {"name": "Ext", "subject": "CN=Ext", "keyAlgorithm": "EC_P256"}},
        token=org_admin.token,
    )
    pending = data["createExternalIntermediateCa"]
    csr = parse_csr(pending["csrPem"])
    ext_root, ext_root_key = _throwaway_root()
    leaf = sign_leaf_certificate(
        issuer_cert=ext_root,
        issuer_key=ext_root_key,  # type: ignore[arg-type]
        public_key=csr.public_key,
        subject=csr.csr.subject,
        sans=[],
        key_usages=frozenset(),
        extended_key_usages=frozenset(),
        not_after=datetime.now(UTC) + timedelta(days=30),
        urls=IssuerUrls("http://x/ca", "http://x/ocsp", "http://x/crl"),
    )
    with pytest.raises(GraphQLError) as caught:
        await gql(
            IMPORT,
            {
                "input": {
                    "caId": pending["id"],
                    "certificatePem": certificate_pem(leaf),
                    "chainPem": certificate_pem(ext_root),
                }
            },
            token=org_admin.token,
        )
    assert caught.value.codes == ["INVALID_INPUT"]
    assert "not a CA" in caught.value.errors[0]["message"]
