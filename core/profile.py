"""Certificate profiles of the shared PKI (SPEC §5): one CA + one policy + issuance defaults."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import audit, authz
from core.access import organization_scope
from core.authz import Actor, Permission
from core.errors import Conflict, InvalidInput, InvalidState, NotFound
from core.naming import clean_name
from core.policy import rules_of
from models import CertificateAuthority, CertificatePolicy, CertificateProfile
from pki.duration import parse_duration
from pki.errors import PkiError
from pki.key import KeyAlgorithm
from pki.name import build_name, name_pairs
from pki.policy import CertificateRequest, evaluate_policy
from pki.usage import check_key_usages_for_key, normalize_extended_key_usage, normalize_key_usage

MAX_RENEW_BEFORE_DAYS = 3650

# What a CA with this key signs with (pki.key.signature_algorithm_for), known without unsealing it.
_CA_SIGNATURE_ALGORITHMS = {
    KeyAlgorithm.RSA_2048: "SHA256_WITH_RSA",
    KeyAlgorithm.RSA_3072: "SHA256_WITH_RSA",
    KeyAlgorithm.RSA_4096: "SHA256_WITH_RSA",
    KeyAlgorithm.EC_P256: "ECDSA_WITH_SHA256",
    KeyAlgorithm.EC_P384: "ECDSA_WITH_SHA384",
    KeyAlgorithm.ED25519: "ED25519",
}
# Policy violation fields → the profile input field that caused them.
_VIOLATION_FIELDS = {
    "validity": "defaultValidity",
    "keyAlgorithm": "defaultKeyAlgorithm",
    "keyUsages": "defaultKeyUsages",
    "extendedKeyUsages": "defaultExtendedKeyUsages",
    "signatureAlgorithm": "caId",
}


@dataclass(frozen=True)
class ProfileDefaults:
    validity: str = "90d"
    key_algorithm: str = KeyAlgorithm.EC_P256.value
    key_usages: tuple[str, ...] = ()
    extended_key_usages: tuple[str, ...] = ()
    subject: tuple[tuple[str, str], ...] = ()
    renew_before_days: int = 30


def require_usable(profile: CertificateProfile) -> None:
    """A deleted profile issues nothing new; its certificates stay valid."""
    if profile.deleted_at is not None:
        raise InvalidState(f"profile '{profile.name}' was deleted and no longer issues certificates")


def _name_conflict(name: str) -> Conflict:
    return Conflict(
        f"a profile named '{name}' already exists (deleted profiles keep their name); choose another name",
        field="name",
    )


async def _check_unique_name(organization_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None) -> None:
    query = CertificateProfile.filter(organization_id=organization_id, name=name)
    if exclude is not None:
        query = query.exclude(id=exclude)
    if await query.exists():
        raise _name_conflict(name)


def _normalize_defaults(defaults: ProfileDefaults) -> dict[str, Any]:
    """Model fields for the defaults, each checked on its own (syntax, names, key compatibility)."""
    try:
        parse_duration(defaults.validity)
    except PkiError as exc:
        raise InvalidInput(f"defaultValidity: {exc.message}", field="defaultValidity") from None
    try:
        key_algorithm = KeyAlgorithm(defaults.key_algorithm)
    except ValueError:
        accepted = ", ".join(a.value for a in KeyAlgorithm)
        raise InvalidInput(
            f"unknown key algorithm {defaults.key_algorithm!r}; use one of {accepted}",
            field="defaultKeyAlgorithm",
        ) from None
    try:
        key_usages = sorted({normalize_key_usage(u) for u in defaults.key_usages})
        check_key_usages_for_key(key_usages=frozenset(key_usages), key_algorithm=key_algorithm)
    except PkiError as exc:
        raise InvalidInput(f"defaultKeyUsages: {exc.message}", field="defaultKeyUsages") from None
    if "keyCertSign" in key_usages or "cRLSign" in key_usages:
        raise InvalidInput("keyCertSign and cRLSign are for CA certificates only", field="defaultKeyUsages")
    try:
        extended_key_usages = sorted({normalize_extended_key_usage(u) for u in defaults.extended_key_usages})
    except PkiError as exc:
        raise InvalidInput(
            f"defaultExtendedKeyUsages: {exc.message}", field="defaultExtendedKeyUsages"
        ) from None
    try:
        subject = [list(pair) for pair in name_pairs(build_name(list(defaults.subject)))]
    except PkiError as exc:
        raise InvalidInput(f"defaultSubject: {exc.message}", field="defaultSubject") from None
    if not 0 <= defaults.renew_before_days <= MAX_RENEW_BEFORE_DAYS:
        raise InvalidInput(
            f"renewBeforeDays must be between 0 and {MAX_RENEW_BEFORE_DAYS}", field="renewBeforeDays"
        )
    return {
        "default_validity": defaults.validity.strip().lower(),
        "default_key_algorithm": key_algorithm.value,
        "default_key_usages": key_usages,
        "default_extended_key_usages": extended_key_usages,
        "default_subject": subject,
        "renew_before_days": defaults.renew_before_days,
    }


def _check_against_policy(
    fields: dict[str, Any], policy: CertificatePolicy, ca: CertificateAuthority
) -> None:
    """Defaults the policy would refuse make every default issuance fail: refuse them now, naming each."""
    rules = rules_of(policy)
    request = CertificateRequest(
        subject=[(t, v) for t, v in fields["default_subject"]],
        sans=[],
        key_usages=frozenset(fields["default_key_usages"]),
        extended_key_usages=frozenset(fields["default_extended_key_usages"]),
        key_algorithm=KeyAlgorithm(fields["default_key_algorithm"]),
        signature_algorithm=_CA_SIGNATURE_ALGORITHMS[KeyAlgorithm(ca.key_algorithm)],
        validity=parse_duration(fields["default_validity"]),
    )
    # "Required" violations (value None) are for the request to satisfy, not the defaults.
    violations = [v for v in evaluate_policy(rules, request) if v.value is not None]
    if not violations:
        return
    first = violations[0].field
    field = _VIOLATION_FIELDS.get(first, "defaultSubject" if first.startswith("subject") else first)
    raise InvalidInput(
        f"the defaults do not satisfy policy '{policy.name}': " + "; ".join(v.message for v in violations),
        field=field,
        violations=[
            {"field": _VIOLATION_FIELDS.get(v.field, v.field), "value": v.value, "message": v.message}
            for v in violations
        ],
    )


async def _load_ca(organization_id: uuid.UUID, ca_id: uuid.UUID) -> CertificateAuthority:
    ca = await CertificateAuthority.get_or_none(id=ca_id, organization_id=organization_id)
    if ca is None:
        raise NotFound(f"certificate authority {ca_id} not found", field="caId")
    return ca


async def _load_policy(organization_id: uuid.UUID, policy_id: uuid.UUID) -> CertificatePolicy:
    policy = await CertificatePolicy.get_or_none(id=policy_id, organization_id=organization_id)
    if policy is None:
        raise NotFound(f"certificate policy {policy_id} not found", field="policyId")
    return policy


def _defaults_of(profile: CertificateProfile) -> ProfileDefaults:
    return ProfileDefaults(
        validity=profile.default_validity,
        key_algorithm=profile.default_key_algorithm,
        key_usages=tuple(profile.default_key_usages),
        extended_key_usages=tuple(profile.default_extended_key_usages),
        subject=tuple((t, v) for t, v in profile.default_subject),
        renew_before_days=profile.renew_before_days,
    )


async def get_profile(
    *, actor: Actor, profile_id: uuid.UUID, permission: Permission = Permission.PKI_READ
) -> CertificateProfile:
    """A profile of the actor's organization, deleted ones included (their certificates point at them)."""
    authz.require(actor, permission, organization_scope(actor))
    profile = await CertificateProfile.get_or_none(id=profile_id, organization_id=actor.organization_id)
    if profile is None:
        raise NotFound(f"certificate profile {profile_id} not found")
    return profile


async def list_profiles(*, actor: Actor, include_deleted: bool = False) -> list[CertificateProfile]:
    authz.require(actor, Permission.PKI_READ, organization_scope(actor))
    query = CertificateProfile.filter(organization_id=actor.organization_id)
    if not include_deleted:
        query = query.filter(deleted_at__isnull=True)
    return await query.order_by("name")


async def create_profile(
    *,
    actor: Actor,
    name: str,
    ca_id: uuid.UUID,
    policy_id: uuid.UUID,
    defaults: ProfileDefaults,
    description: str = "",
) -> CertificateProfile:
    scope = organization_scope(actor)
    authz.require(actor, Permission.PKI_MANAGE, scope)
    name = clean_name(name)
    fields = _normalize_defaults(defaults)
    ca = await _load_ca(scope.organization_id, ca_id)
    policy = await _load_policy(scope.organization_id, policy_id)
    _check_against_policy(fields, policy, ca)
    await _check_unique_name(scope.organization_id, name)
    try:
        async with in_transaction() as conn:
            profile = await CertificateProfile.create(
                organization_id=scope.organization_id,
                name=name,
                description=description,
                ca_id=ca.id,
                policy_id=policy.id,
                **fields,
                using_db=conn,
            )
            await audit.record(
                actor=actor,
                action="profile.create",
                resource_type="certificate_profile",
                resource_id=profile.id,
                details={"name": name, "ca_id": str(ca.id), "policy_id": str(policy.id), **fields},
                connection=conn,
            )
    except IntegrityError:
        raise _name_conflict(name) from None
    return profile


async def update_profile(
    *,
    actor: Actor,
    profile_id: uuid.UUID,
    name: str | None = None,
    description: str | None = None,
    ca_id: uuid.UUID | None = None,
    policy_id: uuid.UUID | None = None,
    changes: dict[str, Any] | None = None,
) -> CertificateProfile:
    """`changes` holds ProfileDefaults field names to replace; the result is checked against the policy."""
    profile = await get_profile(actor=actor, profile_id=profile_id, permission=Permission.PKI_MANAGE)
    require_usable(profile)
    updates: dict[str, Any] = {}
    if name is not None:
        name = clean_name(name)
        if name != profile.name:
            await _check_unique_name(profile.organization_id, name, exclude=profile.id)
            updates["name"] = name
    if description is not None and description != profile.description:
        updates["description"] = description
    current = _defaults_of(profile)
    try:
        merged = ProfileDefaults(**{**current.__dict__, **(changes or {})})
    except TypeError as exc:
        raise InvalidInput(f"unknown profile default: {exc}") from None
    fields = _normalize_defaults(merged)
    ca = await _load_ca(profile.organization_id, ca_id or profile.ca_id)
    policy = await _load_policy(profile.organization_id, policy_id or profile.policy_id)
    _check_against_policy(fields, policy, ca)
    if ca.id != profile.ca_id:
        updates["ca_id"] = ca.id
    if policy.id != profile.policy_id:
        updates["policy_id"] = policy.id
    for key, value in fields.items():
        if getattr(profile, key) != value:
            updates[key] = value
    if not updates:
        return profile
    try:
        async with in_transaction() as conn:
            for key, value in updates.items():
                setattr(profile, key, value)
            await profile.save(using_db=conn)
            await audit.record(
                actor=actor,
                action="profile.update",
                resource_type="certificate_profile",
                resource_id=profile.id,
                details={
                    key: str(value) if isinstance(value, uuid.UUID) else value
                    for key, value in updates.items()
                },
                connection=conn,
            )
    except IntegrityError:
        raise _name_conflict(str(name)) from None
    return profile


async def delete_profile(*, actor: Actor, profile_id: uuid.UUID) -> CertificateProfile:
    """Soft delete: new issuance stops, issued certificates stay valid and keep their profile link."""
    profile = await get_profile(actor=actor, profile_id=profile_id, permission=Permission.PKI_MANAGE)
    require_usable(profile)
    async with in_transaction() as conn:
        profile.deleted_at = datetime.now(UTC)
        await profile.save(using_db=conn, update_fields=["deleted_at", "updated_at"])
        await audit.record(
            actor=actor,
            action="profile.delete",
            resource_type="certificate_profile",
            resource_id=profile.id,
            details={"name": profile.name},
            connection=conn,
        )
    return profile
