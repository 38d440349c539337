"""The authorization matrix (SPEC §2) for the shared PKI, certificates and the audit log, and its coverage.

Rows as in test_authz_roles.py (see authz_matrix_support). Every CA, policy and profile mutation is a
Product Admin's alone; certificates follow the application role (Operators issue, renew, revoke and read
server-held keys, Auditors only read, and never a secret). Below the matrix: checks that the rows of both
matrix modules together cover every mutation and every secret field of the live schema, that no field
reaches a CA's private key, and that an Auditor reads the whole application without meeting a secret.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from authz_matrix_support import (
    ANY_PRINCIPAL,
    APP_OPERATE,
    APP_READ,
    FORBIDDEN,
    NOT_FOUND,
    PKI_METADATA,
    PRODUCT_ADMIN_CHANGES,
    PRODUCT_ADMIN_CREATES,
    Operation,
    app_gate,
    check_rows,
    field_coordinates,
    run_cell,
)
from conftest import CAST_ROLES, Cast, GraphQL, GraphQLError, create_principal_with_token
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from factories import CERTIFICATE_FIELDS, Pki, cached_key, make_pki
from graphql import GraphQLObjectType, get_named_type
from test_authz_matrix_acme import ACME_OPERATIONS
from test_authz_matrix_alerts import ALERT_OPERATIONS
from test_authz_matrix_approval import APPROVAL_OPERATIONS
from test_authz_matrix_est import EST_OPERATIONS
from test_authz_matrix_legacy_import import LEGACY_IMPORT_OPERATIONS
from test_authz_matrix_migration import MIGRATION_OPERATIONS
from test_authz_matrix_scep import SCEP_OPERATIONS
from test_authz_matrix_sync import SYNC_OPERATIONS
from test_authz_roles import OPERATIONS as IDENTITY_AND_APPLICATION_OPERATIONS

from api.graphql.schema import schema
from core import ca as ca_service
from core import issuance
from core.authz import Actor
from models import ApplicationProfile, Certificate, CertificateAuthority, CertificatePolicy, Organization
from models.enums import CaStatus
from pki.certificate import build_root_ca, certificate_pem, sign_ca_certificate
from pki.csr import parse_csr
from pki.key import KeyAlgorithm
from pki.name import build_name

GRAPHQL_SCHEMA = schema._schema
EXPORT_PASSWORD = "export-passphrase-42"

# Variables: every cell prepares its own targets in acme ---------------------------------------------------


def system(cast: Cast) -> Actor:
    """Setup runs as the system actor of acme (the CLI's and worker's identity), never as a cast member."""
    return Actor.system(cast.organization_id)


async def acme_pki(cast: Cast) -> Pki:
    """A P-256 root, issuing CA, policy and profile in acme (cached keys: no key generation)."""
    return await make_pki(await Organization.get(id=cast.organization_id))


async def attached_pki(cast: Cast) -> Pki:
    pki = await acme_pki(cast)
    await ApplicationProfile.create(
        application_id=cast.application_id, profile_id=pki.profile.id, api_enabled=True
    )
    return pki


async def issued_certificate(cast: Cast) -> Certificate:
    """A certificate of the cast's application whose P-256 key the server generated and holds."""
    pki = await attached_pki(cast)
    return await issuance.issue_certificate(
        actor=system(cast),
        application_id=cast.application_id,
        profile_id=pki.profile.id,
        subject=[("CN", "www.example.com")],
        sans=["www.example.com"],
        key_algorithm="EC_P256",
    )


async def new_root_input(cast: Cast, role: str) -> dict[str, Any]:
    return {"input": {"name": f"root-{role}", "subject": f"CN=Root {role}", "keyAlgorithm": "EC_P256"}}


async def intermediate_under_acme_root(cast: Cast, role: str) -> dict[str, Any]:
    pki = await acme_pki(cast)
    return {
        "input": {
            "name": f"issuing-{role}",
            "parentCaId": str(pki.root.id),
            "subject": f"CN=Issuing {role}",
            "keyAlgorithm": "EC_P256",
        }
    }


async def new_external_input(cast: Cast, role: str) -> dict[str, Any]:
    return {
        "input": {"name": f"external-{role}", "subject": f"CN=External {role}", "keyAlgorithm": "EC_P256"}
    }


async def pending_ca_signed_outside(cast: Cast, role: str) -> dict[str, Any]:
    """A pending acme CA and the certificate an external root signed for its CSR."""
    pending = await ca_service.create_external_intermediate_ca(
        actor=system(cast),
        name=f"pending-{role}",
        subject="CN=Pending CA,O=Acme",
        key_algorithm="EC_P256",
        path_length=0,
    )
    assert pending.csr_pem is not None
    csr = parse_csr(pending.csr_pem)
    outside_key = cached_key(KeyAlgorithm.EC_P256, "external-root")
    now = datetime.now(UTC)
    outside_root = build_root_ca(
        key=outside_key,
        subject=build_name([("O", "Corporate"), ("CN", "Corporate Root")]),
        not_after=now + timedelta(days=3650),
        path_length=None,
    )
    signed = sign_ca_certificate(
        issuer_cert=outside_root,
        issuer_key=outside_key,
        public_key=csr.public_key,
        subject=csr.csr.subject,
        not_after=now + timedelta(days=1000),
        path_length=0,
        urls=None,
    )
    return {
        "input": {
            "caId": str(pending.id),
            "certificatePem": certificate_pem(signed),
            "chainPem": certificate_pem(outside_root),
        }
    }


async def active_ca(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str((await acme_pki(cast)).intermediate.id)}


async def disabled_ca(cast: Cast, role: str) -> dict[str, Any]:
    variables = await active_ca(cast, role)
    await CertificateAuthority.filter(id=variables["id"]).update(status=CaStatus.DISABLED)
    return variables


async def new_policy_input(cast: Cast, role: str) -> dict[str, Any]:
    return {"input": {"name": f"policy-{role}", "rules": {"maxValidity": "90d"}}}


async def unused_policy(cast: Cast, role: str) -> dict[str, Any]:
    policy = await CertificatePolicy.create(organization_id=cast.organization_id, name=f"spare-{role}")
    return {"id": str(policy.id)}


async def acme_policy(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str((await acme_pki(cast)).policy.id)}


async def new_profile_input(cast: Cast, role: str) -> dict[str, Any]:
    pki = await acme_pki(cast)
    return {
        "input": {"name": f"profile-{role}", "caId": str(pki.intermediate.id), "policyId": str(pki.policy.id)}
    }


async def acme_profile(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str((await acme_pki(cast)).profile.id)}


async def issue_request(cast: Cast, role: str) -> dict[str, Any]:
    pki = await attached_pki(cast)
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "profileId": str(pki.profile.id),
            "commonName": "www.example.com",
            "sans": ["www.example.com"],
            "keyAlgorithm": "EC_P256",
        }
    }


async def a_certificate(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str((await issued_certificate(cast)).id)}


async def renew_request(cast: Cast, role: str) -> dict[str, Any]:
    return {"input": {"certificateId": (await a_certificate(cast, role))["id"], "mode": "NEW_KEY"}}


async def revoke_request(cast: Cast, role: str) -> dict[str, Any]:
    return {"input": {"certificateId": (await a_certificate(cast, role))["id"], "reason": "KEY_COMPROMISE"}}


async def update_request(cast: Cast, role: str) -> dict[str, Any]:
    certificate_id = (await a_certificate(cast, role))["id"]
    return {"input": {"certificateId": certificate_id, "metadata": {"owner": role}}}


async def export_request(cast: Cast, role: str) -> dict[str, Any]:
    return {"input": {"certificateId": (await a_certificate(cast, role))["id"]}}


async def export_with_key_request(cast: Cast, role: str) -> dict[str, Any]:
    variables = await export_request(cast, role)
    variables["input"]["includePrivateKey"] = True
    return variables


async def pkcs12_with_key_request(cast: Cast, role: str) -> dict[str, Any]:
    variables = await export_with_key_request(cast, role)
    variables["input"].update(format="PKCS12", password=EXPORT_PASSWORD)
    return variables


def outside_leaf_pem() -> str:
    """An end-entity certificate from outside Keyward (self-signed, not a CA), as an import brings."""
    key = cached_key(KeyAlgorithm.EC_P256, "imported-leaf")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy.example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("legacy.example.com")]), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


async def import_request(cast: Cast, role: str) -> dict[str, Any]:
    return {"input": {"applicationId": str(cast.application_id), "pem": outside_leaf_pem()}}


async def application_with_a_certificate(cast: Cast, role: str) -> dict[str, Any]:
    await issued_certificate(cast)
    return {"id": str(cast.application_id)}


# Checks on allowed calls: the OK carried the real thing ----------------------------------------------------


def has_private_key(pem: str | None) -> bool:
    return pem is not None and "-----BEGIN PRIVATE KEY-----" in pem


def check_ca_active(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert data["importCaCertificate"]["status"] == "ACTIVE"


def check_issued(data: dict[str, Any], variables: dict[str, Any]) -> None:
    certificate = data["issueCertificate"]["certificate"]
    assert certificate["commonName"] == "www.example.com" and certificate["hasPrivateKey"] is True
    assert has_private_key(certificate["privateKeyPem"])


def check_renewed(data: dict[str, Any], variables: dict[str, Any]) -> None:
    payload = data["renewCertificate"]
    assert payload["previous"]["id"] == variables["input"]["certificateId"]
    assert payload["previous"]["status"] == "RENEWED" and payload["certificate"]["status"] == "ACTIVE"


def check_revoked(data: dict[str, Any], variables: dict[str, Any]) -> None:
    certificate = data["revokeCertificate"]["certificate"]
    assert certificate["status"] == "REVOKED" and certificate["revocationReason"] == "KEY_COMPROMISE"


def check_updated(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert data["updateCertificate"]["certificate"]["metadata"] == variables["input"]["metadata"]


def check_export_without_key(data: dict[str, Any], variables: dict[str, Any]) -> None:
    pem = data["exportCertificate"]["pem"]
    assert "-----BEGIN CERTIFICATE-----" in pem and "PRIVATE KEY" not in pem


def check_export_with_key(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert has_private_key(data["exportCertificate"]["pem"])


def check_pkcs12_with_key(data: dict[str, Any], variables: dict[str, Any]) -> None:
    blob = base64.b64decode(data["exportCertificate"]["pkcs12Base64"])
    key, cert, _ = pkcs12.load_key_and_certificates(blob, EXPORT_PASSWORD.encode())
    assert key is not None and cert is not None


def check_imported(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert data["importCertificate"]["certificate"]["source"] == "IMPORTED"


def check_private_key_read(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert has_private_key(data["certificate"]["privateKeyPem"])


def check_inventory_keys(data: dict[str, Any], variables: dict[str, Any]) -> None:
    edges = data["application"]["certificates"]["edges"]
    assert edges and all(has_private_key(edge["node"]["privateKeyPem"]) for edge in edges)


def check_application_audit(data: dict[str, Any], variables: dict[str, Any]) -> None:
    nodes = [edge["node"] for edge in data["auditEvents"]["edges"]]
    assert any(node["action"] == "certificate.issue" for node in nodes)
    assert all(node["applicationId"] == variables["id"] for node in nodes)


# The matrix --------------------------------------------------------------------------------------------

CA_MUTATION_FIELDS = "{ id name status }"
APP_AUDIT_READERS = app_gate("app_admin", "app_auditor")

OPERATIONS: list[Operation] = [
    # Certificate authorities: Product Admins manage, everyone in the organization reads the metadata.
    Operation(
        "createRootCa",
        f"mutation($input: CreateRootCaInput!) {{ createRootCa(input: $input) {CA_MUTATION_FIELDS} }}",
        PRODUCT_ADMIN_CREATES,
        new_root_input,
    ),
    Operation(
        "createIntermediateCa",
        "mutation($input: CreateIntermediateCaInput!) "
        f"{{ createIntermediateCa(input: $input) {CA_MUTATION_FIELDS} }}",
        PRODUCT_ADMIN_CHANGES,
        intermediate_under_acme_root,
    ),
    Operation(
        "createExternalIntermediateCa",
        "mutation($input: CreateExternalIntermediateCaInput!) "
        "{ createExternalIntermediateCa(input: $input) { id status csrPem } }",
        PRODUCT_ADMIN_CREATES,
        new_external_input,
    ),
    Operation(
        "importCaCertificate",
        "mutation($input: ImportCaCertificateInput!) "
        f"{{ importCaCertificate(input: $input) {CA_MUTATION_FIELDS} }}",
        PRODUCT_ADMIN_CHANGES,
        pending_ca_signed_outside,
        check=check_ca_active,
    ),
    Operation(
        "disableCa",
        f"mutation($id: ID!) {{ disableCa(id: $id) {CA_MUTATION_FIELDS} }}",
        PRODUCT_ADMIN_CHANGES,
        active_ca,
    ),
    Operation(
        "enableCa",
        f"mutation($id: ID!) {{ enableCa(id: $id) {CA_MUTATION_FIELDS} }}",
        PRODUCT_ADMIN_CHANGES,
        disabled_ca,
    ),
    Operation(
        "certificateAuthority",
        "query($id: ID!) { certificateAuthority(id: $id) { id certificatePem parent { id } } }",
        PKI_METADATA,
        active_ca,
    ),
    Operation("certificateAuthorities", "{ certificateAuthorities { id name } }", ANY_PRINCIPAL),
    # Policies
    Operation(
        "createPolicy",
        "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id rules } }",
        PRODUCT_ADMIN_CREATES,
        new_policy_input,
    ),
    Operation(
        "updatePolicy",
        'mutation($id: ID!) { updatePolicy(id: $id, input: {description: "changed"}) { id description } }',
        PRODUCT_ADMIN_CHANGES,
        acme_policy,
    ),
    Operation(
        "deletePolicy",
        "mutation($id: ID!) { deletePolicy(id: $id) }",
        PRODUCT_ADMIN_CHANGES,
        unused_policy,
    ),
    Operation(
        "certificatePolicy",
        "query($id: ID!) { certificatePolicy(id: $id) { id rules } }",
        PKI_METADATA,
        acme_policy,
    ),
    # Profiles
    Operation(
        "createProfile",
        "mutation($input: CreateProfileInput!) { createProfile(input: $input) { id ca { id } } }",
        PRODUCT_ADMIN_CHANGES,  # the CA and policy named are acme's: another organization cannot see them
        new_profile_input,
    ),
    Operation(
        "updateProfile",
        'mutation($id: ID!) { updateProfile(id: $id, input: {description: "changed"}) { id } }',
        PRODUCT_ADMIN_CHANGES,
        acme_profile,
    ),
    Operation(
        "deleteProfile",
        "mutation($id: ID!) { deleteProfile(id: $id) { id deletedAt } }",
        PRODUCT_ADMIN_CHANGES,
        acme_profile,
    ),
    Operation(
        "certificateProfile",
        "query($id: ID!) { certificateProfile(id: $id) { id ca { id } policy { id } } }",
        PKI_METADATA,
        acme_profile,
    ),
    # Certificates of the cast's application (profile attached, issuance really succeeds when allowed).
    Operation(
        "issueCertificate",
        "mutation($input: IssueCertificateInput!) { issueCertificate(input: $input) "
        "{ certificate { id commonName hasPrivateKey privateKeyPem } } }",
        APP_OPERATE,
        issue_request,
        check=check_issued,
    ),
    Operation(
        "renewCertificate",
        "mutation($input: RenewCertificateInput!) { renewCertificate(input: $input) "
        "{ certificate { id status } previous { id status } } }",
        APP_OPERATE,
        renew_request,
        check=check_renewed,
    ),
    Operation(
        "revokeCertificate",
        "mutation($input: RevokeCertificateInput!) { revokeCertificate(input: $input) "
        "{ certificate { id status revocationReason } } }",
        APP_OPERATE,
        revoke_request,
        check=check_revoked,
    ),
    Operation(
        "updateCertificate",
        "mutation($input: UpdateCertificateInput!) { updateCertificate(input: $input) "
        "{ certificate { id metadata } } }",
        APP_OPERATE,
        update_request,
        check=check_updated,
    ),
    Operation(
        "exportCertificate",
        "mutation($input: ExportCertificateInput!) { exportCertificate(input: $input) { filename pem } }",
        APP_READ,
        export_request,
        check=check_export_without_key,
    ),
    Operation(
        "exportCertificate.privateKey",
        "mutation($input: ExportCertificateInput!) { exportCertificate(input: $input) { filename pem } }",
        APP_OPERATE,
        export_with_key_request,
        check=check_export_with_key,
    ),
    Operation(
        "exportCertificate.pkcs12PrivateKey",
        "mutation($input: ExportCertificateInput!) { exportCertificate(input: $input) { pkcs12Base64 } }",
        APP_OPERATE,
        pkcs12_with_key_request,
        check=check_pkcs12_with_key,
    ),
    Operation(
        "importCertificate",
        "mutation($input: ImportCertificateInput!) { importCertificate(input: $input) "
        "{ certificate { id source } } }",
        APP_OPERATE,
        import_request,
        check=check_imported,
    ),
    Operation(
        "certificate",
        "query($id: ID!) { certificate(id: $id) { id serialNumber certificatePem hasPrivateKey } }",
        APP_READ,
        a_certificate,
    ),
    # Secret fields: a server-held private key, by id and through the application's inventory.
    Operation(
        "certificate.privateKeyPem",
        "query($id: ID!) { certificate(id: $id) { id privateKeyPem } }",
        APP_OPERATE,
        a_certificate,
        check=check_private_key_read,
    ),
    Operation(
        "application.certificates.privateKeyPem",
        "query($id: ID!) { application(id: $id) "
        "{ certificates(first: 5) { edges { node { id privateKeyPem } } } } }",
        APP_OPERATE,
        application_with_a_certificate,
        check=check_inventory_keys,
    ),
    # The audit log: the organization's for Product Admins (another organization's admin reads theirs);
    # an application's for its Admins and Auditors. Operators and members outside it: refused.
    Operation(
        "auditEvents",
        "{ auditEvents(first: 20) { edges { node { id action applicationId } } } }",
        PRODUCT_ADMIN_CREATES,
    ),
    Operation(
        "auditEvents.application",
        "query($id: ID!) { auditEvents(applicationId: $id, first: 50) "
        "{ edges { node { id action applicationId details } } } }",
        APP_AUDIT_READERS,
        application_with_a_certificate,
        check=check_application_audit,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in OPERATIONS for role in CAST_ROLES]
ALL_OPERATIONS = [
    *IDENTITY_AND_APPLICATION_OPERATIONS,
    *OPERATIONS,
    *ALERT_OPERATIONS,
    *ACME_OPERATIONS,
    *EST_OPERATIONS,
    *SCEP_OPERATIONS,
    *APPROVAL_OPERATIONS,
    *SYNC_OPERATIONS,
    *LEGACY_IMPORT_OPERATIONS,
    *MIGRATION_OPERATIONS,
]


def test_every_row_names_every_role() -> None:
    check_rows(ALL_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)


# Coverage: every mutation and every secret field of the live schema has rows ------------------------------

# Mutations deliberately left out of the matrix, with the reason. None today: even the public `login` has a
# row (everyone may call it). Add an entry only for a mutation no caller role can change the outcome of.
EXEMPT_MUTATIONS: dict[str, str] = {}

# Output fields that carry a secret, and why. A field whose name looks secret must be listed here (and so
# get rows) before the suite passes; a listed field must have a row selecting it.
SECRET_FIELDS: dict[str, str] = {
    "Certificate.privateKeyPem": "the PKCS#8 key of a server-generated certificate",
    "ExportCertificatePayload.pem": "holds the private key when includePrivateKey is set",
    "ExportCertificatePayload.pkcs12Base64": "holds the private key when includePrivateKey is set",
    "CreateApiTokenPayload.token": "the plaintext API token, shown once to its creator",
    "LoginPayload.token": "the plaintext session token, shown once to who logged in",
    "AcmeEnrollment.eabHmacKey": "the ACME external account binding HMAC key (application Admins)",
    "ScepChallenge.challenge": "a dynamic SCEP challenge, shown once to its creator (Operators, Admins)",
}
SECRET_LOOKING = re.compile(
    r"private|secret|password|passphrase|hmac|credential|challenge|pkcs12|keyPem|Key$|^token$|Token$", re.I
)


def _covered() -> set[str]:
    coordinates: set[str] = set()
    for operation in ALL_OPERATIONS:
        coordinates |= field_coordinates(operation.document)
    return coordinates


def _object_fields() -> dict[str, Any]:
    """Every `Type.field` of the schema's object types (introspection types excluded)."""
    fields: dict[str, Any] = {}
    for type_name, named in GRAPHQL_SCHEMA.type_map.items():
        if isinstance(named, GraphQLObjectType) and not type_name.startswith("__"):
            for field_name, field in named.fields.items():
                fields[f"{type_name}.{field_name}"] = field
    return fields


def test_every_mutation_has_a_row() -> None:
    mutation_type = GRAPHQL_SCHEMA.mutation_type
    assert mutation_type is not None
    live = set(mutation_type.fields)
    covered = {coordinate.split(".", 1)[1] for coordinate in _covered() if coordinate.startswith("Mutation.")}
    assert len(live) > 30
    assert sorted(live - covered - set(EXEMPT_MUTATIONS)) == [], "mutations without a row in the matrix"
    assert sorted(set(EXEMPT_MUTATIONS) - live) == [], "exemptions for mutations that no longer exist"
    assert sorted(set(EXEMPT_MUTATIONS) & covered) == [], "a mutation with rows needs no exemption"


def test_every_secret_field_is_declared_and_has_a_row() -> None:
    fields = _object_fields()
    secret_looking = {
        coordinate
        for coordinate, field in fields.items()
        if SECRET_LOOKING.search(coordinate.split(".", 1)[1]) and get_named_type(field.type).name == "String"
    }
    assert sorted(secret_looking - set(SECRET_FIELDS)) == [], (
        "secret-looking fields: add them to SECRET_FIELDS"
    )
    assert sorted(set(SECRET_FIELDS) - set(fields)) == [], "SECRET_FIELDS names fields the schema lacks"
    assert sorted(set(SECRET_FIELDS) - _covered()) == [], "secret fields no matrix row selects"


def test_no_field_reaches_a_ca_private_key() -> None:
    """CAs expose their certificate, chain and CSR (all public); nothing names or carries their key."""
    ca_type = GRAPHQL_SCHEMA.get_type("CertificateAuthority")
    assert isinstance(ca_type, GraphQLObjectType)
    for name in ca_type.fields:
        lowered = name.lower()
        assert not any(word in lowered for word in ("private", "secret", "seal", "encrypt", "kek")), name
        assert "key" not in lowered or name == "keyAlgorithm", name
    # Nor does any other type offer a CA's key under another name (caPrivateKey, issuerKeyPem, ...).
    for coordinate in _object_fields():
        field_name = coordinate.split(".", 1)[1]
        assert not re.search(r"(ca|authority|issuer).*key", field_name, re.I), coordinate


async def test_ca_answers_carry_no_key_material(gql: GraphQL, cast: Cast) -> None:
    """Every CA field, for a root, an issuing CA and a pending external one, read by the Product Admin."""
    await acme_pki(cast)
    await ca_service.create_external_intermediate_ca(
        actor=system(cast), name="pending", subject="CN=Pending", key_algorithm="EC_P256", path_length=0
    )
    ca_type = GRAPHQL_SCHEMA.get_type("CertificateAuthority")
    assert isinstance(ca_type, GraphQLObjectType)
    scalars = " ".join(name for name, field in ca_type.fields.items() if name != "parent")
    data = await gql(
        f"{{ certificateAuthorities {{ {scalars} parent {{ id }} }} }}", token=cast.token("product_admin")
    )
    assert len(data["certificateAuthorities"]) == 3
    text = json.dumps(data)
    assert "PRIVATE KEY" not in text and "ENCRYPTED" not in text
    for row in await CertificateAuthority.all():
        sealed = base64.b64encode(bytes(row.encrypted_private_key)).decode()
        assert sealed[:40] not in text and bytes(row.encrypted_private_key).hex()[:40] not in text


# Secrets beyond the matrix ---------------------------------------------------------------------------------

EXPORT_WITH_KEY = (
    "mutation($id: ID!) { exportCertificate(input: {certificateId: $id, includePrivateKey: true}) { pem } }"
)
EXPORT_PKCS12_WITH_KEY = (
    "mutation($id: ID!) { exportCertificate(input: {certificateId: $id, includePrivateKey: true, "
    f'format: PKCS12, password: "{EXPORT_PASSWORD}"}}) {{ pkcs12Base64 }} }}'
)
INVENTORY_KEYS = (
    "query($id: ID!) { application(id: $id) { certificates(first: 5) { edges { node { privateKeyPem } } } } }"
)
APPLICATION_AS_AUDITOR = (
    "query($id: ID!) { application(id: $id) { id name "
    "members { role principal { name } } "
    "profiles { id api { enabled autoRenew renewBeforeDays } profile { name ca { name certificatePem } "
    "policy { name rules } } } "
    "certificates(first: 50) { edges { node { " + CERTIFICATE_FIELDS + " application { name } } } } } }"
)
APPLICATION_AUDIT = (
    "query($id: ID!) { auditEvents(applicationId: $id, first: 100) { edges { node "
    "{ id action actorName applicationId resourceType resourceId outcome details entryHash } } } }"
)


async def test_an_auditor_reads_everything_of_the_application_but_never_a_secret(
    gql: GraphQL, cast: Cast
) -> None:
    certificate = await issued_certificate(cast)
    operator = cast.token("app_operator")
    key_pem = (
        await gql(
            "query($id: ID!) { certificate(id: $id) { privateKeyPem } }",
            {"id": str(certificate.id)},
            token=operator,
        )
    )["certificate"]["privateKeyPem"]
    assert has_private_key(key_pem)
    exported = await gql(EXPORT_WITH_KEY, {"id": str(certificate.id)}, token=operator)
    assert has_private_key(exported["exportCertificate"]["pem"])
    await gql(EXPORT_PKCS12_WITH_KEY, {"id": str(certificate.id)}, token=operator)
    key_body = "".join(key_pem.strip().splitlines()[1:-1])

    auditor = cast.token("app_auditor")
    app_id = {"id": str(cast.application_id)}
    application = (await gql(APPLICATION_AS_AUDITOR, app_id, token=auditor))["application"]
    assert {member["role"] for member in application["members"]} == {"ADMIN", "OPERATOR", "AUDITOR"}
    assert len(application["profiles"]) == 1 and application["profiles"][0]["api"]["enabled"] is True
    nodes = [edge["node"] for edge in application["certificates"]["edges"]]
    assert [node["id"] for node in nodes] == [str(certificate.id)] and nodes[0]["hasPrivateKey"] is True
    events = [
        edge["node"] for edge in (await gql(APPLICATION_AUDIT, app_id, token=auditor))["auditEvents"]["edges"]
    ]
    actions = {event["action"] for event in events}
    # The auditor sees that the key was read and exported, not the key.
    assert {"certificate.issue", "certificate.private_key_read", "certificate.export"} <= actions
    exported_plain = await gql(
        "mutation($id: ID!) { exportCertificate(input: {certificateId: $id}) { pem } }",
        {"id": str(certificate.id)},
        token=auditor,
    )
    for answer in (application, events, exported_plain):
        text = json.dumps(answer)
        assert "PRIVATE KEY" not in text and key_body[:48] not in text and EXPORT_PASSWORD not in text

    # Every path to the key is closed to the auditor, and each refusal is FORBIDDEN (it sees the app).
    refused = [
        ("query($id: ID!) { certificate(id: $id) { privateKeyPem } }", {"id": str(certificate.id)}),
        (INVENTORY_KEYS, app_id),
        (
            "query($id: ID!) { certificate(id: $id) { application { certificates(first: 5) "
            "{ edges { node { privateKeyPem } } } } } }",
            {"id": str(certificate.id)},
        ),
        (EXPORT_WITH_KEY, {"id": str(certificate.id)}),
        (EXPORT_PKCS12_WITH_KEY, {"id": str(certificate.id)}),
    ]
    for document, variables in refused:
        body = await gql.raw(document, variables, token=auditor)
        assert [error["extensions"]["code"] for error in body["errors"]] == [FORBIDDEN], document
        assert "PRIVATE KEY" not in json.dumps(body), document


async def test_a_minted_token_is_shown_once_and_only_to_its_creator(gql: GraphQL, cast: Cast) -> None:
    """The plaintext is in createApiToken's answer alone; no other field or audit entry carries it."""
    admin = cast.token("product_admin")
    robot_id, _ = await create_principal_with_token(cast.organization_id, "robot", "member", kind="machine")
    created = (
        await gql(
            'mutation($id: ID!) { createApiToken(input: {principalId: $id, name: "ci"}) '
            "{ token apiToken { id prefix } } }",
            {"id": str(robot_id)},
            token=admin,
        )
    )["createApiToken"]
    plaintext, prefix = created["token"], created["apiToken"]["prefix"]
    assert plaintext.startswith(prefix) and len(plaintext) > len(prefix) + 20
    # The token acts as the robot, not as the admin who minted it.
    viewer = (await gql("{ viewer { name kind productRole } }", token=plaintext))["viewer"]
    assert viewer == {"name": "robot", "kind": "machine", "productRole": "member"}
    # Nowhere else: not in the robot's token list, the organization's audit log, or the principals.
    secret_part = plaintext[len(prefix) :]
    for document, token in [
        ("{ viewer { tokens { id name prefix kind createdAt lastUsedAt } } }", plaintext),
        ("{ auditEvents(first: 100) { edges { node { action details } } } }", admin),
        ("{ machineIdentities { id name } users { id name email } }", admin),
    ]:
        text = json.dumps(await gql(document, token=token))
        assert secret_part not in text, document
    api_token_type = GRAPHQL_SCHEMA.get_type("ApiToken")
    assert isinstance(api_token_type, GraphQLObjectType)
    assert set(api_token_type.fields) == {
        "id",
        "name",
        "prefix",
        "kind",
        "createdAt",
        "expiresAt",
        "revokedAt",
        "lastUsedAt",
    }
    # Only a Product Admin mints for someone else: an application Admin cannot for its own Operator.
    with pytest.raises(GraphQLError) as caught:
        await gql(
            'mutation($id: ID!) { createApiToken(input: {principalId: $id, name: "x"}) { token } }',
            {"id": str(cast.principal_ids["app_operator"])},
            token=cast.token("app_admin"),
        )
    assert caught.value.codes == [FORBIDDEN]


async def test_audit_events_answer_only_within_their_scope(gql: GraphQL, cast: Cast) -> None:
    """Product Admin: the organization; application readers: their application; another org: nothing."""
    await issued_certificate(cast)
    await ca_service.create_root_ca(
        actor=system(cast),
        name="org-level",
        subject="CN=Org",
        key_algorithm="EC_P256",
        validity="1y",
        path_length=None,
    )
    foreign = await gql("{ auditEvents(first: 100) { edges { node { id } } } }", token=cast.token("foreign"))
    everything = (
        await gql(
            "{ auditEvents(first: 100) { edges { node { action applicationId } } } }",
            token=cast.token("product_admin"),
        )
    )["auditEvents"]["edges"]
    application_ids = {edge["node"]["applicationId"] for edge in everything}
    assert str(cast.application_id) in application_ids and None in application_ids  # CA creation is org-level
    assert foreign["auditEvents"]["edges"] == []
    for role in ("app_admin", "app_auditor"):
        edges = (await gql(APPLICATION_AUDIT, {"id": str(cast.application_id)}, token=cast.token(role)))[
            "auditEvents"
        ]["edges"]
        assert edges and {edge["node"]["applicationId"] for edge in edges} == {str(cast.application_id)}
        assert len(edges) < len(everything)
    with pytest.raises(GraphQLError) as caught:
        await gql(APPLICATION_AUDIT, {"id": str(cast.other_application_id)}, token=cast.token("app_admin"))
    assert caught.value.codes == [NOT_FOUND]
