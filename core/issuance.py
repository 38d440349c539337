"""The one issuance path: every enrollment method (API, ACME, EST, SCEP, auto-renewal) ends here.

It checks the application, the attachment and its enrollment method, the CA and the profile's policy,
signs, and stores the certificate, its audit entry and its outbox event in one transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from cryptography import x509
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from core import audit, metrics, outbox, runtime
from core.access import load_application
from core.authz import Actor, Permission
from core.ca import SigningMaterial, require_active, signing_material
from core.errors import Conflict, InvalidCsr, InvalidInput, InvalidState, NotFound, PolicyViolation
from core.rows import from_row, from_row_cached
from models import (
    AcmeAccount,
    Application,
    ApplicationProfile,
    ApprovalPolicy,
    ApprovalPolicyAttachment,
    Certificate,
    CertificateAuthority,
    CertificatePolicy,
    CertificateProfile,
    attachment_generation,
)
from models.enums import CertificateSource, CertificateStatus, EnrollmentMethod
from pki import csr as pki_csr
from pki import errors as pki_errors
from pki import sealing
from pki.certificate import CertificateFacts, certificate_pem, describe_certificate, sign_leaf_certificate
from pki.duration import parse_duration
from pki.key import KeyAlgorithm, PrivateKey, PublicKey, generate_private_key, serialize_private_key
from pki.name import build_name, normalize_type
from pki.policy import CertificateRequest, PolicyRules, evaluate_policy
from pki.san import SubjectAltName, classify_name, parse_san
from pki.usage import (
    check_key_usages_for_key,
    default_key_usages,
    normalize_extended_key_usage,
    normalize_key_usage,
)

MAX_METADATA_ENTRIES = 50
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024
_RSA_ALGORITHMS = frozenset({KeyAlgorithm.RSA_2048, KeyAlgorithm.RSA_3072, KeyAlgorithm.RSA_4096})


@dataclass
class IssuanceContext:
    """Everything loaded once per request: the application, its attachment, profile, policy and CA."""

    actor: Actor
    application: Application
    attachment: ApplicationProfile
    profile: CertificateProfile
    policy: CertificatePolicy
    rules: PolicyRules
    material: SigningMaterial
    method: EnrollmentMethod
    # perf_counter() when loading began: the issuance latency metric runs from here to the commit.
    started: float = dataclasses.field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class KeyMaterial:
    """The subject public key, and its private key when the server holds it (generated or kept)."""

    public_key: PublicKey
    private_key: PrivateKey | None
    key_algorithm: KeyAlgorithm


# Parsed policy rules keyed by policy id, valid while the row's updated_at is unchanged.
_rules_cache: dict[uuid.UUID, tuple[datetime, PolicyRules]] = {}
# PEM text of each CA's chain, keyed by the cached material object it was built from.
_chain_pem_cache: dict[uuid.UUID, tuple[SigningMaterial, str]] = {}


def private_key_context(certificate_id: uuid.UUID) -> bytes:
    """Associated data binding a sealed key to its certificate row."""
    return f"cert:{certificate_id}".encode()


def seal_private_key(certificate_id: uuid.UUID, key: PrivateKey) -> bytes:
    return sealing.seal(
        kek=runtime.kek(), plaintext=serialize_private_key(key), context=private_key_context(certificate_id)
    )


def policy_rules(policy: CertificatePolicy) -> PolicyRules:
    cached = _rules_cache.get(policy.id)
    if cached is not None and cached[0] == policy.updated_at:
        return cached[1]
    try:
        rules = PolicyRules.from_dict(policy.rules)
    except pki_errors.PkiError as exc:
        raise InvalidState(
            f"policy '{policy.name}' is malformed ({exc.message}); a Product Admin must fix it"
        ) from None
    _rules_cache[policy.id] = (policy.updated_at, rules)
    return rules


def chain_pem_of(material: SigningMaterial) -> str:
    cached = _chain_pem_cache.get(material.ca_id)
    if cached is not None and cached[0] is material:
        return cached[1]
    text = "".join(certificate_pem(cert) for cert in material.chain)
    _chain_pem_cache[material.ca_id] = (material, text)
    return text


_JOINED = (
    ("ap", ApplicationProfile),
    ("p", CertificateProfile),
    ("pol", CertificatePolicy),
    ("ca", CertificateAuthority),
)
_attachment_sql: dict[tuple[str, bool, bool, bool, bool], str] = {}
_COVERED_COLUMN = "cover__policy_id"
GENERATION_COLUMN = "generation"
# Set on attachments read by the join: whether an active approval policy covered it then (core.approval).
APPROVAL_COVERED = "approval_covered"


# Columns the join does not read: a CA's CRL grows with its revocations and is served from its own read
# (core.revocation_status). Instances built from the join are marked partial, so none is ever saved whole.
_UNREAD = {("ca", "crl_der")}


def _columns(alias: str, model: type[Model]) -> str:
    return ", ".join(
        f'NULL AS "{alias}__{column}"'
        if (alias, column) in _UNREAD
        else f'{alias}."{column}" AS "{alias}__{column}"'
        for column in model._meta.db_fields
    )


def _attachment_query(
    dialect: str,
    *,
    with_application: bool = False,
    with_account: bool = False,
    legacy: bool = False,
    with_generation: bool = False,
) -> str:
    """One join for attachment, profile, policy and CA (and application, ACME account); built once each.

    `with_generation` (SQLite): also the attachment generation the rows belong to, read in the same
    statement (models.attachment_generation), as the column GENERATION_COLUMN."""
    key = (dialect, with_application, with_account, legacy, with_generation)
    if key not in _attachment_sql:
        joined = list(_JOINED)
        joins = [
            f'JOIN "{CertificateProfile._meta.db_table}" p ON p."id" = ap."profile_id"',
            f'JOIN "{CertificatePolicy._meta.db_table}" pol ON pol."id" = p."policy_id"',
            f'JOIN "{CertificateAuthority._meta.db_table}" ca ON ca."id" = p."ca_id"',
        ]
        if with_application or legacy:
            joined.append(("app", Application))
            joins.append(f'JOIN "{Application._meta.db_table}" app ON app."id" = ap."application_id"')
        if with_account:
            third = "?" if dialect == "sqlite" else ("$2" if legacy else "$3")
            joined.append(("acc", AcmeAccount))
            joins.append(
                f'LEFT JOIN "{AcmeAccount._meta.db_table}" acc '
                f'ON acc."id" = {third} AND acc."attachment_id" = ap."id"'
            )
        columns = ", ".join(_columns(alias, model) for alias, model in joined)
        # Whether an active approval policy covers the attachment: issuance asks again only when one does.
        columns += (
            f', (SELECT c."policy_id" FROM "{ApprovalPolicyAttachment._meta.db_table}" c '
            f'JOIN "{ApprovalPolicy._meta.db_table}" cp ON cp."id" = c."policy_id" '
            f'WHERE c."attachment_id" = ap."id" AND cp."is_active" LIMIT 1) AS "{_COVERED_COLUMN}"'
        )
        if with_generation:
            columns += f', ({attachment_generation.READ_SQL}) AS "{GENERATION_COLUMN}"'
        first, second = ("?", "?") if dialect == "sqlite" else ("$1", "$2")
        # SQLite's ? are positional: the account's (in the LEFT JOIN) comes first in the text.
        where = f'WHERE ap."application_id" = {first} AND ap."profile_id" = {second}'
        if legacy:
            # A legacy URL names only the profile: the attachment on its legacy project's container.
            where = f'WHERE p."id" = {first} AND ap."application_id" = p."legacy_project_id" AND app."legacy"'
        _attachment_sql[key] = (
            f'SELECT {columns} FROM "{ApplicationProfile._meta.db_table}" ap {" ".join(joins)} {where}'
        )
    return _attachment_sql[key]


async def load_attachment_joined(
    application_id: uuid.UUID | None,
    profile_id: uuid.UUID,
    *,
    with_application: bool = False,
    account_id: uuid.UUID | None = None,
    with_account: bool = False,
    legacy: bool = False,
) -> tuple[ApplicationProfile | None, AcmeAccount | None]:
    """The hot path's one lookup, in raw SQL: the ORM's select_related spent a millisecond building it.

    With `with_account`, the ACME account `account_id` of this attachment comes in the same query (None
    when it is not this attachment's). With `legacy` (a legacy URL, which names only the profile), the
    attachment of a legacy profile on its project's container, application loaded; `application_id` is
    not used.
    """
    connection = ApplicationProfile._meta.db
    query, values = attachment_statement(
        connection.capabilities.dialect,
        application_id,
        profile_id,
        with_application=with_application,
        account_id=account_id,
        with_account=with_account,
        legacy=legacy,
    )
    rows = await connection.execute_query_dict(query, values)
    if not rows:
        return None, None
    return attachment_from_row(rows[0], with_account=with_account)


def attachment_statement(
    dialect: str,
    application_id: uuid.UUID | None,
    profile_id: uuid.UUID,
    *,
    with_application: bool = False,
    account_id: uuid.UUID | None = None,
    with_account: bool = False,
    legacy: bool = False,
    with_generation: bool = False,
) -> tuple[str, list[Any]]:
    """load_attachment_joined's query and its values (for a caller that runs it with other statements)."""
    values: list[Any] = [profile_id] if legacy else [application_id, profile_id]
    if with_account:
        values = [account_id, *values] if dialect == "sqlite" else [*values, account_id]
    if dialect == "sqlite":
        values = [None if value is None else str(value) for value in values]
    query = _attachment_query(
        dialect,
        with_application=with_application,
        with_account=with_account,
        legacy=legacy,
        with_generation=with_generation,
    )
    return query, values


def attachment_from_row(
    row: dict[str, Any], *, with_account: bool = False
) -> tuple[ApplicationProfile, AcmeAccount | None]:
    """The attachment (profile, policy, CA, and the application when joined) and the account of a row."""
    # core.rows builds what _init_from_db would; these rows seldom change, so mostly it copies.
    attachment = from_row_cached(ApplicationProfile, row, "ap__")
    setattr(attachment, APPROVAL_COVERED, row[_COVERED_COLUMN] is not None)
    profile = from_row_cached(CertificateProfile, row, "p__")
    profile.policy = from_row_cached(CertificatePolicy, row, "pol__")
    profile.ca = from_row_cached(CertificateAuthority, row, "ca__")
    profile.ca._partial = True  # without its CRL (_UNREAD): saving it whole would erase that
    attachment.profile = profile
    if "app__id" in row:
        attachment.application = from_row_cached(Application, row, "app__")
    account = None
    if with_account and row.get("acc__id") is not None:
        account = from_row(AcmeAccount, row, "acc__")
    return attachment, account


async def _load_attachment(application_id: uuid.UUID, profile_id: uuid.UUID) -> ApplicationProfile | None:
    attachment, _ = await load_attachment_joined(application_id, profile_id)
    return attachment


def _joined(
    attachment: ApplicationProfile | None, application_id: uuid.UUID, profile_id: uuid.UUID
) -> TypeGuard[ApplicationProfile]:
    """Whether the caller's attachment is this one, with its profile, policy and CA already loaded."""
    if (
        attachment is None
        or attachment.application_id != application_id
        or attachment.profile_id != profile_id
    ):
        return False
    profile = getattr(attachment, "_profile", None)
    return (
        isinstance(profile, CertificateProfile)
        and isinstance(getattr(profile, "_policy", None), CertificatePolicy)
        and isinstance(getattr(profile, "_ca", None), CertificateAuthority)
    )


def _method_enabled(attachment: ApplicationProfile, method: EnrollmentMethod) -> bool:
    # ACME/EST/SCEP settings arrive with their issues as `<method>_enabled` columns.
    return bool(getattr(attachment, f"{EnrollmentMethod(method).value}_enabled", False))


async def load_issuance_context(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    method: EnrollmentMethod,
    application: Application | None = None,
    attachment: ApplicationProfile | None = None,
) -> IssuanceContext:
    """Authorize and load, in two queries when the CA material is cached; refuse what cannot issue.

    `attachment`: the caller's own read of this attachment in this request (from _load_attachment's
    join: profile, policy and CA loaded), which is then not read again.
    """
    started = time.perf_counter()
    if application is None:
        application = await load_application(
            actor, application_id, Permission.CERTIFICATE_ISSUE, profile_id=profile_id
        )
    if not _joined(attachment, application.id, profile_id):
        attachment = await _load_attachment(application.id, profile_id)
    if attachment is None:
        exists = await CertificateProfile.exists(id=profile_id, organization_id=application.organization_id)
        if not exists:
            raise NotFound(f"profile {profile_id} not found", field="profileId")
        raise InvalidInput(
            f"profile {profile_id} is not attached to application '{application.name}'; "
            "an application Admin attaches it first",
            field="profileId",
        )
    profile = attachment.profile
    if profile.deleted_at is not None:
        raise InvalidState(f"profile '{profile.name}' was deleted and issues no new certificates")
    if not _method_enabled(attachment, method):
        raise InvalidState(
            f"{EnrollmentMethod(method).value.upper()} enrollment is disabled for profile '{profile.name}' "
            f"in application '{application.name}'; an application Admin can enable it"
        )
    ca = profile.ca
    require_active(ca)
    material = await signing_material(ca)
    return IssuanceContext(
        actor=actor,
        application=application,
        attachment=attachment,
        profile=profile,
        policy=profile.policy,
        rules=policy_rules(profile.policy),
        material=material,
        method=EnrollmentMethod(method),
        started=started,
    )


# ---------------------------------------------------------------- request building


def parse_request_csr(csr: str | bytes) -> pki_csr.CsrInfo:
    try:
        return pki_csr.parse_csr(csr)
    except pki_errors.InvalidCsr as exc:
        raise InvalidCsr(f"the CSR cannot be used: {exc.message}", field="csr") from None


def _subject_pairs(subject: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for attribute_type, value in subject or []:
        try:
            pairs.append((normalize_type(attribute_type), value))
        except pki_errors.PkiError as exc:
            raise InvalidInput(f"subject: {exc.message}", field="subject") from None
    return pairs


def merge_subject(
    defaults: Sequence[Sequence[str]] | None, requested: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The profile's default attributes whose type the request does not set, then the request's."""
    requested_types = {attribute_type for attribute_type, _ in requested}
    merged: list[tuple[str, str]] = []
    for item in defaults or []:
        attribute_type, value = normalize_type(str(item[0])), str(item[1])
        if attribute_type not in requested_types:
            merged.append((attribute_type, value))
    return merged + requested


def _sans(values: Sequence[str | SubjectAltName] | None) -> list[SubjectAltName]:
    sans: list[SubjectAltName] = []
    for value in values or []:
        try:
            san = value if isinstance(value, SubjectAltName) else parse_san(value)
        except pki_errors.PkiError as exc:
            raise InvalidInput(f"sans: {exc.message}", field="sans") from None
        if san not in sans:
            sans.append(san)
    return sans


def with_common_name_san(
    subject: Sequence[tuple[str, str]], sans: list[SubjectAltName]
) -> list[SubjectAltName]:
    """A request with no SANs gets its common name as one, when that is a host name or an address.

    TLS clients ignore the CN (RFC 6125), so a certificate without SANs would be useless to them; a CN that
    is not a host name ("Payments Service") adds nothing.
    """
    if sans:
        return sans
    common_names = [value for attribute_type, value in subject if attribute_type == "CN"]
    if not common_names:
        return sans
    try:
        return [classify_name(common_names[-1])]
    except pki_errors.PkiError:
        return sans


def _usages(
    values: Sequence[str] | None, normalize: Callable[[str], str], field: str
) -> frozenset[str] | None:
    if values is None:
        return None
    out: set[str] = set()
    for value in values:
        try:
            out.add(normalize(value))
        except pki_errors.PkiError as exc:
            raise InvalidInput(f"{field}: {exc.message}", field=field) from None
    return frozenset(out)


def _validity(ttl: str | timedelta | None, profile: CertificateProfile) -> timedelta:
    if isinstance(ttl, timedelta):
        return ttl
    text = ttl if ttl else profile.default_validity
    try:
        return parse_duration(text)
    except pki_errors.PkiError as exc:
        raise InvalidInput(f"ttl: {exc.message}", field="ttl") from None


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    """Metadata is a flat string map: syncs and alerts filter on it, so keep it small and typed."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object of string keys and string values", field="metadata")
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidInput(f"metadata holds at most {MAX_METADATA_ENTRIES} entries", field="metadata")
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_METADATA_KEY:
            raise InvalidInput(
                f"metadata key {key!r} must be a non-empty string of at most {MAX_METADATA_KEY} characters",
                field="metadata",
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidInput(f"metadata value of {key!r} must be a string", field="metadata")
        text = str(value)
        if len(text) > MAX_METADATA_VALUE:
            raise InvalidInput(
                f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE} characters", field="metadata"
            )
        checked[key] = text
    return checked


@dataclass(frozen=True)
class PreparedRequest:
    request: CertificateRequest
    subject: x509.Name


def prepare_request(
    context: IssuanceContext,
    *,
    subject: list[tuple[str, str]],
    sans: list[SubjectAltName],
    key_algorithm: KeyAlgorithm,
    key_usages: frozenset[str] | None,
    extended_key_usages: frozenset[str] | None,
    validity: timedelta,
) -> PreparedRequest:
    """The CertificateRequest the policy judges: profile defaults filled in, syntax already checked."""
    profile = context.profile
    try:
        merged = merge_subject(profile.default_subject, subject)
        name = build_name(merged)
    except pki_errors.PkiError as exc:
        raise InvalidInput(f"subject: {exc.message}", field="subject") from None
    if len(name) == 0 and not sans:
        raise InvalidInput("give a common name, a subject or at least one SAN", field="sans")
    usages = key_usages
    if not usages:
        usages = _usages(profile.default_key_usages, normalize_key_usage, "keyUsages") or default_key_usages(
            key_algorithm
        )
    if "keyCertSign" in usages or "cRLSign" in usages:
        raise InvalidInput("keyCertSign and cRLSign are for CA certificates only", field="keyUsages")
    try:
        check_key_usages_for_key(key_usages=usages, key_algorithm=key_algorithm)
    except pki_errors.PkiError as exc:
        raise InvalidInput(exc.message, field="keyUsages") from None
    ekus = extended_key_usages
    if ekus is None:
        ekus = _usages(profile.default_extended_key_usages, normalize_extended_key_usage, "extendedKeyUsages")
    request = CertificateRequest(
        subject=merged,
        sans=sans,
        key_usages=usages,
        extended_key_usages=ekus or frozenset(),
        key_algorithm=key_algorithm,
        signature_algorithm=context.material.signature_algorithm,
        validity=validity,
    )
    return PreparedRequest(request=request, subject=name)


def check_policy(context: IssuanceContext, prepared: PreparedRequest) -> None:
    """Refuse with every violation named, never only the first (SPEC §4)."""
    violations = evaluate_policy(context.rules, prepared.request)
    if violations:
        summary = "; ".join(v.message for v in violations)
        raise PolicyViolation(
            f"the request violates policy '{context.policy.name}': {summary}",
            violations=[{"field": v.field, "value": v.value, "message": v.message} for v in violations],
        )


async def generate_key(algorithm: KeyAlgorithm) -> PrivateKey:
    if algorithm in _RSA_ALGORITHMS:
        # RSA generation takes from tens of milliseconds to seconds: keep the event loop serving.
        return await asyncio.to_thread(generate_private_key, algorithm)
    return generate_private_key(algorithm)


# ---------------------------------------------------------------- signing and storing


@dataclass
class StoreOptions:
    """What differs between a fresh issuance and a renewal."""

    metadata: dict[str, str]
    auto_renew: bool
    renew_before_days: int
    renewed_from: Certificate | None = None
    audit_action: str = "certificate.issue"
    event_type: str = outbox.CERTIFICATE_ISSUED
    extra_details: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Runs inside the transaction before the insert (a renewal marks its predecessor there).
    before_insert: Callable[[BaseDBAsyncClient], Awaitable[None]] | None = None
    # Runs inside the transaction after the insert, so the caller's own record of the certificate (an ACME
    # order turning valid) commits with it or not at all.
    after_insert: Callable[[Certificate, BaseDBAsyncClient], Awaitable[None]] | None = None


def sign(context: IssuanceContext, prepared: PreparedRequest, key: KeyMaterial) -> x509.Certificate:
    material = context.material
    try:
        return sign_leaf_certificate(
            issuer_cert=material.certificate,
            issuer_key=material.private_key,
            public_key=key.public_key,
            subject=prepared.subject,
            sans=prepared.request.sans,
            key_usages=prepared.request.key_usages,
            extended_key_usages=prepared.request.extended_key_usages,
            not_after=datetime.now(UTC) + prepared.request.validity,
            urls=material.urls,
        )
    except pki_errors.PkiError as exc:
        raise InvalidInput(f"the certificate cannot be signed: {exc.message}") from None


def fact_columns(facts: CertificateFacts) -> dict[str, Any]:
    """The certificate's own facts as stored columns, the same for issued and imported certificates."""
    return {
        "serial_hex": facts.serial_hex,
        "common_name": facts.common_name,
        "subject_dn": facts.subject_dn,
        "sans": [{"type": san.type, "value": san.value} for san in facts.sans],
        "name_search": name_search_text(facts.common_name, facts.sans),
        "key_algorithm": facts.key_algorithm.value,
        "signature_algorithm": facts.signature_algorithm,
        "key_usages": sorted(facts.key_usages),
        "extended_key_usages": sorted(facts.extended_key_usages),
        "not_before": facts.not_before,
        "not_after": facts.not_after,
    }


def renewal_due_at(
    *, not_before: datetime, not_after: datetime, renew_before_days: int, auto_renew: bool, server_key: bool
) -> datetime | None:
    """When the worker renews it (renewal_point), only for auto-renewed server-held keys."""
    if not (auto_renew and server_key):
        return None
    return renewal_point(not_before=not_before, not_after=not_after, renew_before_days=renew_before_days)


def renewal_point(*, not_before: datetime, not_after: datetime, renew_before_days: int) -> datetime:
    """When a certificate is due for renewal: notAfter minus its renew-before days.

    A renew-before window as long as the lifetime would make every successor due at once (a tight loop of
    renewals); such certificates are due at two thirds of their lifetime instead.
    """
    due = not_after - timedelta(days=renew_before_days)
    if due <= not_before:
        due = not_before + (not_after - not_before) * 2 / 3
    return due


def name_search_text(common_name: str | None, sans: Sequence[SubjectAltName]) -> str:
    """Lower-cased CN and SAN values, one a line, for the inventory's name filter."""
    values = ([common_name] if common_name else []) + [san.value for san in sans]
    return "\n".join(dict.fromkeys(value.lower() for value in values))


async def store_certificate(
    context: IssuanceContext, cert: x509.Certificate, key: KeyMaterial, options: StoreOptions
) -> Certificate:
    """Certificate row, audit entry and outbox event in one transaction: all or nothing."""
    facts = describe_certificate(cert)
    certificate_id = uuid.uuid4()
    actor = context.actor
    row = Certificate(
        id=certificate_id,
        organization_id=context.application.organization_id,
        application_id=context.application.id,
        # A legacy project's container has the project's id: its certificates are the project's.
        legacy_project_id=context.application.id if context.application.legacy else None,
        profile_id=context.profile.id,
        ca_id=context.material.ca_id,
        **fact_columns(facts),
        status=CertificateStatus.ACTIVE,
        source=CertificateSource.ISSUED,
        enrollment_method=context.method,
        auto_renew=options.auto_renew,
        renew_before_days=options.renew_before_days,
        renewed_from_id=options.renewed_from.id if options.renewed_from else None,
        renewal_due_at=renewal_due_at(
            not_before=facts.not_before,
            not_after=facts.not_after,
            renew_before_days=options.renew_before_days,
            auto_renew=options.auto_renew,
            server_key=key.private_key is not None,
        ),
        certificate_pem=certificate_pem(cert),
        chain_pem=chain_pem_of(context.material),
        encrypted_private_key=(
            seal_private_key(certificate_id, key.private_key) if key.private_key is not None else None
        ),
        fingerprint_sha256=facts.fingerprint_sha256,
        metadata=options.metadata,
        created_by_id=actor.principal_id,
    )
    details = {
        "serial": facts.serial_hex,
        "common_name": facts.common_name,
        "profile_id": str(context.profile.id),
        "ca_id": str(context.material.ca_id),
        "enrollment_method": context.method.value,
        "server_generated_key": key.private_key is not None,
        "not_after": facts.not_after.isoformat(),
        **options.extra_details,
    }
    payload = {
        "certificate_id": str(certificate_id),
        "serial": facts.serial_hex,
        "common_name": facts.common_name,
        "sans": row.sans,
        "not_after": facts.not_after.isoformat(),
        "profile_id": str(context.profile.id),
        "enrollment_method": context.method.value,
        "renewed_from_id": str(options.renewed_from.id) if options.renewed_from else None,
    }
    try:
        async with in_transaction() as conn:
            if options.before_insert is not None:
                await options.before_insert(conn)
            await row.save(using_db=conn, force_create=True)
            await audit.record(
                actor=actor,
                action=options.audit_action,
                resource_type="certificate",
                resource_id=certificate_id,
                application_id=context.application.id,
                details=details,
                connection=conn,
            )
            await outbox.emit(
                event_type=options.event_type,
                organization_id=context.application.organization_id,
                application_id=context.application.id,
                certificate_id=certificate_id,
                payload=payload,
                connection=conn,
            )
            if options.after_insert is not None:
                await options.after_insert(row, conn)
    except IntegrityError:
        # 159 random serial bits make this practically impossible; never store a duplicate serial.
        raise Conflict("a serial number collision occurred; send the request again") from None
    # Every enrollment method and renewal stores through here: the one place issuances are counted.
    metrics.record_issuance(
        method=context.method.value,
        profile=context.profile.name,
        application=context.application.name,
        kind="renew" if options.renewed_from is not None else "issue",
        seconds=time.perf_counter() - context.started,
    )
    return row


# ---------------------------------------------------------------- the service


async def issue_certificate(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    csr: str | bytes | None = None,
    subject: Sequence[tuple[str, str]] | None = None,
    sans: Sequence[str | SubjectAltName] | None = None,
    key_algorithm: str | KeyAlgorithm | None = None,
    key_usages: Sequence[str] | None = None,
    extended_key_usages: Sequence[str] | None = None,
    validity: str | timedelta | None = None,
    metadata: dict[str, Any] | None = None,
    auto_renew: bool | None = None,
    enrollment_method: EnrollmentMethod = EnrollmentMethod.API,
    source_address: str | None = None,
    application: Application | None = None,
    after_insert: Callable[[Certificate, BaseDBAsyncClient], Awaitable[None]] | None = None,
    attachment: ApplicationProfile | None = None,
    approval_correlation: str | None = None,
    approved_request_id: uuid.UUID | None = None,
    parsed_csr: pki_csr.CsrInfo | None = None,
    replaces_certificate_id: uuid.UUID | None = None,
) -> Certificate:
    """Issue from a CSR, or with a server-generated key from subject/SANs; policy checked on every path.

    Under an active approval policy it raises core.approval.ApprovalPending (a request now waits) instead,
    unless `approved_request_id` says this is that request, approved. `approval_correlation`: the
    protocol's handle (ACME order, EST retry key, SCEP transaction) stored with the request.
    `parsed_csr`: the caller's own parse of `csr` (ACME checks the names first), not parsed again.
    `replaces_certificate_id`: the certificate this one succeeds (an ACME order's `replaces`, RFC 9773),
    stored as its predecessor and, while active or expired, marked renewed with it (see replacing).
    """
    if source_address is not None:
        actor = dataclasses.replace(actor, source_address=source_address)
    # Cheap input checks come first, so a malformed request costs no query.
    csr_info = None
    if csr is not None:
        if subject or sans or key_algorithm:
            raise InvalidInput(
                "with a CSR, the subject, SANs and key come from the CSR; leave commonName, subject, "
                "sans and keyAlgorithm empty",
                field="csr",
            )
        csr_info = parsed_csr if parsed_csr is not None else parse_request_csr(csr)
    requested_subject = _subject_pairs(subject)
    requested_sans = _sans(sans)
    requested_key_usages = _usages(key_usages, normalize_key_usage, "keyUsages")
    requested_ekus = _usages(extended_key_usages, normalize_extended_key_usage, "extendedKeyUsages")
    checked_metadata = check_metadata(metadata)
    algorithm: KeyAlgorithm | None = None
    if key_algorithm is not None:
        try:
            algorithm = (
                key_algorithm
                if isinstance(key_algorithm, KeyAlgorithm)
                else KeyAlgorithm(key_algorithm.strip().upper())
            )
        except ValueError:
            accepted = ", ".join(a.value for a in KeyAlgorithm)
            raise InvalidInput(
                f"unknown key algorithm {key_algorithm!r}; use one of {accepted}", field="keyAlgorithm"
            ) from None

    context = await load_issuance_context(
        actor=actor,
        application_id=application_id,
        profile_id=profile_id,
        method=enrollment_method,
        application=application,
        attachment=attachment,
    )
    profile = context.profile
    lifetime = _validity(validity, profile)
    if csr_info is not None:
        prepared = prepare_request(
            context,
            subject=csr_info.subject,
            sans=with_common_name_san(csr_info.subject, list(csr_info.sans)),
            key_algorithm=csr_info.key_algorithm,
            key_usages=requested_key_usages or csr_info.key_usages or None,
            extended_key_usages=(
                requested_ekus if requested_ekus is not None else (csr_info.extended_key_usages or None)
            ),
            validity=lifetime,
        )
    else:
        if algorithm is None:
            try:
                algorithm = KeyAlgorithm(profile.default_key_algorithm)
            except ValueError:
                raise InvalidState(
                    f"profile '{profile.name}' has an unknown default key algorithm; give keyAlgorithm"
                ) from None
        prepared = prepare_request(
            context,
            subject=requested_subject,
            sans=with_common_name_san(requested_subject, requested_sans),
            key_algorithm=algorithm,
            key_usages=requested_key_usages,
            extended_key_usages=requested_ekus,
            validity=lifetime,
        )
    check_policy(context, prepared)

    server_key = csr_info is None
    if auto_renew and not server_key:
        raise InvalidInput(
            "auto-renewal needs a server-generated key; renew certificates issued from a CSR with a new CSR",
            field="autoRenew",
        )
    if approved_request_id is None:
        from core import approval  # noqa: PLC0415 - approval issues through this module

        await approval.hold_if_required(
            context,
            prepared,
            csr=csr,
            subject=requested_subject,
            sans=requested_sans,
            key_algorithm=algorithm,
            key_usages=requested_key_usages,
            extended_key_usages=requested_ekus,
            validity=lifetime,
            metadata=checked_metadata,
            auto_renew=auto_renew,
            correlation=approval_correlation,
        )
    if csr_info is not None:
        key = KeyMaterial(csr_info.public_key, None, csr_info.key_algorithm)
    else:
        assert algorithm is not None
        private_key = await generate_key(algorithm)
        key = KeyMaterial(private_key.public_key(), private_key, algorithm)
    cert = sign(context, prepared, key)
    attachment = context.attachment
    options = StoreOptions(
        metadata=checked_metadata,
        auto_renew=server_key and (attachment.api_auto_renew if auto_renew is None else auto_renew),
        renew_before_days=attachment.api_renew_before_days or profile.renew_before_days,
        after_insert=after_insert,
    )
    if replaces_certificate_id is not None:
        replaced = await Certificate.get_or_none(id=replaces_certificate_id)
        if replaced is not None:
            options = replacing(options, replaced)
    return await store_certificate(context, cert, key, options)


async def mark_renewed(
    certificate_id: uuid.UUID, conn: BaseDBAsyncClient, *, while_in: Sequence[CertificateStatus]
) -> int:
    """In the renewal's transaction: the predecessor, while its status is one of `while_in`, turns renewed
    and is never renewed again; how many rows changed (0: it was not, so two renewals cannot both pass)."""
    return await (
        Certificate.filter(id=certificate_id, status__in=list(while_in))
        .using_db(conn)
        .update(
            status=CertificateStatus.RENEWED,
            renewal_due_at=None,
            next_renewal_attempt_at=None,
            updated_at=datetime.now(UTC),
        )
    )


def replacing(options: StoreOptions, old: Certificate) -> StoreOptions:
    """`options` for a certificate that succeeds `old` though issued afresh (an ACME client renewing):
    a renewal in the inventory, audit and events, so syncs swap it in and `old` is neither renewed again
    nor alerted on. A revoked predecessor stays revoked; one renewed already stays as it is."""

    async def mark_replaced(conn: BaseDBAsyncClient) -> None:
        await mark_renewed(old.id, conn, while_in=(CertificateStatus.ACTIVE, CertificateStatus.EXPIRED))

    return dataclasses.replace(
        options,
        renewed_from=old,
        audit_action="certificate.renew",
        event_type=outbox.CERTIFICATE_RENEWED,
        extra_details={"renewed_from": str(old.id), "mode": "replaces"},
        before_insert=mark_replaced,
    )
