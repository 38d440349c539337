"""`keyward demo`: a working organization in one command, so a newcomer issues a certificate within a minute.

Idempotent: each piece is looked up by name and created only when missing. Every run prints a fresh
token for the demo Product Admin (tokens are stored hashed, so an old one cannot be shown again).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from core import application as application_service
from core import authn, runtime
from core import ca as ca_service
from core import est as est_service
from core import policy as policy_service
from core import profile as profile_service
from core import scep as scep_service
from core.acme_account import acme_url
from core.authz import Actor
from core.bootstrap import init_organization
from models import (
    Application,
    ApplicationProfile,
    CertificateAuthority,
    CertificatePolicy,
    CertificateProfile,
    Organization,
    Principal,
)
from models.enums import TokenKind

DEMO_ORG = "demo"
DEMO_ADMIN_EMAIL = "admin@demo.example.com"
DEMO_APPLICATION = "payments-api"
DEMO_PROFILE = "tls-server"
DEMO_EST_USERNAME = "est-demo"

TLS_SERVER_RULES: dict[str, Any] = {
    "subject": [{"type": "CN", "allowed": ["example.com", "**.example.com"]}],
    "sans": [{"type": "DNS", "allowed": ["example.com", "**.example.com"]}],
    "extendedKeyUsages": {"allowed": ["serverAuth", "clientAuth"]},
    "keyAlgorithms": ["EC_P256", "EC_P384", "RSA_2048", "RSA_3072", "RSA_4096", "ED25519"],
    "maxValidity": "90d",
    "allowCa": False,
}


async def setup_demo() -> dict[str, Any]:
    org = await Organization.get_or_none(name=DEMO_ORG)
    if org is None:
        org, admin, _ = await init_organization(org_name=DEMO_ORG, admin_email=DEMO_ADMIN_EMAIL)
    else:
        admin = await Principal.get(email=DEMO_ADMIN_EMAIL)
    actor = Actor.system(org.id, "keyward demo")

    root = await CertificateAuthority.get_or_none(organization_id=org.id, name="demo-root")
    if root is None:
        root = await ca_service.create_root_ca(
            actor=actor,
            name="demo-root",
            subject="CN=Keyward Demo Root CA,O=Keyward Demo",
            key_algorithm="EC_P256",
            validity="10y",
            path_length=1,
        )
    issuing = await CertificateAuthority.get_or_none(organization_id=org.id, name="demo-issuing")
    if issuing is None:
        issuing = await ca_service.create_intermediate_ca(
            actor=actor,
            name="demo-issuing",
            parent_ca_id=root.id,
            subject="CN=Keyward Demo Issuing CA,O=Keyward Demo",
            key_algorithm="EC_P256",
            validity="5y",
            path_length=0,
        )
    policy = await CertificatePolicy.get_or_none(organization_id=org.id, name=DEMO_PROFILE)
    if policy is None:
        policy = await policy_service.create_policy(
            actor=actor,
            name=DEMO_PROFILE,
            description="TLS server names anywhere under example.com, 90 days at most",
            rules=TLS_SERVER_RULES,
        )
    profile = await CertificateProfile.get_or_none(organization_id=org.id, name=DEMO_PROFILE)
    if profile is None:
        profile = await profile_service.create_profile(
            actor=actor,
            name=DEMO_PROFILE,
            ca_id=issuing.id,
            policy_id=policy.id,
            description="TLS server certificates from the demo issuing CA",
            defaults=profile_service.ProfileDefaults(
                validity="90d",
                key_algorithm="EC_P256",
                extended_key_usages=("serverAuth",),
                renew_before_days=30,
            ),
        )
    application = await Application.get_or_none(organization_id=org.id, name=DEMO_APPLICATION)
    if application is None:
        application = await application_service.create_application(
            actor=actor, name=DEMO_APPLICATION, description="The demo payments service"
        )
    if not await ApplicationProfile.exists(application_id=application.id, profile_id=profile.id):
        await application_service.attach_profile(
            actor=actor,
            application_id=application.id,
            profile_id=profile.id,
            api=application_service.ApiEnrollmentSettings(enabled=True, auto_renew=True),
        )
    acme = await _enable_acme(actor, application.id, profile.id, org.id)
    est = await _enable_est(actor, application.id, profile.id)
    scep = await _enable_scep(actor, application.id, profile.id)
    token, _ = await authn.create_token(principal=admin, kind=TokenKind.API, name="demo")
    public_url = runtime.settings().public_url
    return {
        "graphql_url": f"{public_url}/graphql",
        "admin_email": DEMO_ADMIN_EMAIL,
        "admin_token": token,
        "organization_id": str(org.id),
        "root_ca_id": str(root.id),
        "ca_id": str(issuing.id),
        "policy_id": str(policy.id),
        "profile_id": str(profile.id),
        "application_id": str(application.id),
        "acme": acme,
        "est": est,
        "scep": scep,
    }


async def _enable_acme(
    actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID, organization_id: uuid.UUID
) -> dict[str, str | None]:
    """ACME on for the demo pair (EAB required), so certbot/lego work against the demo as printed."""
    attachment = await application_service.enable_acme(
        actor=actor, application_id=application_id, profile_id=profile_id
    )
    return {
        "directory_url": acme_url(attachment, "directory"),
        "eab_kid": application_service.acme_eab_kid(
            actor=actor, attachment=attachment, organization_id=organization_id
        ),
        "eab_hmac_key": application_service.acme_eab_hmac_key(
            actor=actor, attachment=attachment, organization_id=organization_id
        ),
    }


async def _enable_est(actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID) -> dict[str, str]:
    """EST on for the demo pair with a fresh passphrase each run: only its hash is stored."""
    passphrase = secrets.token_urlsafe(18)
    attachment = await est_service.enable_est(
        actor=actor,
        application_id=application_id,
        profile_id=profile_id,
        username=DEMO_EST_USERNAME,
        passphrase=passphrase,
    )
    base_url = est_service.est_url(attachment)
    return {"base_url": base_url, "username": DEMO_EST_USERNAME, "password": passphrase}


async def _enable_scep(actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID) -> dict[str, str]:
    """SCEP on for the demo pair with a fresh static challenge each run: only its hash is stored.

    The demo CA key is ECDSA: clients that encrypt to every GetCACert certificate (micromdm's scepclient)
    must pick the RA by its SHA-256 fingerprint (`-ca-fingerprint`).
    """
    challenge = secrets.token_hex(16)
    attachment = await scep_service.enable_scep(
        actor=actor,
        application_id=application_id,
        profile_id=profile_id,
        challenge_mode="static",
        static_challenge=challenge,
    )
    return {
        "url": scep_service.scep_url(attachment),
        "challenge": challenge,
        "ra_sha256": scep_service.ra_fingerprint(attachment) or "",
    }
