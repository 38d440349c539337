"""Test data builders: organizations, principals with roles, a CA hierarchy with policy and profile, and
applications with profiles attached, written straight to the database (no service in between)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from core import authn, runtime
from core.ca import issuer_urls
from models import (
    Application,
    ApplicationMembership,
    ApplicationProfile,
    CertificateAuthority,
    CertificatePolicy,
    CertificateProfile,
    Organization,
    Principal,
    ProductMembership,
)
from models.enums import ApplicationRole, CaKind, CaStatus, PrincipalKind, ProductRole, TokenKind
from pki import sealing
from pki.certificate import build_root_ca, certificate_pem, describe_certificate, sign_ca_certificate
from pki.csr import build_csr
from pki.key import KeyAlgorithm, PrivateKey, generate_private_key, serialize_private_key
from pki.name import build_name
from pki.san import SubjectAltName, parse_san

_KEYS: dict[tuple[KeyAlgorithm, str], PrivateKey] = {}

# Any DNS name under example.com (any depth, wildcards too), IPs in 10/8, server and client auth.
DEFAULT_RULES: dict[str, Any] = {
    "subject": [{"type": "CN", "allowed": ["**.example.com", "*.example.com", "example.com"]}, {"type": "O"}],
    "sans": [
        {"type": "DNS", "allowed": ["**.example.com", "*.example.com", "example.com"]},
        {"type": "IP", "allowed": ["10.0.0.0/8"]},
    ],
    "extendedKeyUsages": {"allowed": ["serverAuth", "clientAuth"]},
    "maxValidity": "397d",
}


def cached_key(algorithm: KeyAlgorithm, role: str) -> PrivateKey:
    """One key per (algorithm, role) per run: RSA generation is slow and these keys are throwaway."""
    if (algorithm, role) not in _KEYS:
        _KEYS[(algorithm, role)] = generate_private_key(algorithm)
    return _KEYS[(algorithm, role)]


@dataclass
class Pki:
    root: CertificateAuthority
    intermediate: CertificateAuthority
    policy: CertificatePolicy
    profile: CertificateProfile
    root_certificate: x509.Certificate
    intermediate_certificate: x509.Certificate


@dataclass
class Member:
    principal: Principal
    token: str


def _ca_row(
    *,
    ca_id: uuid.UUID,
    org: Organization,
    name: str,
    kind: CaKind,
    parent: CertificateAuthority | None,
    key: PrivateKey,
    cert: x509.Certificate,
    algorithm: KeyAlgorithm,
) -> CertificateAuthority:
    facts = describe_certificate(cert)
    return CertificateAuthority(
        id=ca_id,
        organization_id=org.id,
        name=name,
        kind=kind,
        parent_id=parent.id if parent else None,
        status=CaStatus.ACTIVE,
        key_algorithm=algorithm.value,
        subject_dn=facts.subject_dn,
        path_length=facts.path_length,
        certificate_pem=certificate_pem(cert),
        encrypted_private_key=sealing.seal(
            kek=runtime.kek(), plaintext=serialize_private_key(key), context=f"ca:{ca_id}".encode()
        ),
        serial_hex=facts.serial_hex,
        not_before=facts.not_before,
        not_after=facts.not_after,
    )


async def make_pki(
    org: Organization,
    *,
    key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
    rules: dict[str, Any] | None = None,
    name: str | None = None,
    default_validity: str = "90d",
    default_key_algorithm: str = "EC_P256",
    default_subject: list[list[str]] | None = None,
    default_key_usages: list[str] | None = None,
    default_extended_key_usages: list[str] | None = None,
) -> Pki:
    """Root → intermediate (issuing) CA, a policy (DEFAULT_RULES unless given) and a profile on them."""
    label = name or f"{key_algorithm.value.lower()}-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    root_key = cached_key(key_algorithm, "root")
    root_cert = build_root_ca(
        key=root_key,
        subject=build_name([("O", "Keyward Test"), ("CN", f"Root {label}")]),
        not_after=now + timedelta(days=3650),
        path_length=None,
    )
    root_id = uuid.uuid4()
    root = _ca_row(
        ca_id=root_id,
        org=org,
        name=f"root-{label}",
        kind=CaKind.ROOT,
        parent=None,
        key=root_key,
        cert=root_cert,
        algorithm=key_algorithm,
    )
    await root.save(force_create=True)
    intermediate_key = cached_key(key_algorithm, "intermediate")
    intermediate_id = uuid.uuid4()
    intermediate_cert = sign_ca_certificate(
        issuer_cert=root_cert,
        issuer_key=root_key,
        public_key=intermediate_key.public_key(),
        subject=build_name([("O", "Keyward Test"), ("CN", f"Issuing {label}")]),
        not_after=now + timedelta(days=1825),
        path_length=0,
        urls=issuer_urls(root_id),
    )
    intermediate = _ca_row(
        ca_id=intermediate_id,
        org=org,
        name=f"issuing-{label}",
        kind=CaKind.INTERMEDIATE,
        parent=root,
        key=intermediate_key,
        cert=intermediate_cert,
        algorithm=key_algorithm,
    )
    await intermediate.save(force_create=True)
    policy = await CertificatePolicy.create(
        organization_id=org.id, name=f"policy-{label}", rules=DEFAULT_RULES if rules is None else rules
    )
    profile = await CertificateProfile.create(
        organization_id=org.id,
        name=f"profile-{label}",
        ca_id=intermediate.id,
        policy_id=policy.id,
        default_validity=default_validity,
        default_key_algorithm=default_key_algorithm,
        default_subject=default_subject or [],
        default_key_usages=default_key_usages or [],
        default_extended_key_usages=default_extended_key_usages or [],
    )
    return Pki(root, intermediate, policy, profile, root_cert, intermediate_cert)


async def make_application(
    org: Organization,
    *,
    name: str | None = None,
    profiles: list[CertificateProfile] | None = None,
    api_enabled: bool = True,
    api_auto_renew: bool = False,
    api_renew_before_days: int | None = None,
) -> Application:
    application = await Application.create(organization_id=org.id, name=name or f"app-{uuid.uuid4().hex[:8]}")
    for profile in profiles or []:
        await attach(
            application,
            profile,
            api_enabled=api_enabled,
            api_auto_renew=api_auto_renew,
            api_renew_before_days=api_renew_before_days,
        )
    return application


async def attach(
    application: Application, profile: CertificateProfile, **settings: Any
) -> ApplicationProfile:
    return await ApplicationProfile.create(application_id=application.id, profile_id=profile.id, **settings)


async def make_member(
    org: Organization,
    *,
    product_role: ProductRole = ProductRole.MEMBER,
    applications: dict[Application, ApplicationRole] | None = None,
    kind: PrincipalKind = PrincipalKind.USER,
) -> Member:
    """A principal with a product role and application roles, and a bearer token for it."""
    label = uuid.uuid4().hex[:8]
    principal = await Principal.create(
        organization_id=org.id,
        kind=kind,
        name=f"{kind.value}-{label}",
        email=f"{label}@{org.name}.test" if kind == PrincipalKind.USER else None,
    )
    await ProductMembership.create(organization_id=org.id, principal_id=principal.id, role=product_role)
    for application, role in (applications or {}).items():
        await ApplicationMembership.create(
            application_id=application.id, principal_id=principal.id, role=role
        )
    token, _ = await authn.create_token(principal=principal, kind=TokenKind.API, name="test")
    return Member(principal, token)


async def make_org(name: str | None = None) -> tuple[Organization, Member]:
    """A second organization with its own Product Admin."""
    org = await Organization.create(name=name or f"org-{uuid.uuid4().hex[:8]}")
    admin = await make_member(org, product_role=ProductRole.ADMIN)
    return org, admin


def make_csr_pem(
    algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
    *,
    common_name: str | None = "www.example.com",
    sans: list[str] | None = None,
    key: PrivateKey | None = None,
) -> tuple[str, PrivateKey]:
    """A PEM CSR (and its key) for `common_name` and `sans` ("DNS:…", "IP:…" or bare names)."""
    key = key or cached_key(algorithm, "leaf")
    san_list: list[SubjectAltName] = [parse_san(value) for value in (sans or [])]
    subject = [("CN", common_name)] if common_name else []
    csr = build_csr(key=key, subject=subject, sans=san_list)
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii"), key


@dataclass
class Scene:
    """An organization with a P-256 (or other) PKI, one application using its profile, and members."""

    org: Organization
    admin_token: str
    pki: Pki
    application: Application
    operator: Member
    auditor: Member
    outsider: Member  # Product Member of the organization, not in the application


async def make_scene(
    organization_id: uuid.UUID,
    admin_token: str,
    *,
    key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
    rules: dict[str, Any] | None = None,
    **profile_settings: Any,
) -> Scene:
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org, key_algorithm=key_algorithm, rules=rules, **profile_settings)
    application = await make_application(org, profiles=[pki.profile])
    operator = await make_member(org, applications={application: ApplicationRole.OPERATOR})
    auditor = await make_member(org, applications={application: ApplicationRole.AUDITOR})
    outsider = await make_member(org)
    return Scene(org, admin_token, pki, application, operator, auditor, outsider)


CERTIFICATE_FIELDS = """
    id serialNumber commonName subjectDn sans { type value } keyAlgorithm signatureAlgorithm
    notBefore notAfter status source enrollmentMethod autoRenew renewBeforeDays
    revokedAt revocationReason certificatePem chainPem fingerprintSha256 keyUsages extendedKeyUsages
    metadata hasPrivateKey renewedFrom { id } renewedBy { id }
"""

ISSUE = (
    "mutation($input: IssueCertificateInput!) { issueCertificate(input: $input) { certificate { "
    + CERTIFICATE_FIELDS
    + " } } }"
)
RENEW = (
    "mutation($input: RenewCertificateInput!) { renewCertificate(input: $input) { "
    "certificate { " + CERTIFICATE_FIELDS + " } previous { id status renewedBy { id } } } }"
)
REVOKE = (
    "mutation($input: RevokeCertificateInput!) { revokeCertificate(input: $input) { certificate { "
    + CERTIFICATE_FIELDS
    + " } } }"
)
EXPORT = (
    "mutation($input: ExportCertificateInput!) { exportCertificate(input: $input) "
    "{ filename pem pkcs12Base64 } }"
)
IMPORT = (
    "mutation($input: ImportCertificateInput!) { importCertificate(input: $input) { certificate { "
    + CERTIFICATE_FIELDS
    + " } } }"
)
CERTIFICATE = "query($id: ID!) { certificate(id: $id) { " + CERTIFICATE_FIELDS + " } }"


def issue_input(scene: Scene, **fields: Any) -> dict[str, Any]:
    return {
        "input": {
            "applicationId": str(scene.application.id),
            "profileId": str(scene.pki.profile.id),
            **fields,
        }
    }


async def row_counts() -> dict[str, int]:
    """Certificates, successful audit entries and outbox events: a refused request must add none."""
    from models import AuditEvent, Certificate, OutboxEvent
    from models.enums import AuditOutcome

    return {
        "certificates": await Certificate.all().count(),
        "audit_success": await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).count(),
        "outbox": await OutboxEvent.all().count(),
    }
