"""EST (RFC 7030) per (application, profile): settings for application Admins, and the enrollments.

Every certificate goes through core.issuance (policy, inventory, audit, issuance event), as the system
actor named after the EST client (`est:<username>`, `est:tls:<serial>`). Refusals come back as
pki.est.EstError with the HTTP status the route answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from core import approval, audit, outbox, runtime
from core.access import load_application, load_attachment
from core.approval import ApprovalPending
from core.authz import Actor, Permission
from core.ca import signing_material
from core.errors import (
    Conflict,
    InvalidCsr,
    InvalidInput,
    InvalidState,
    KeywardError,
    NotFound,
    PolicyViolation,
)
from core.issuance import (
    KeyMaterial,
    StoreOptions,
    check_policy,
    issue_certificate,
    load_attachment_joined,
    load_issuance_context,
    mark_renewed,
    parse_request_csr,
    prepare_request,
    private_key_context,
    sign,
    store_certificate,
    with_common_name_san,
)
from core.legacy import rules as legacy_rules
from core.legacy.endpoints import is_legacy_attachment, profile_uuid
from core.password_checks import verify_off_loop
from models import ApplicationProfile, Certificate
from models.enums import CertificateStatus, EnrollmentMethod
from pki import errors as pki_errors
from pki import est as pki_est
from pki import sealing
from pki.certificate import load_certificate, serial_hex
from pki.csr import CsrInfo
from pki.duration import parse_duration
from pki.est import EstError, EstPending
from pki.key import KeyAlgorithm, load_private_key
from pki.name import format_name
from pki.san import SubjectAltName

logger = logging.getLogger(__name__)

MIN_PASSPHRASE_LENGTH = 8
MAX_PASSPHRASE_LENGTH = 1024
MAX_USERNAME_LENGTH = 64
DEFAULT_USERNAME = "est"
REALM_PREFIX = "keyward EST"
# A verified passphrase is remembered (as an HMAC under a per-process key) this long, so a busy client does
# not pay argon2 on every request; a changed passphrase changes the stored hash and so misses the cache.
VERIFIED_TTL_SECONDS = 300
VERIFIED_MAX_ENTRIES = 4096

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("keyward-est-timing-equalizer")
_cache_key = secrets.token_bytes(32)
_verified: dict[bytes, float] = {}


# ---------------------------------------------------------------- settings (application Admins)


def _check_passphrase(passphrase: str) -> str:
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise InvalidInput(
            f"the EST passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters", field="passphrase"
        )
    if len(passphrase) > MAX_PASSPHRASE_LENGTH:
        raise InvalidInput(
            f"the EST passphrase must be at most {MAX_PASSPHRASE_LENGTH} characters", field="passphrase"
        )
    return passphrase


def _check_username(username: str) -> str:
    username = username.strip()
    if not username or len(username) > MAX_USERNAME_LENGTH or ":" in username:
        raise InvalidInput(
            f"the EST username must be 1-{MAX_USERNAME_LENGTH} characters without ':' (HTTP Basic)",
            field="username",
        )
    if not username.isprintable():
        raise InvalidInput("the EST username must be printable text", field="username")
    return username


def _check_client_ca(pem: str) -> str:
    try:
        certificates = pki_est.load_ca_bundle(pem)
    except pki_errors.PkiError as exc:
        raise InvalidInput(f"clientCaPem: {exc.message}", field="clientCaPem") from None
    return "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in certificates)


def client_ca_subjects(attachment: ApplicationProfile) -> list[str]:
    """Subjects of the bootstrap CA chain, for display (no secret in them)."""
    if not attachment.est_client_ca_pem:
        return []
    try:
        return [format_name(cert.subject) for cert in pki_est.load_ca_bundle(attachment.est_client_ca_pem)]
    except pki_errors.PkiError:
        return []


def _details(attachment: ApplicationProfile) -> dict[str, Any]:
    """What the audit log keeps of the settings: never the passphrase nor its hash."""
    return {
        "enabled": attachment.est_enabled,
        "username": attachment.est_username,
        "passphrase_set": attachment.est_passphrase_hash is not None,
        "client_ca_subjects": client_ca_subjects(attachment),
    }


async def _load_attachment(
    actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> ApplicationProfile:
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)  # enable, update, disable: read-only when legacy
    attachment = await load_attachment(application, profile_id, "profile")
    attachment.application = application
    return attachment


_EST_FIELDS = ["est_enabled", "est_username", "est_passphrase_hash", "est_client_ca_pem", "updated_at"]


async def _save(
    actor: Actor, attachment: ApplicationProfile, action: str, extra: dict[str, Any]
) -> ApplicationProfile:
    async with in_transaction() as conn:
        await attachment.save(using_db=conn, update_fields=_EST_FIELDS)
        await audit.record(
            actor=actor,
            action=action,
            resource_type="application_profile",
            resource_id=attachment.id,
            application_id=attachment.application_id,
            details={"profile_id": str(attachment.profile_id), **_details(attachment), **extra},
            connection=conn,
        )
    return attachment


async def _hash(passphrase: str) -> str:
    return await asyncio.to_thread(_hasher.hash, passphrase)


def _require_an_auth_method(attachment: ApplicationProfile) -> None:
    if attachment.est_passphrase_hash is None and not attachment.est_client_ca_pem:
        raise InvalidInput(
            "EST needs an authentication method: a passphrase (HTTP Basic), a bootstrap CA chain "
            "(TLS client certificates), or both",
            field="passphrase",
        )


async def enable_est(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    username: str | None = None,
    passphrase: str | None = None,
    client_ca_pem: str | None = None,
) -> ApplicationProfile:
    """Turn EST on; given settings replace the stored ones, and at least one auth method must result."""
    attachment = await _load_attachment(actor, application_id, profile_id)
    if attachment.profile.deleted_at is not None:
        raise InvalidState(f"profile {attachment.profile.name!r} is deleted: it issues no new certificates")
    new_username = _check_username(username) if username is not None else None
    new_hash = await _hash(_check_passphrase(passphrase)) if passphrase is not None else None
    new_ca = _check_client_ca(client_ca_pem) if client_ca_pem is not None and client_ca_pem.strip() else None
    attachment.est_enabled = True
    if new_username is not None:
        attachment.est_username = new_username
    if new_hash is not None:
        attachment.est_passphrase_hash = new_hash
        if attachment.est_username is None:
            attachment.est_username = DEFAULT_USERNAME
    if new_ca is not None:
        attachment.est_client_ca_pem = new_ca
    _require_an_auth_method(attachment)
    return await _save(
        actor, attachment, "application_profile.est_enable", {"passphrase_changed": new_hash is not None}
    )


async def update_est(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    username: str | None = None,
    passphrase: str | None = None,
    clear_passphrase: bool = False,
    client_ca_pem: str | None = None,
    clear_client_ca: bool = False,
) -> ApplicationProfile:
    """Change EST settings (None leaves one as it is); while enabled, one auth method must remain."""
    attachment = await _load_attachment(actor, application_id, profile_id)
    if passphrase is not None and clear_passphrase:
        raise InvalidInput("give a new passphrase or clear it, not both", field="passphrase")
    if client_ca_pem is not None and clear_client_ca:
        raise InvalidInput("give a new bootstrap CA chain or clear it, not both", field="clientCaPem")
    if username is not None:
        attachment.est_username = _check_username(username)
    if passphrase is not None:
        attachment.est_passphrase_hash = await _hash(_check_passphrase(passphrase))
        if attachment.est_username is None:
            attachment.est_username = DEFAULT_USERNAME
    if clear_passphrase:
        attachment.est_passphrase_hash = None
    if client_ca_pem is not None:
        attachment.est_client_ca_pem = _check_client_ca(client_ca_pem)
    if clear_client_ca:
        attachment.est_client_ca_pem = None  # type: ignore[assignment]  # a nullable TextField
    if attachment.est_enabled:
        _require_an_auth_method(attachment)
    return await _save(
        actor, attachment, "application_profile.est_update", {"passphrase_changed": passphrase is not None}
    )


async def disable_est(
    *, actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> ApplicationProfile:
    """Turn EST off: its URLs answer 404; the settings stay for a later enable."""
    attachment = await _load_attachment(actor, application_id, profile_id)
    if not attachment.est_enabled:
        return attachment
    attachment.est_enabled = False
    return await _save(actor, attachment, "application_profile.est_disable", {})


def est_url(attachment: ApplicationProfile) -> str:
    """The EST base URL of this pair; clients append /cacerts, /simpleenroll, ...

    A legacy profile's (on its project's container) is the legacy form `/.well-known/est/{profileId}`.
    """
    base = runtime.settings().public_url.rstrip("/")
    if is_legacy_attachment(attachment):
        return f"{base}/.well-known/est/{attachment.profile_id}"
    return f"{base}/.well-known/est/applications/{attachment.application_id}/profiles/{attachment.profile_id}"


def est_alias_url(application_name: str, profile_name: str) -> str | None:
    """The single-label form `/.well-known/est/{app}.{profile}` (RFC 7030 §3.2.2), when the names fit one."""
    if "/" in profile_name or not profile_name:
        return None
    from urllib.parse import quote

    base = runtime.settings().public_url.rstrip("/")
    return f"{base}/.well-known/est/{application_name}.{quote(profile_name, safe='')}"


# ---------------------------------------------------------------- finding the attachment


def _not_found() -> EstError:
    return EstError(404, "no EST service here: EST is not enabled for this application and profile")


async def find_attachment(application_id: str, profile_id: str) -> ApplicationProfile:
    """The attachment with EST enabled (application, profile, CA and policy loaded), or 404.

    A legacy container answers only on the legacy form (find_legacy_attachment).
    """
    try:
        app_uuid, profile_id_uuid = uuid.UUID(application_id), uuid.UUID(profile_id)
    except ValueError:
        raise _not_found() from None
    attachment, _ = await load_attachment_joined(app_uuid, profile_id_uuid, with_application=True)
    if attachment is None or not attachment.est_enabled or attachment.application.legacy:
        raise _not_found()
    return attachment


async def find_legacy_attachment(profile_id: uuid.UUID) -> ApplicationProfile:
    """A legacy profile's attachment on its project's container, with EST enabled, or 404."""
    attachment, _ = await load_attachment_joined(None, profile_id, legacy=True)
    if attachment is None or not attachment.est_enabled:
        raise _not_found()
    return attachment


async def find_attachment_by_label(label: str) -> ApplicationProfile:
    """`{applicationName}.{profileName}`: application names are slugs (no dots), so the first dot splits.

    Names are unique per organization only: when the label matches EST-enabled pairs in more than one
    organization, it names none of them (404) and clients use the id form of the URL. A label that is a
    UUID is a legacy profile's id (the legacy form `/.well-known/est/{profileId}/{op}`).
    """
    legacy_profile_id = profile_uuid(label)
    if legacy_profile_id is not None:
        return await find_legacy_attachment(legacy_profile_id)
    application_name, dot, profile_name = label.partition(".")
    if not dot or not application_name or not profile_name:
        raise _not_found()
    matches = await ApplicationProfile.filter(
        application__name=application_name,
        application__legacy=False,
        profile__name=profile_name,
        est_enabled=True,
    ).values_list("application_id", "profile_id")
    if len(matches) > 1:
        raise EstError(
            404,
            f"'{label}' names EST services in several organizations; use "
            "/.well-known/est/applications/{applicationId}/profiles/{profileId}/ instead",
        )
    if not matches:
        raise _not_found()
    application_id, profile_id = matches[0]
    return await find_attachment(str(application_id), str(profile_id))


# ---------------------------------------------------------------- authentication


@dataclass(frozen=True)
class EstCaller:
    """What the route saw of the client: HTTP Basic credentials, the TLS client certificate, the transport."""

    basic: tuple[str, str] | None = None
    certificate: x509.Certificate | None = None
    secure: bool = False  # HTTPS (directly, or a trusted proxy's TLS)
    source_address: str | None = None


def realm(attachment: ApplicationProfile) -> str:
    return f"{REALM_PREFIX} {attachment.application_id}/{attachment.profile_id}"


def _unauthorized(attachment: ApplicationProfile, message: str) -> EstError:
    return EstError(401, message, {"WWW-Authenticate": f'Basic realm="{realm(attachment)}", charset="UTF-8"'})


def _cache_entry(attachment: ApplicationProfile, username: str, passphrase: str) -> bytes:
    material = "\0".join([str(attachment.id), attachment.est_passphrase_hash or "", username, passphrase])
    return hmac.new(_cache_key, material.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def _remember(entry: bytes) -> None:
    now = time.monotonic()
    if len(_verified) >= VERIFIED_MAX_ENTRIES:
        for key in [key for key, until in _verified.items() if until <= now] or list(_verified)[:512]:
            _verified.pop(key, None)
    _verified[entry] = now + VERIFIED_TTL_SECONDS


async def _passphrase_ok(attachment: ApplicationProfile, username: str, passphrase: str) -> bool:
    entry = _cache_entry(attachment, username, passphrase)
    until = _verified.get(entry)
    if until is not None and until > time.monotonic():
        return True
    stored = attachment.est_passphrase_hash
    expected_user = attachment.est_username or ""

    def verify() -> bool:
        good: bool
        try:
            good = _hasher.verify(stored or _DUMMY_HASH, passphrase)
        except (VerificationError, InvalidHashError):
            good = False
        return good and stored is not None

    # argon2 runs whatever the username, so a wrong username takes as long as a wrong passphrase.
    good = await verify_off_loop(verify)
    good = hmac.compare_digest(username.encode("utf-8", "surrogatepass"), expected_user.encode()) and good
    if good:
        _remember(entry)
    return good


def _bootstrap_certificate_ok(attachment: ApplicationProfile, certificate: x509.Certificate) -> bool:
    if not attachment.est_client_ca_pem:
        return False
    try:
        issuers = pki_est.load_ca_bundle(attachment.est_client_ca_pem)
    except pki_errors.PkiError:
        return False
    return pki_est.issued_by_any(certificate, issuers) is not None


def _serial(certificate: x509.Certificate) -> str:
    return serial_hex(certificate.serial_number)


async def authenticate(attachment: ApplicationProfile, caller: EstCaller) -> Actor:
    """simpleenroll/serverkeygen: a bootstrap-CA client certificate, or the HTTP Basic passphrase."""
    organization_id = attachment.application.organization_id
    if caller.certificate is not None and _bootstrap_certificate_ok(attachment, caller.certificate):
        return Actor.system(organization_id, f"est:tls:{_serial(caller.certificate)}")
    if caller.basic is None:
        raise _unauthorized(attachment, "authentication required: HTTP Basic or a TLS client certificate")
    if attachment.est_passphrase_hash is None:
        raise _unauthorized(attachment, "this EST service accepts only TLS client certificates")
    if not caller.secure and not runtime.settings().est_allow_plain_http:
        raise EstError(403, "HTTP Basic authentication is refused over plain HTTP: use HTTPS")
    username, passphrase = caller.basic
    if not await _passphrase_ok(attachment, username, passphrase):
        raise _unauthorized(attachment, "wrong EST username or passphrase")
    return Actor.system(organization_id, f"est:{username}")


# ---------------------------------------------------------------- the operations


async def ca_certificates(attachment: ApplicationProfile) -> list[x509.Certificate]:
    """/cacerts: the issuing CA, its intermediates and the root (the client's explicit trust anchor)."""
    material = await signing_material(attachment.profile.ca)
    certificates = list(material.chain) or [material.certificate]
    if material.root is not None and material.root not in certificates:
        certificates.append(material.root)
    return certificates


def csr_attributes(attachment: ApplicationProfile) -> bytes:
    """/csrattrs: the signature algorithm and key type of the profile's default key algorithm."""
    try:
        algorithm: KeyAlgorithm | None = KeyAlgorithm(attachment.profile.default_key_algorithm)
    except ValueError:
        algorithm = None
    return pki_est.csr_attributes(algorithm)


def _refusal(error: KeywardError) -> EstError:
    """A core refusal as the HTTP status an EST client understands; the message is already safe to show."""
    if isinstance(error, InvalidCsr | InvalidInput | PolicyViolation):
        return EstError(400, error.message)
    if isinstance(error, NotFound):
        return EstError(404, error.message)
    if isinstance(error, Conflict):
        return EstError(503, error.message, {"Retry-After": "1"})
    if isinstance(error, InvalidState):
        return EstError(403, error.message)
    return EstError(403, error.message)


def _decode(body: bytes) -> bytes:
    """The CSR's DER; simpleenroll leaves parsing to issuance (one parse), which refuses a bad one as 400."""
    try:
        return pki_est.decode_pkcs10(body)
    except pki_errors.PkiError as exc:
        raise EstError(400, f"the CSR cannot be used: {exc.message}") from None


def _parse(der: bytes) -> CsrInfo:
    try:
        return parse_request_csr(der)
    except InvalidCsr as exc:
        raise EstError(400, exc.message) from None


def _chain_of(certificate: Certificate) -> list[x509.Certificate]:
    """The issued certificate then its chain up to, not including, the root (RFC 7030 §4.2.3: the cert)."""
    leaf = load_certificate(certificate.certificate_pem)
    chain = x509.load_pem_x509_certificates(certificate.chain_pem.encode()) if certificate.chain_pem else []
    return [leaf, *chain]


@dataclass(frozen=True)
class Enrolled:
    certificate: Certificate
    certificates: list[x509.Certificate]  # the leaf, then its issuers (not the root)
    private_key_der: bytes | None = None  # serverkeygen: the PKCS#8 DER of the generated key


async def simple_enroll(attachment: ApplicationProfile, caller: EstCaller, body: bytes) -> Enrolled:
    """/simpleenroll: authenticate, then issue from the CSR through the one issuance path."""
    actor = await authenticate(attachment, caller)
    der = _decode(body)
    correlation = await _approval_state(attachment, actor, der)
    if isinstance(correlation, Certificate):
        return Enrolled(correlation, _chain_of(correlation))
    try:
        certificate = await issue_certificate(
            actor=actor,
            application_id=attachment.application_id,
            profile_id=attachment.profile_id,
            csr=der,
            enrollment_method=EnrollmentMethod.EST,
            source_address=caller.source_address,
            application=attachment.application,
            attachment=attachment,
            approval_correlation=correlation,
        )
    except ApprovalPending as pending:
        raise EstPending(pending.retry_after) from None
    except KeywardError as exc:
        raise _refusal(exc) from None
    return Enrolled(certificate, _chain_of(certificate))


async def _approval_state(
    attachment: ApplicationProfile, actor: Actor, der: bytes, *, kind: str = "simpleenroll"
) -> str | Certificate | None:
    """The retry of a request an approval policy held: its certificate once issued, 202 while pending.

    Matched on the authenticated identity and the CSR's public key and subject. Returns the correlation key
    for a new request (None when no policy covers the pair), or the issued certificate.
    """
    if await approval.covering_policy(attachment) is None:
        return None
    try:
        key = approval.est_correlation(actor, der, kind)
    except ValueError:
        raise EstError(400, "the CSR cannot be used: it is not a PKCS#10 request") from None
    held = await approval.latest_for(attachment.id, key)
    if held is None:
        return key
    if held.status in (approval.PENDING, approval.APPROVED):
        raise EstPending(approval.RETRY_AFTER_SECONDS)
    if held.status == approval.ISSUED and held.certificate is not None:
        return held.certificate
    if held.status == approval.ISSUED:
        return key
    raise EstError(403, f"the request was {held.status}: {held.failure_reason or 'no reason given'}")


async def server_keygen(attachment: ApplicationProfile, caller: EstCaller, body: bytes) -> Enrolled:
    """/serverkeygen: the CSR names the subject and SANs; the server makes a key of the CSR's key type.

    The key goes back as PKCS#8 inside TLS (RFC 7030 §4.4.2), so plain HTTP is refused unless explicitly
    allowed; the inventory keeps it sealed like every server-generated key.
    """
    actor = await authenticate(attachment, caller)
    if not caller.secure and not runtime.settings().est_allow_plain_http:
        raise EstError(403, "server-side key generation returns a private key: use HTTPS")
    der = _decode(body)
    info = _parse(der)
    held = await _approval_state(attachment, actor, der, kind="serverkeygen")
    try:
        certificate = (
            held
            if isinstance(held, Certificate)
            else await issue_certificate(
                actor=actor,
                application_id=attachment.application_id,
                profile_id=attachment.profile_id,
                subject=info.subject,
                sans=info.sans,
                key_algorithm=info.key_algorithm,
                key_usages=sorted(info.key_usages) or None,
                extended_key_usages=sorted(info.extended_key_usages) or None,
                auto_renew=False,
                enrollment_method=EnrollmentMethod.EST,
                source_address=caller.source_address,
                application=attachment.application,
                attachment=attachment,
                approval_correlation=held,
            )
        )
    except ApprovalPending as pending:
        raise EstPending(pending.retry_after) from None
    except KeywardError as exc:
        raise _refusal(exc) from None
    assert certificate.encrypted_private_key is not None
    pem = sealing.unseal(
        kek=runtime.kek(),
        sealed=certificate.encrypted_private_key,
        context=private_key_context(certificate.id),
    )
    key_der = load_private_key(pem).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Enrolled(certificate, _chain_of(certificate), key_der)


async def _current_certificate(
    attachment: ApplicationProfile, caller: EstCaller, *, renewed_ok: bool = False
) -> Certificate:
    """The client's TLS certificate as this pair's inventory holds it: signed by the profile's CA, valid.

    With `renewed_ok` a renewed certificate is returned too (the retry of a held re-enrollment).
    """
    presented = caller.certificate
    if presented is None:
        raise _unauthorized(
            attachment, "re-enrollment needs the current certificate as TLS client certificate"
        )
    material = await signing_material(attachment.profile.ca)
    if pki_est.issued_by_any(presented, [material.certificate]) is None:
        raise _unauthorized(
            attachment, "the TLS client certificate was not issued by this profile's CA or is not valid now"
        )
    fingerprint = hashlib.sha256(presented.public_bytes(serialization.Encoding.DER)).hexdigest()
    row = await Certificate.get_or_none(
        application_id=attachment.application_id, fingerprint_sha256=fingerprint
    )
    if row is None or row.profile_id != attachment.profile_id:
        raise _unauthorized(attachment, "the TLS client certificate is not in this application's inventory")
    status = CertificateStatus(row.status)
    if status == CertificateStatus.REVOKED:
        raise _unauthorized(attachment, "the TLS client certificate is revoked")
    if status == CertificateStatus.RENEWED and not renewed_ok:
        await _refuse_renewed(row)
    if status not in (CertificateStatus.ACTIVE, CertificateStatus.RENEWED):
        raise _unauthorized(attachment, f"the TLS client certificate is {status.value}")
    return row


async def _refuse_renewed(row: Certificate) -> None:
    successor = await Certificate.filter(renewed_from_id=row.id).order_by("created_at").first()
    named = f" by serial {successor.serial_hex}" if successor else ""
    raise EstError(403, f"this certificate was already renewed{named}: re-enroll with its successor")


async def simple_reenroll(attachment: ApplicationProfile, caller: EstCaller, body: bytes) -> Enrolled:
    """/simplereenroll: the current certificate (TLS) authenticates; same subject and SANs; renewed once.

    Under an approval policy it answers 202 while the renewal waits; the retry with the same certificate
    and CSR gets the successor once approved.
    """
    old = await _current_certificate(attachment, caller, renewed_ok=True)
    assert caller.certificate is not None
    der = _decode(body)
    info = _parse(der)
    mismatch = pki_est.reenroll_mismatch(
        info.csr, info.sans, caller.certificate, with_common_name_san(info.subject, [])
    )
    if mismatch is not None:
        raise EstError(403, f"re-enrollment refused: {mismatch}")
    actor = Actor.system(attachment.application.organization_id, f"est:tls:{old.serial_hex}")
    actor = dataclasses.replace(actor, source_address=caller.source_address)
    held = await _approval_state(attachment, actor, der, kind="simplereenroll")
    if isinstance(held, Certificate):
        return Enrolled(held, _chain_of(held))
    if CertificateStatus(old.status) != CertificateStatus.ACTIVE:
        await _refuse_renewed(old)
    try:
        certificate = await _renew(attachment, actor, old, info, correlation=held)
    except ApprovalPending as pending:
        raise EstPending(pending.retry_after) from None
    except KeywardError as exc:
        raise _refusal(exc) from None
    return Enrolled(certificate, _chain_of(certificate))


async def _renew(
    attachment: ApplicationProfile,
    actor: Actor,
    old: Certificate,
    info: CsrInfo,
    *,
    correlation: str | None = None,
) -> Certificate:
    """The successor through core.issuance's store: policy again, the old one `renewed`, one renewal only."""
    context = await load_issuance_context(
        actor=actor,
        application_id=attachment.application_id,
        profile_id=attachment.profile_id,
        method=EnrollmentMethod.EST,
        application=attachment.application,
        attachment=attachment,
    )
    try:
        validity = parse_duration(context.profile.default_validity)
    except pki_errors.PkiError as exc:
        raise InvalidState(
            f"profile '{context.profile.name}' has an unusable validity: {exc.message}"
        ) from None
    sans: list[SubjectAltName] = with_common_name_san(info.subject, list(info.sans))
    prepared = prepare_request(
        context,
        subject=info.subject,
        sans=sans,
        key_algorithm=info.key_algorithm,
        key_usages=frozenset(old.key_usages) or None,
        extended_key_usages=frozenset(old.extended_key_usages),
        validity=validity,
    )
    check_policy(context, prepared)
    # Held like every renewal; once approved, core.approval renews from the stored CSR.
    await approval.hold_renewal_if_required(
        context,
        prepared,
        old=old,
        mode="csr",
        csr=info.csr.public_bytes(serialization.Encoding.DER),
        correlation=correlation,
    )
    cert = sign(context, prepared, KeyMaterial(info.public_key, None, info.key_algorithm))

    async def renew_predecessor(conn: BaseDBAsyncClient) -> None:
        # Conditional: of two concurrent re-enrollments with one certificate, exactly one succeeds.
        if await mark_renewed(old.id, conn, while_in=(CertificateStatus.ACTIVE,)) == 0:
            raise InvalidState(f"certificate {old.serial_hex} was already renewed")

    options = StoreOptions(
        metadata=dict(old.metadata or {}),
        auto_renew=False,
        renew_before_days=old.renew_before_days,
        renewed_from=old,
        audit_action="certificate.renew",
        event_type=outbox.CERTIFICATE_RENEWED,
        extra_details={"renewed_from": str(old.id), "mode": "csr"},
        before_insert=renew_predecessor,
    )
    return await store_certificate(
        context, cert, KeyMaterial(info.public_key, None, info.key_algorithm), options
    )
