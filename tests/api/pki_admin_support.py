"""Helpers shared by the shared-PKI tests: a Product Member token, GraphQL snippets, leaf rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import GraphQL
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from core import authn
from core.ca import SigningMaterial
from models import Certificate, Principal, ProductMembership
from models.enums import (
    CertificateSource,
    CertificateStatus,
    EnrollmentMethod,
    PrincipalKind,
    ProductRole,
    TokenKind,
)
from pki.certificate import certificate_pem, describe_certificate, sign_leaf_certificate
from pki.key import KeyAlgorithm, generate_private_key
from pki.san import make_san

CA_FIELDS = """
    id name kind status keyAlgorithm subjectDn pathLength externalParent certificatePem chainPem csrPem
    serialNumber notBefore notAfter caCertificateUrl crlUrl ocspUrl parent { id name }
"""


async def member_token(organization_id: uuid.UUID, email: str = "member@acme.test") -> str:
    """A Product Member (read-only on the shared PKI) of the organization."""
    principal = await Principal.create(
        organization_id=organization_id, kind=PrincipalKind.USER, name=email, email=email
    )
    await ProductMembership.create(
        organization_id=organization_id, principal=principal, role=ProductRole.MEMBER
    )
    token, _ = await authn.create_token(principal=principal, kind=TokenKind.API, name="test")
    return token


async def create_root(gql: GraphQL, token: str, **overrides: Any) -> dict[str, Any]:
    variables = {"name": "Acme Root", "subject": "CN=Acme Root CA,O=Acme", "keyAlgorithm": "EC_P256"}
    variables.update(overrides)
    data = await gql(
        f"mutation($input: CreateRootCaInput!) {{ createRootCa(input: $input) {{ {CA_FIELDS} }} }}",
        {"input": variables},
        token=token,
    )
    return dict(data["createRootCa"])


async def create_intermediate(gql: GraphQL, token: str, parent_id: str, **overrides: Any) -> dict[str, Any]:
    variables = {
        "name": "Acme Issuing",
        "parentCaId": parent_id,
        "subject": "CN=Acme Issuing CA,O=Acme",
        "keyAlgorithm": "EC_P256",
    }
    variables.update(overrides)
    data = await gql(
        "mutation($input: CreateIntermediateCaInput!) "
        f"{{ createIntermediateCa(input: $input) {{ {CA_FIELDS} }} }}",
        {"input": variables},
        token=token,
    )
    return dict(data["createIntermediateCa"])


async def issue_leaf_row(
    material: SigningMaterial,
    *,
    organization_id: uuid.UUID,
    common_name: str,
    status: CertificateStatus = CertificateStatus.ACTIVE,
) -> tuple[x509.Certificate, Certificate]:
    """A leaf signed directly with pki functions and its inventory row (issuance is another module's job)."""
    key = generate_private_key(KeyAlgorithm.EC_P256)
    cert = sign_leaf_certificate(
        issuer_cert=material.certificate,
        issuer_key=material.private_key,
        public_key=key.public_key(),
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
        sans=[make_san(san_type="DNS", value=common_name)],
        key_usages=frozenset(),
        extended_key_usages=frozenset({"serverAuth"}),
        not_after=datetime.now(UTC) + timedelta(days=30),
        urls=material.urls,
    )
    facts = describe_certificate(cert)
    row = await Certificate.create(
        organization_id=organization_id,
        ca_id=material.ca_id,
        serial_hex=facts.serial_hex,
        common_name=common_name,
        subject_dn=facts.subject_dn,
        key_algorithm=facts.key_algorithm.value,
        signature_algorithm=facts.signature_algorithm,
        not_before=facts.not_before,
        not_after=facts.not_after,
        status=status,
        source=CertificateSource.ISSUED,
        enrollment_method=EnrollmentMethod.API,
        certificate_pem=certificate_pem(cert),
        chain_pem="".join(certificate_pem(c) for c in material.chain),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )
    return cert, row
