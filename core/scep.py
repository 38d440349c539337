"""SCEP (RFC 8894) per (application, profile) attachment: settings, dynamic challenges, and enrollment.

Settings and challenges are managed through GraphQL by application Admins (enable, update, disable) and
Operators (one-time challenges). Enrollment arrives at api/routes/scep.py, which hands the pkiMessage to
`pki_operation`: the request is verified and decrypted (pki/scep.py), its challenge checked, and the
certificate issued through core.issuance like every other method, so policy, inventory, audit and events
are the usual ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from core import approval, audit, runtime
from core.access import load_application, load_attachment
from core.approval import ApprovalPending
from core.authz import Actor, Permission
from core.ca import SigningMaterial, require_active, signing_material
from core.certificate import RenewalMode, renew_certificate
from core.errors import InvalidInput, InvalidState, KeywardError
from core.issuance import issue_certificate, load_attachment_joined, parse_request_csr, with_common_name_san
from core.legacy import rules as legacy_rules
from core.legacy.endpoints import is_legacy_attachment
from core.password_checks import verify_off_loop
from models import (
    ApplicationProfile,
    ApprovalRequest,
    Certificate,
    CertificateAuthority,
    ScepChallenge,
    ScepTransaction,
)
from models.enums import AuditOutcome, CertificateStatus, EnrollmentMethod
from pki import errors as pki_errors
from pki import scep as pki_scep
from pki import sealing
from pki.certificate import (
    certificate_pem,
    load_certificate,
    serial_hex,
    sign_leaf_certificate,
    verify_issued_by,
)
from pki.est import reenroll_mismatch as renewal_mismatch  # RFC 7030's rule, the same for SCEP
from pki.key import KeyAlgorithm, generate_private_key, serialize_private_key
from pki.scep import FailInfo, MessageType, PkiStatus, ReplyTo, ScepError

logger = logging.getLogger(__name__)

CHALLENGE_MODES = ("static", "dynamic")
MIN_STATIC_CHALLENGE = 8
MAX_STATIC_CHALLENGE = 255
MIN_CHALLENGE_TTL = 60
MAX_CHALLENGE_TTL = 30 * 24 * 3600
MAX_PENDING_LIMIT = 10_000
RA_VALIDITY = timedelta(days=730)
# An RA certificate this close to its end is replaced at the next enable or update.
RA_RENEW_BEFORE = timedelta(days=30)
CONTENT_TYPE_CA_RA = "application/x-x509-ca-ra-cert"
CONTENT_TYPE_PKI_MESSAGE = "application/x-pki-message"

_hasher = PasswordHasher()
# Successful static-challenge checks, keyed by (attachment, stored hash, SHA-256 of the challenge): argon2
# costs tens of milliseconds, and every enrollment of a static-challenge pair presents the same password.
# A changed challenge has a new stored hash, so old entries never match again.
_verified_static: OrderedDict[tuple[uuid.UUID, str, bytes], None] = OrderedDict()
_VERIFIED_STATIC_MAX = 1024
# Unsealed RA material per attachment, keyed by the sealed blob it came from.
_ra_cache: dict[uuid.UUID, tuple[bytes, RaMaterial]] = {}


@dataclass(frozen=True)
class RaMaterial:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class ScepSettings:
    challenge_mode: str = "static"
    challenge_ttl_seconds: int = 3600
    max_pending_challenges: int = 100
    include_ca: bool = True
    allow_renewal: bool = True


@dataclass(frozen=True)
class GeneratedChallenge:
    """A dynamic challenge: the text is shown once, only the hash is kept."""

    id: uuid.UUID
    challenge: str
    expires_at: datetime


class ScepNotFound(Exception):
    """No SCEP endpoint at this URL (unknown pair, or SCEP disabled): HTTP 404."""


class ScepBadRequest(Exception):
    """A request that cannot be answered with a CertRep: HTTP 400 with this message."""


def scep_url(attachment: ApplicationProfile) -> str:
    """The pkiclient.exe URL; a legacy profile's (on its container) is `/scep/{profileId}/pkiclient.exe`."""
    base = runtime.settings().public_url.rstrip("/")
    if is_legacy_attachment(attachment):
        return f"{base}/scep/{attachment.profile_id}/pkiclient.exe"
    return (
        f"{base}/scep/applications/{attachment.application_id}/profiles/{attachment.profile_id}/pkiclient.exe"
    )


def ra_fingerprint(attachment: ApplicationProfile) -> str | None:
    """SHA-256 of the RA certificate in hex, for clients that select their recipient by fingerprint."""
    if attachment.scep_ra_certificate_pem is None:
        return None
    cert = load_certificate(attachment.scep_ra_certificate_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def current_settings(attachment: ApplicationProfile) -> ScepSettings:
    return ScepSettings(
        challenge_mode=attachment.scep_challenge_mode,
        challenge_ttl_seconds=attachment.scep_challenge_ttl_seconds,
        max_pending_challenges=attachment.scep_max_pending_challenges,
        include_ca=attachment.scep_include_ca,
        allow_renewal=attachment.scep_allow_renewal,
    )


def _settings_details(settings: ScepSettings) -> dict[str, Any]:
    return {
        "challenge_mode": settings.challenge_mode,
        "challenge_ttl_seconds": settings.challenge_ttl_seconds,
        "max_pending_challenges": settings.max_pending_challenges,
        "include_ca": settings.include_ca,
        "allow_renewal": settings.allow_renewal,
    }


# ---------------------------------------------------------------- settings


def _check_settings(settings: ScepSettings) -> None:
    if settings.challenge_mode not in CHALLENGE_MODES:
        raise InvalidInput("challengeMode must be STATIC or DYNAMIC", field="challengeMode")
    if not MIN_CHALLENGE_TTL <= settings.challenge_ttl_seconds <= MAX_CHALLENGE_TTL:
        raise InvalidInput(
            f"challengeTtlSeconds must be between {MIN_CHALLENGE_TTL} and {MAX_CHALLENGE_TTL}",
            field="challengeTtlSeconds",
        )
    if not 1 <= settings.max_pending_challenges <= MAX_PENDING_LIMIT:
        raise InvalidInput(
            f"maxPendingChallenges must be between 1 and {MAX_PENDING_LIMIT}", field="maxPendingChallenges"
        )


def hash_static_challenge(challenge: str) -> str:
    if not MIN_STATIC_CHALLENGE <= len(challenge) <= MAX_STATIC_CHALLENGE:
        raise InvalidInput(
            f"the static challenge must be {MIN_STATIC_CHALLENGE} to {MAX_STATIC_CHALLENGE} characters",
            field="staticChallenge",
        )
    if not challenge.isprintable() or challenge != challenge.strip():
        raise InvalidInput(
            "the static challenge must be printable text without leading or trailing spaces",
            field="staticChallenge",
        )
    return _hasher.hash(challenge)


def _ra_context(attachment: ApplicationProfile) -> bytes:
    return f"scep-ra:{attachment.id}".encode()


def _ra_usable(attachment: ApplicationProfile, material: SigningMaterial) -> bool:
    if attachment.scep_ra_certificate_pem is None or attachment.scep_ra_key_encrypted is None:
        return False
    try:
        cert = load_certificate(attachment.scep_ra_certificate_pem)
    except pki_errors.PkiError:
        return False
    if cert.not_valid_after_utc - RA_RENEW_BEFORE <= datetime.now(UTC):
        return False
    return verify_issued_by(cert, material.certificate)


async def _new_ra(attachment: ApplicationProfile, material: SigningMaterial, application_name: str) -> None:
    """An RSA key (clients encrypt to it) and a certificate from the profile's CA for it."""
    key = await asyncio.to_thread(generate_private_key, KeyAlgorithm.RSA_2048)
    profile_name = attachment.profile.name
    subject = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{application_name} {profile_name} SCEP RA"[:64]),
            x509.NameAttribute(x509.NameOID.ORGANIZATIONAL_UNIT_NAME, "Keyward SCEP RA"),
        ]
    )
    try:
        cert = sign_leaf_certificate(
            issuer_cert=material.certificate,
            issuer_key=material.private_key,
            public_key=key.public_key(),
            subject=subject,
            sans=[],
            # certmonger and OpenSSL: digitalSignature to sign CertRep, keyEncipherment to receive envelopes.
            key_usages=frozenset({"digitalSignature", "keyEncipherment"}),
            extended_key_usages=frozenset(),
            not_after=datetime.now(UTC) + RA_VALIDITY,
            urls=material.urls,
        )
    except pki_errors.PkiError as exc:
        raise InvalidState(f"the SCEP RA certificate cannot be issued: {exc.message}") from None
    attachment.scep_ra_certificate_pem = certificate_pem(cert)
    attachment.scep_ra_key_encrypted = sealing.seal(
        kek=runtime.kek(), plaintext=serialize_private_key(key), context=_ra_context(attachment)
    )


async def _load_for_settings(
    actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> tuple[Any, ApplicationProfile]:
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)  # enable, update, disable: read-only when legacy
    return application, await load_attachment(application, profile_id, "profile", "profile__ca")


_SCEP_FIELDS = [
    "scep_enabled",
    "scep_challenge_mode",
    "scep_static_challenge_hash",
    "scep_challenge_ttl_seconds",
    "scep_max_pending_challenges",
    "scep_include_ca",
    "scep_allow_renewal",
    "scep_ra_certificate_pem",
    "scep_ra_key_encrypted",
    "updated_at",
]


async def _configure(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    changes: dict[str, Any],
    static_challenge: str | None,
    enable: bool,
) -> ApplicationProfile:
    application, attachment = await _load_for_settings(actor, application_id, profile_id)
    profile = attachment.profile
    if enable and profile.deleted_at is not None:
        raise InvalidState(f"profile {profile.name!r} is deleted: it issues no new certificates")
    if not enable and not attachment.scep_enabled:
        raise InvalidState("SCEP is not enabled on this attached profile: enable it first")
    before = current_settings(attachment)
    unknown = set(changes) - set(ScepSettings.__dataclass_fields__)
    if unknown:
        raise InvalidInput(f"unknown SCEP settings: {', '.join(sorted(unknown))}")
    after = ScepSettings(**{**before.__dict__, **changes})
    _check_settings(after)
    new_hash = hash_static_challenge(static_challenge) if static_challenge is not None else None
    if (
        after.challenge_mode == "static"
        and new_hash is None
        and attachment.scep_static_challenge_hash is None
    ):
        raise InvalidInput(
            "the static challenge mode needs a staticChallenge (at least 8 characters)",
            field="staticChallenge",
        )
    ca: CertificateAuthority = profile.ca
    require_active(ca)
    material = await signing_material(ca)
    ra_generated = not _ra_usable(attachment, material)
    if ra_generated:
        await _new_ra(attachment, material, application.name)
    was_enabled = attachment.scep_enabled
    attachment.scep_enabled = True
    attachment.scep_challenge_mode = after.challenge_mode
    attachment.scep_challenge_ttl_seconds = after.challenge_ttl_seconds
    attachment.scep_max_pending_challenges = after.max_pending_challenges
    attachment.scep_include_ca = after.include_ca
    attachment.scep_allow_renewal = after.allow_renewal
    if new_hash is not None:
        attachment.scep_static_challenge_hash = new_hash
    details: dict[str, Any] = {
        "profile_id": str(attachment.profile_id),
        "static_challenge_changed": new_hash is not None,
        "ra_certificate_generated": ra_generated,
    }
    if enable:
        action = "application_profile.scep_enable"
        details.update(_settings_details(after), was_enabled=was_enabled)
    else:
        action = "application_profile.scep_update"
        details.update(before=_settings_details(before), after=_settings_details(after))
    async with in_transaction() as conn:
        await attachment.save(using_db=conn, update_fields=_SCEP_FIELDS)
        await audit.record(
            actor=actor,
            action=action,
            resource_type="application_profile",
            resource_id=attachment.id,
            application_id=attachment.application_id,
            details=details,
            connection=conn,
        )
    return attachment


async def enable_scep(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    challenge_mode: str = "static",
    static_challenge: str | None = None,
    challenge_ttl_seconds: int | None = None,
    max_pending_challenges: int | None = None,
    include_ca: bool | None = None,
    allow_renewal: bool | None = None,
) -> ApplicationProfile:
    """Turn SCEP on for the pair; the first enable issues the pair's RA certificate from the profile's CA."""
    changes: dict[str, Any] = {"challenge_mode": challenge_mode}
    for name, value in (
        ("challenge_ttl_seconds", challenge_ttl_seconds),
        ("max_pending_challenges", max_pending_challenges),
        ("include_ca", include_ca),
        ("allow_renewal", allow_renewal),
    ):
        if value is not None:
            changes[name] = value
    return await _configure(
        actor=actor,
        application_id=application_id,
        profile_id=profile_id,
        changes=changes,
        static_challenge=static_challenge,
        enable=True,
    )


async def update_scep(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    changes: dict[str, Any],
    static_challenge: str | None = None,
) -> ApplicationProfile:
    """Change the named settings (fields of ScepSettings) and/or replace the static challenge."""
    return await _configure(
        actor=actor,
        application_id=application_id,
        profile_id=profile_id,
        changes=changes,
        static_challenge=static_challenge,
        enable=False,
    )


async def disable_scep(
    *, actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> ApplicationProfile:
    """SCEP off: pkiclient.exe answers 404; the RA certificate and settings are kept for a later enable."""
    _, attachment = await _load_for_settings(actor, application_id, profile_id)
    if not attachment.scep_enabled:
        return attachment
    attachment.scep_enabled = False
    async with in_transaction() as conn:
        await attachment.save(using_db=conn, update_fields=["scep_enabled", "updated_at"])
        await audit.record(
            actor=actor,
            action="application_profile.scep_disable",
            resource_type="application_profile",
            resource_id=attachment.id,
            application_id=attachment.application_id,
            details={"profile_id": str(attachment.profile_id)},
            connection=conn,
        )
    return attachment


def _challenge_hash(challenge: str) -> str:
    return hashlib.sha256(challenge.encode("utf-8")).hexdigest()


async def generate_scep_challenge(
    *, actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> GeneratedChallenge:
    """A one-time challenge for a dynamic-challenge pair (Operators, Admins); refused beyond the maximum."""
    application = await load_application(
        actor, application_id, Permission.SCEP_CHALLENGE_CREATE, profile_id=profile_id
    )
    attachment = await load_attachment(application, profile_id)
    if not attachment.scep_enabled or attachment.scep_challenge_mode != "dynamic":
        raise InvalidState(
            "dynamic SCEP challenges need SCEP enabled with challenge mode DYNAMIC on this attached profile"
        )
    # 160 random bits in hex: PrintableString-safe, which some clients require of challengePassword.
    challenge = secrets.token_hex(20)
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=attachment.scep_challenge_ttl_seconds)
    async with in_transaction() as conn:
        # Lock the attachment so concurrent creations cannot pass the maximum together (no-op on SQLite,
        # where writers are serialized anyway).
        await ApplicationProfile.select_for_update().using_db(conn).get(id=attachment.id)
        pending = (
            await ScepChallenge.filter(attachment_id=attachment.id, used_at=None, expires_at__gt=now)
            .using_db(conn)
            .count()
        )
        if pending >= attachment.scep_max_pending_challenges:
            raise InvalidState(
                f"{pending} SCEP challenges are pending, the maximum for this attached profile: use or let "
                "some expire, or raise maxPendingChallenges"
            )
        row = await ScepChallenge.create(
            attachment_id=attachment.id,
            challenge_hash=_challenge_hash(challenge),
            expires_at=expires_at,
            created_by_id=actor.principal_id,
            using_db=conn,
        )
        await audit.record(
            actor=actor,
            action="scep_challenge.create",
            resource_type="scep_challenge",
            resource_id=row.id,
            application_id=application.id,
            details={"profile_id": str(profile_id), "expires_at": expires_at.isoformat()},
            connection=conn,
        )
    return GeneratedChallenge(row.id, challenge, expires_at)


async def pending_challenge_count(attachment: ApplicationProfile) -> int:
    return await ScepChallenge.filter(
        attachment_id=attachment.id, used_at=None, expires_at__gt=datetime.now(UTC)
    ).count()


# ---------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class Endpoint:
    """An attachment with SCEP enabled, its application, profile, policy, CA and RA loaded."""

    attachment: ApplicationProfile
    material: SigningMaterial
    ra: RaMaterial


def _ra_material(attachment: ApplicationProfile) -> RaMaterial:
    sealed = attachment.scep_ra_key_encrypted
    pem = attachment.scep_ra_certificate_pem
    if sealed is None or pem is None:
        raise ScepNotFound("SCEP has no RA certificate here")
    sealed = bytes(sealed)
    cached = _ra_cache.get(attachment.id)
    if cached is not None and cached[0] == sealed:
        return cached[1]
    raw = sealing.unseal(kek=runtime.kek(), sealed=sealed, context=_ra_context(attachment))
    key = load_pem_private_key(raw, None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ScepNotFound("the SCEP RA key is not RSA")
    material = RaMaterial(load_certificate(pem), key)
    _ra_cache[attachment.id] = (sealed, material)
    return material


async def load_endpoint(application_id: str | None, profile_id: str) -> Endpoint:
    """The SCEP endpoint of an attachment. `application_id` None: the legacy form `/scep/{profileId}/...`,
    which reaches only a legacy profile on its project's container (and the application form never one)."""
    legacy = application_id is None
    try:
        app_uuid = None if application_id is None else uuid.UUID(application_id)
        profile_uuid = uuid.UUID(profile_id)
    except ValueError:
        raise ScepNotFound("not found") from None
    attachment, _ = await load_attachment_joined(app_uuid, profile_uuid, with_application=True, legacy=legacy)
    if attachment is None or not attachment.scep_enabled or bool(attachment.application.legacy) != legacy:
        raise ScepNotFound("no SCEP endpoint here: SCEP is not enabled for this profile")
    try:
        material = await signing_material(attachment.profile.ca)
    except KeywardError:
        raise ScepNotFound("the profile's CA cannot sign") from None
    return Endpoint(attachment, material, _ra_material(attachment))


# GetCACaps and GetCACert answer public, slowly changing facts: their endpoint lookups are reused for a few
# seconds (a clients asks for both right before each PKIOperation, which always reads afresh).
PUBLIC_ENDPOINT_TTL = 5.0
_public_endpoints: dict[tuple[str | None, str], tuple[float, Endpoint]] = {}


async def load_public_endpoint(application_id: str | None, profile_id: str) -> Endpoint:
    """load_endpoint for GetCACaps/GetCACert: may be up to PUBLIC_ENDPOINT_TTL seconds old."""
    key = (application_id, profile_id)
    now = time.monotonic()
    cached = _public_endpoints.get(key)
    if cached is not None and now - cached[0] < PUBLIC_ENDPOINT_TTL:
        return cached[1]
    endpoint = await load_endpoint(application_id, profile_id)
    if len(_public_endpoints) > 4096:
        _public_endpoints.clear()
    _public_endpoints[key] = (now, endpoint)
    return endpoint


def ca_caps() -> str:
    return pki_scep.ca_caps()


def _ca_chain(endpoint: Endpoint) -> list[x509.Certificate]:
    """The issuing CA then its issuers (without the root)."""
    return endpoint.material.chain or [endpoint.material.certificate]


def ca_certificates(endpoint: Endpoint) -> bytes:
    material = endpoint.material
    chain = _ca_chain(endpoint)
    if material.root is not None and material.root not in chain:
        chain = [*chain, material.root]
    return pki_scep.ca_certificates(chain, endpoint.ra.certificate)


def _failure(endpoint: Endpoint, reply_to: ReplyTo, fail_info: FailInfo) -> bytes:
    return pki_scep.build_cert_rep(
        ra_certificate=endpoint.ra.certificate,
        ra_key=endpoint.ra.key,
        ra_chain=_ca_chain(endpoint),
        reply_to=reply_to,
        status=PkiStatus.FAILURE,
        fail_info=fail_info,
    )


def _success(
    endpoint: Endpoint, message: pki_scep.PkiMessage, certificate_pem_text: str, cipher: str
) -> bytes:
    issued = load_certificate(certificate_pem_text)
    certificates = [issued]
    if endpoint.attachment.scep_include_ca:
        certificates += _ca_chain(endpoint)
    return pki_scep.build_cert_rep(
        ra_certificate=endpoint.ra.certificate,
        ra_key=endpoint.ra.key,
        ra_chain=_ca_chain(endpoint),
        reply_to=message.reply_to,
        status=PkiStatus.SUCCESS,
        certificates=certificates,
        recipient=message.signer_certificate,
        cipher=pki_scep.reply_cipher(cipher),
    )


def _actor(endpoint: Endpoint, message: pki_scep.PkiMessage, source_address: str | None) -> Actor:
    """The system actor named after the transaction, so audit entries show which enrollment acted."""
    organization_id = endpoint.attachment.application.organization_id
    actor = Actor.system(organization_id, f"scep:{message.reply_to.transaction_id[:64]}")
    actor.source_address = source_address
    return actor


async def pki_operation(endpoint: Endpoint, body: bytes, source_address: str | None = None) -> bytes:
    """Answer one pkiMessage with a CertRep; ScepBadRequest when not even a FAILURE CertRep can be built."""
    try:
        message = pki_scep.parse_pki_message(body)
    except ScepError as exc:
        if exc.reply_to is None:
            raise ScepBadRequest(exc.message) from None
        # Unverified input is answered, not audited: anyone could fill the audit log with it.
        logger.info("SCEP request refused before its signature was verified: %s", exc.message)
        return _failure(endpoint, exc.reply_to, exc.fail_info)
    try:
        return await _dispatch(endpoint, message, source_address)
    except ScepError as exc:
        await _refused(endpoint, message.reply_to, exc.message, source_address)
        return _failure(endpoint, message.reply_to, exc.fail_info)
    except KeywardError as exc:
        await _refused(endpoint, message.reply_to, exc.message, source_address)
        return _failure(endpoint, message.reply_to, FailInfo.BAD_REQUEST)
    except Exception:  # noqa: BLE001 - the client still gets a CertRep; the cause goes to the log
        logger.exception("SCEP %s failed", message.message_type.name)
        return _failure(endpoint, message.reply_to, FailInfo.BAD_REQUEST)


async def _refused(endpoint: Endpoint, reply_to: ReplyTo, reason: str, source_address: str | None) -> None:
    attachment = endpoint.attachment
    actor = Actor.system(attachment.application.organization_id, f"scep:{reply_to.transaction_id[:64]}")
    actor.source_address = source_address
    try:
        await audit.record(
            actor=actor,
            action="scep.enroll",
            resource_type="application_profile",
            resource_id=attachment.id,
            application_id=attachment.application_id,
            outcome=AuditOutcome.FAILURE,
            details={
                "profile_id": str(attachment.profile_id),
                "transaction_id": reply_to.transaction_id,
                "reason": reason[:500],
            },
        )
    except Exception:  # noqa: BLE001 - the refusal is answered even when the audit write fails
        logger.exception("could not audit a refused SCEP request")


async def _dispatch(endpoint: Endpoint, message: pki_scep.PkiMessage, source_address: str | None) -> bytes:
    kind = message.message_type
    if kind == MessageType.PKCS_REQ:
        return await _enroll(endpoint, message, source_address)
    if kind == MessageType.RENEWAL_REQ:
        return await _renew(endpoint, message, source_address)
    if kind == MessageType.CERT_POLL:
        return await _poll(endpoint, message)
    raise ScepError(f"messageType {kind.value} is not supported here", FailInfo.BAD_REQUEST)


def _open(endpoint: Endpoint, message: pki_scep.PkiMessage) -> pki_scep.Envelope:
    if message.envelope is None:
        raise ScepError("the request carries no pkcsPKIEnvelope", FailInfo.BAD_REQUEST)
    return pki_scep.decrypt_envelope(message.envelope, endpoint.ra.certificate, endpoint.ra.key)


def _verify_static(stored: str, challenge: str) -> bool:
    try:
        return bool(_hasher.verify(stored, challenge))
    except (VerificationError, InvalidHashError):
        return False


async def _static_matches(attachment: ApplicationProfile, challenge: str) -> bool:
    stored = attachment.scep_static_challenge_hash
    if stored is None:
        return False
    key = (attachment.id, stored, hashlib.sha256(challenge.encode("utf-8")).digest())
    if key in _verified_static:
        _verified_static.move_to_end(key)
        return True
    ok = await verify_off_loop(lambda: _verify_static(stored, challenge))
    if ok:
        _verified_static[key] = None
        while len(_verified_static) > _VERIFIED_STATIC_MAX:
            _verified_static.popitem(last=False)
    return ok


async def _dynamic_challenge(attachment: ApplicationProfile, challenge: str) -> ScepChallenge:
    row = await ScepChallenge.get_or_none(challenge_hash=_challenge_hash(challenge))
    if row is None or row.attachment_id != attachment.id:
        raise ScepError("the challenge password is wrong", FailInfo.BAD_REQUEST)
    if row.used_at is not None:
        raise ScepError("the challenge password was already used", FailInfo.BAD_REQUEST)
    if row.expires_at <= datetime.now(UTC):
        raise ScepError("the challenge password has expired", FailInfo.BAD_REQUEST)
    return row


async def _resent(
    endpoint: Endpoint, message: pki_scep.PkiMessage, envelope: pki_scep.Envelope
) -> bytes | None:
    """A PKCSReq sent again while (or after) approval held it: answered like GetCertInitial.

    scepclient resends its PKCSReq every 30 seconds after PENDING instead of polling with GetCertInitial.
    """
    row = (
        await ScepTransaction.filter(
            attachment_id=endpoint.attachment.id,
            transaction_id=message.reply_to.transaction_id,
            csr_der__not_isnull=True,
        )
        .order_by("-created_at")
        .first()
        .prefetch_related("certificate")
    )
    if row is None or row.csr_der != envelope.plaintext:
        return None
    return _transaction_reply(endpoint, message, await _settled(row), envelope)


async def _settled(row: ScepTransaction) -> ScepTransaction:
    """A pending transaction whose approval request was decided before the row existed follows it now.

    The PENDING row commits just after its approval request; an approver fast enough to decide in between
    finds no row to update, so the request's outcome is read here.
    """
    if row.status != "pending":
        return row
    request = await ApprovalRequest.filter(attachment_id=row.attachment_id, correlation=str(row.id)).first()
    if request is None:
        return row
    if request.status == approval.ISSUED and request.certificate_id is not None:
        await ScepTransaction.filter(id=row.id, status="pending").update(
            status="issued", certificate_id=request.certificate_id
        )
    elif request.status in (approval.REJECTED, approval.EXPIRED, approval.CANCELLED, approval.FAILED):
        await ScepTransaction.filter(id=row.id, status="pending").update(status="failed")
    else:
        return row
    return await ScepTransaction.get(id=row.id).prefetch_related("certificate")


def _transaction_reply(
    endpoint: Endpoint, message: pki_scep.PkiMessage, row: ScepTransaction, envelope: pki_scep.Envelope
) -> bytes:
    if row.status == "pending":
        return pki_scep.build_cert_rep(
            ra_certificate=endpoint.ra.certificate,
            ra_key=endpoint.ra.key,
            ra_chain=_ca_chain(endpoint),
            reply_to=message.reply_to,
            status=PkiStatus.PENDING,
        )
    if row.status == "issued" and row.certificate is not None:
        return _success(endpoint, message, row.certificate.certificate_pem, envelope.cipher)
    raise ScepError("the transaction was refused", FailInfo.BAD_REQUEST)


async def _enroll(endpoint: Endpoint, message: pki_scep.PkiMessage, source_address: str | None) -> bytes:
    attachment = endpoint.attachment
    envelope = _open(endpoint, message)
    csr_der = envelope.plaintext
    resent = await _resent(endpoint, message, envelope)
    if resent is not None:
        return resent
    challenge = pki_scep.challenge_password(csr_der)
    if not challenge:
        raise ScepError("the CSR carries no challengePassword", FailInfo.BAD_REQUEST)
    dynamic: ScepChallenge | None = None
    if attachment.scep_challenge_mode == "dynamic":
        dynamic = await _dynamic_challenge(attachment, challenge)
    elif not await _static_matches(attachment, challenge):
        raise ScepError("the challenge password is wrong", FailInfo.BAD_REQUEST)
    # The transaction row's id is the approval request's handle, should a policy hold the request.
    transaction_row_id = uuid.uuid4()

    async def record(certificate: Certificate, conn: BaseDBAsyncClient) -> None:
        # In the issuing transaction: a one-time challenge is spent exactly when its certificate exists, so
        # of two concurrent uses one issues and the other rolls back.
        if dynamic is not None:
            spent = (
                await ScepChallenge.filter(id=dynamic.id, used_at=None)
                .using_db(conn)
                .update(used_at=datetime.now(UTC), certificate_id=certificate.id)
            )
            if spent == 0:
                raise ScepError("the challenge password was already used", FailInfo.BAD_REQUEST)
        await ScepTransaction.create(
            attachment_id=attachment.id,
            transaction_id=message.reply_to.transaction_id,
            message_type=message.message_type.value,
            status="issued",
            certificate_id=certificate.id,
            using_db=conn,
        )

    try:
        certificate = await issue_certificate(
            actor=_actor(endpoint, message, source_address),
            application_id=attachment.application_id,
            profile_id=attachment.profile_id,
            csr=csr_der,
            enrollment_method=EnrollmentMethod.SCEP,
            application=attachment.application,
            attachment=attachment,
            after_insert=record,
            approval_correlation=str(transaction_row_id),
        )
    except ApprovalPending:
        return await _hold(endpoint, message, transaction_row_id, csr_der, dynamic)
    return _success(endpoint, message, certificate.certificate_pem, envelope.cipher)


async def _hold(
    endpoint: Endpoint,
    message: pki_scep.PkiMessage,
    row_id: uuid.UUID,
    csr_der: bytes,
    dynamic: ScepChallenge | None,
) -> bytes:
    """PENDING: the transaction waits for the approval request; a one-time challenge is spent now."""
    async with in_transaction() as conn:
        if dynamic is not None:
            spent = (
                await ScepChallenge.filter(id=dynamic.id, used_at=None)
                .using_db(conn)
                .update(used_at=datetime.now(UTC))
            )
            if spent == 0:
                raise ScepError("the challenge password was already used", FailInfo.BAD_REQUEST)
        await ScepTransaction.create(
            id=row_id,
            attachment_id=endpoint.attachment.id,
            transaction_id=message.reply_to.transaction_id,
            message_type=message.message_type.value,
            status="pending",
            csr_der=csr_der,
            using_db=conn,
        )
    return pki_scep.build_cert_rep(
        ra_certificate=endpoint.ra.certificate,
        ra_key=endpoint.ra.key,
        ra_chain=_ca_chain(endpoint),
        reply_to=message.reply_to,
        status=PkiStatus.PENDING,
    )


async def _renew(endpoint: Endpoint, message: pki_scep.PkiMessage, source_address: str | None) -> bytes:
    """RenewalReq: signed by a currently valid certificate of this CA from this pair's inventory."""
    attachment = endpoint.attachment
    if not attachment.scep_allow_renewal:
        raise ScepError("certificate-based renewal is not allowed here", FailInfo.BAD_REQUEST)
    signer = message.signer_certificate
    now = datetime.now(UTC)
    if not verify_issued_by(signer, endpoint.material.certificate):
        raise ScepError("the RenewalReq is not signed by a certificate of this CA", FailInfo.BAD_REQUEST)
    if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise ScepError("the signing certificate is not currently valid", FailInfo.BAD_TIME)
    envelope = _open(endpoint, message)
    # A RenewalReq sent again while (or after) approval held it: its transaction's state, as for PKCSReq.
    resent = await _resent(endpoint, message, envelope)
    if resent is not None:
        return resent
    old = await Certificate.get_or_none(
        ca_id=endpoint.material.ca_id, serial_hex=serial_hex(signer.serial_number)
    )
    if (
        old is None
        or old.application_id != attachment.application_id
        or old.profile_id != attachment.profile_id
    ):
        raise ScepError("the signing certificate was not issued through this profile", FailInfo.BAD_REQUEST)
    if CertificateStatus(old.status) != CertificateStatus.ACTIVE:
        raise ScepError(f"the signing certificate is {old.status}", FailInfo.BAD_REQUEST)
    # A renewal keeps the signer's identity: the new CSR must ask for the same subject and names.
    try:
        request = parse_request_csr(envelope.plaintext)
    except pki_errors.InvalidCsr as exc:
        raise ScepError(exc.message, FailInfo.BAD_REQUEST) from None
    mismatch = renewal_mismatch(request.csr, request.sans, signer, with_common_name_san(request.subject, []))
    if mismatch is not None:
        raise ScepError(f"renewal refused: {mismatch}", FailInfo.BAD_REQUEST)
    # The transaction row's id is the approval request's handle, should a policy hold the renewal.
    transaction_row_id = uuid.uuid4()
    try:
        new = await renew_certificate(
            actor=_actor(endpoint, message, source_address),
            certificate_id=old.id,
            mode=RenewalMode.CSR,
            csr=envelope.plaintext,
            enrollment_method=EnrollmentMethod.SCEP,
            approval_correlation=str(transaction_row_id),
        )
    except ApprovalPending as pending:
        if pending.request.correlation != str(transaction_row_id):
            # Another transaction's renewal of this certificate already waits: this one cannot follow it.
            raise ScepError(
                "a renewal of the signing certificate is already waiting for approval", FailInfo.BAD_REQUEST
            ) from None
        return await _hold(endpoint, message, transaction_row_id, envelope.plaintext, None)
    await ScepTransaction.create(
        attachment_id=attachment.id,
        transaction_id=message.reply_to.transaction_id,
        message_type=message.message_type.value,
        status="issued",
        certificate_id=new.id,
    )
    return _success(endpoint, message, new.certificate_pem, envelope.cipher)


async def _poll(endpoint: Endpoint, message: pki_scep.PkiMessage) -> bytes:
    """GetCertInitial: the state of the latest transaction with this id."""
    envelope = _open(endpoint, message)
    pki_scep.issuer_and_subject(envelope.plaintext)
    row = (
        await ScepTransaction.filter(
            attachment_id=endpoint.attachment.id, transaction_id=message.reply_to.transaction_id
        )
        .order_by("-created_at")
        .first()
        .prefetch_related("certificate")
    )
    if row is None:
        raise ScepError("no transaction with this transactionID", FailInfo.BAD_CERT_ID)
    return _transaction_reply(endpoint, message, await _settled(row), envelope)
