"""Applications, their members and their attached profiles (SPEC §1, §2, §6)."""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from core import audit, authz, runtime
from core.access import load_application, load_attachment
from core.authz import Actor, Permission, Scope
from core.errors import Conflict, InvalidInput, InvalidState, LegacyReadOnly, NotFound
from core.legacy import rules as legacy_rules
from models import (
    Application,
    ApplicationMembership,
    ApplicationProfile,
    Certificate,
    CertificateProfile,
    Principal,
    ProductMembership,
)
from models.enums import ApplicationRole, CertificateStatus
from pki import sealing
from pki.duration import parse_duration
from pki.errors import InvalidDuration

# A DNS label: the name appears in URLs (EST's `{appName}.{profileName}` label among them).
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_DESCRIPTION_LENGTH = 2000
MAX_RENEW_BEFORE_DAYS = 3650


def validate_name(name: str) -> str:
    if not _SLUG.match(name):
        raise InvalidInput(
            f"application name {name!r} is not a valid slug: use 1-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit (e.g. payments-api)",
            field="name",
        )
    return name


def validate_description(description: str) -> str:
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters", field="description"
        )
    return description


def _name_taken(name: str) -> Conflict:
    return Conflict(f"an application named {name!r} already exists in this organization", field="name")


# Applications ------------------------------------------------------------------------------------------


async def _load_regular(actor: Actor, application_id: uuid.UUID, permission: Permission) -> Application:
    """An application, never a legacy project's container: that one answers as not found here."""
    application = await load_application(actor, application_id, permission)
    if application.legacy:
        raise NotFound(f"application {application_id} not found")
    return application


def _refuse_legacy_members(application: Application) -> None:
    if application.legacy:
        raise LegacyReadOnly(
            "members of a legacy project hold legacy roles and are not managed as application members; "
            "add them to an Application instead (the migration assistant maps their roles)"
        )


async def get_application(*, actor: Actor, application_id: uuid.UUID) -> Application:
    return await _load_regular(actor, application_id, Permission.APPLICATION_READ)


@dataclass(frozen=True)
class ApplicationPage:
    rows: list[Application]
    has_next_page: bool


async def list_applications(
    *,
    actor: Actor,
    first: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    name_contains: str | None = None,
) -> ApplicationPage:
    """Keyset page over (created_at, id) of the applications the actor may see."""
    authz.require(actor, Permission.SELF)
    query = Application.filter(organization_id=actor.organization_id, legacy=False)
    visible = authz.application_ids_visible_to(actor)
    if visible is not None:
        if not visible:
            return ApplicationPage([], False)
        query = query.filter(id__in=list(visible))
    if name_contains:
        query = query.filter(name__contains=name_contains.strip().lower())
    if after is not None:
        created_at, row_id = after
        query = query.filter(Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=row_id))
    rows = await query.order_by("created_at", "id").limit(first + 1)
    return ApplicationPage(rows[:first], len(rows) > first)


async def create_application(*, actor: Actor, name: str, description: str = "") -> Application:
    assert actor.organization_id is not None
    authz.require(actor, Permission.APPLICATION_CREATE, Scope(actor.organization_id))
    name = validate_name(name)
    description = validate_description(description)
    if await Application.exists(organization_id=actor.organization_id, name=name):
        raise _name_taken(name)
    try:
        async with in_transaction() as conn:
            application = await Application.create(
                organization_id=actor.organization_id, name=name, description=description, using_db=conn
            )
            await audit.record(
                actor=actor,
                action="application.create",
                resource_type="application",
                resource_id=application.id,
                application_id=application.id,
                details={"name": name},
                connection=conn,
            )
    except IntegrityError:
        raise _name_taken(name) from None
    return application


async def update_application(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    name: str | None = None,
    description: str | None = None,
) -> Application:
    """None leaves a field as it is."""
    application = await _load_regular(actor, application_id, Permission.APPLICATION_UPDATE)
    changes: dict[str, dict[str, str]] = {}
    if name is not None and name != application.name:
        name = validate_name(name)
        if await Application.exists(organization_id=application.organization_id, name=name):
            raise _name_taken(name)
        changes["name"] = {"from": application.name, "to": name}
        application.name = name
    if description is not None:
        description = validate_description(description)
        if description != application.description:
            changes["description"] = {"from": application.description, "to": description}
            application.description = description
    if not changes:
        return application
    try:
        async with in_transaction() as conn:
            await application.save(using_db=conn, update_fields=[*changes, "updated_at"])
            await audit.record(
                actor=actor,
                action="application.update",
                resource_type="application",
                resource_id=application.id,
                application_id=application.id,
                details=changes,
                connection=conn,
            )
    except IntegrityError:
        raise _name_taken(application.name) from None
    return application


def _still_valid_certificates(application_id: uuid.UUID, now: datetime) -> Q:
    # A renewed certificate stays valid until it expires (SPEC §8), so it counts as in use too.
    return Q(application_id=application_id, not_after__gt=now) & Q(
        status__in=[CertificateStatus.ACTIVE, CertificateStatus.RENEWED]
    )


async def delete_application(*, actor: Actor, application_id: uuid.UUID) -> Application:
    """Refused while certificates are in use; revoked and expired ones outlive it (CRL, OCSP still answer)."""
    application = await _load_regular(actor, application_id, Permission.APPLICATION_DELETE)
    async with in_transaction() as conn:
        # Lock the row so an issuance racing the delete waits for it (no-op on SQLite).
        if await Application.select_for_update().using_db(conn).get_or_none(id=application.id) is None:
            raise NotFound(f"application {application_id} not found")
        in_use = (
            await Certificate.filter(_still_valid_certificates(application.id, datetime.now(UTC)))
            .using_db(conn)
            .count()
        )
        if in_use:
            raise InvalidState(
                f"application {application.name!r} still has {in_use} valid certificate(s) (active, or "
                "renewed and not yet expired): revoke them or wait until they expire, then delete it"
            )
        members = await ApplicationMembership.filter(application_id=application.id).using_db(conn).delete()
        attachments = await ApplicationProfile.filter(application_id=application.id).using_db(conn).delete()
        kept = (
            await Certificate.filter(application_id=application.id).using_db(conn).update(application_id=None)
        )
        await Application.filter(id=application.id).using_db(conn).delete()
        await audit.record(
            actor=actor,
            action="application.delete",
            resource_type="application",
            resource_id=application.id,
            application_id=application.id,
            details={
                "name": application.name,
                "members_removed": members,
                "profiles_detached": attachments,
                "certificates_kept": kept,
            },
            connection=conn,
        )
    return application


# Members -----------------------------------------------------------------------------------------------


async def list_members(*, actor: Actor, application: Application) -> list[ApplicationMembership]:
    authz.require(actor, Permission.APPLICATION_READ, Scope(application.organization_id, application.id))
    return (
        await ApplicationMembership.filter(application_id=application.id)
        .order_by("created_at", "id")
        .prefetch_related("principal")
    )


async def _member_candidate(application: Application, principal_id: uuid.UUID) -> Principal:
    principal = await Principal.get_or_none(id=principal_id, organization_id=application.organization_id)
    if principal is None:
        raise NotFound(f"principal {principal_id} not found", field="principalId")
    if not await ProductMembership.exists(principal_id=principal.id):
        raise InvalidInput(
            f"principal {principal_id} has no product membership: a Product Admin must give it a product "
            "role first",
            field="principalId",
        )
    if not principal.is_active:
        raise InvalidState(f"principal {principal_id} is deactivated")
    return principal


async def _load_membership(application: Application, principal_id: uuid.UUID) -> ApplicationMembership:
    membership = await ApplicationMembership.get_or_none(
        application_id=application.id, principal_id=principal_id
    ).prefetch_related("principal")
    if membership is None:
        raise NotFound(
            f"principal {principal_id} is not a member of application {application.name!r}",
            field="principalId",
        )
    return membership


async def add_member(
    *, actor: Actor, application_id: uuid.UUID, principal_id: uuid.UUID, role: ApplicationRole
) -> ApplicationMembership:
    application = await load_application(actor, application_id, Permission.MEMBERS_MANAGE)
    _refuse_legacy_members(application)
    principal = await _member_candidate(application, principal_id)
    if await ApplicationMembership.exists(application_id=application.id, principal_id=principal.id):
        raise Conflict(
            f"principal {principal_id} is already a member of {application.name!r}: change its role instead",
            field="principalId",
        )
    try:
        async with in_transaction() as conn:
            membership = await ApplicationMembership.create(
                application=application, principal=principal, role=role, using_db=conn
            )
            await audit.record(
                actor=actor,
                action="application_member.add",
                resource_type="application_membership",
                resource_id=membership.id,
                application_id=application.id,
                details={"principal_id": str(principal.id), "role": role.value},
                connection=conn,
            )
    except IntegrityError:
        raise Conflict(f"principal {principal_id} is already a member of {application.name!r}") from None
    return membership


async def change_member_role(
    *, actor: Actor, application_id: uuid.UUID, principal_id: uuid.UUID, role: ApplicationRole
) -> ApplicationMembership:
    application = await load_application(actor, application_id, Permission.MEMBERS_MANAGE)
    _refuse_legacy_members(application)
    membership = await _load_membership(application, principal_id)
    previous = ApplicationRole(membership.role)
    if previous == role:
        return membership
    async with in_transaction() as conn:
        membership.role = role
        await membership.save(using_db=conn, update_fields=["role"])
        await audit.record(
            actor=actor,
            action="application_member.change_role",
            resource_type="application_membership",
            resource_id=membership.id,
            application_id=application.id,
            details={"principal_id": str(principal_id), "previous_role": previous.value, "role": role.value},
            connection=conn,
        )
    return membership


async def remove_member(
    *, actor: Actor, application_id: uuid.UUID, principal_id: uuid.UUID
) -> ApplicationMembership:
    application = await load_application(actor, application_id, Permission.MEMBERS_MANAGE)
    _refuse_legacy_members(application)
    membership = await _load_membership(application, principal_id)
    async with in_transaction() as conn:
        await ApplicationMembership.filter(id=membership.id).using_db(conn).delete()
        await audit.record(
            actor=actor,
            action="application_member.remove",
            resource_type="application_membership",
            resource_id=membership.id,
            application_id=application.id,
            details={"principal_id": str(principal_id), "role": ApplicationRole(membership.role).value},
            connection=conn,
        )
    return membership


# Attached profiles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiEnrollmentSettings:
    """API enrollment of one (application, profile) pair; renew_before_days None means the profile's."""

    enabled: bool = True
    auto_renew: bool = False
    renew_before_days: int | None = None


async def list_attachments(*, actor: Actor, application: Application) -> list[ApplicationProfile]:
    authz.require(actor, Permission.APPLICATION_READ, Scope(application.organization_id, application.id))
    return (
        await ApplicationProfile.filter(application_id=application.id)
        .order_by("created_at", "id")
        .prefetch_related("profile")
    )


async def _load_profile(application: Application, profile_id: uuid.UUID) -> CertificateProfile:
    profile = await CertificateProfile.get_or_none(id=profile_id, organization_id=application.organization_id)
    if profile is None:
        raise NotFound(f"profile {profile_id} not found", field="profileId")
    return profile


def _check_settings(settings: ApiEnrollmentSettings, profile: CertificateProfile) -> None:
    days = settings.renew_before_days
    if days is None:
        return
    if not 1 <= days <= MAX_RENEW_BEFORE_DAYS:
        raise InvalidInput(
            f"renewBeforeDays must be between 1 and {MAX_RENEW_BEFORE_DAYS}, or null for the profile's "
            f"value ({profile.renew_before_days})",
            field="api.renewBeforeDays",
        )
    try:
        validity = parse_duration(profile.default_validity)
    except InvalidDuration:
        return
    if timedelta(days=days) >= validity:
        raise InvalidInput(
            f"renewBeforeDays ({days}) must be shorter than the profile's validity "
            f"({profile.default_validity}), or every certificate would be due for renewal at once",
            field="api.renewBeforeDays",
        )


def _settings_details(settings: ApiEnrollmentSettings) -> dict[str, object]:
    return {
        "api": {
            "enabled": settings.enabled,
            "auto_renew": settings.auto_renew,
            "renew_before_days": settings.renew_before_days,
        }
    }


async def attach_profile(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    api: ApiEnrollmentSettings,
) -> ApplicationProfile:
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)
    profile = await _load_profile(application, profile_id)
    if profile.deleted_at is not None:
        raise InvalidState(f"profile {profile.name!r} is deleted: it issues no new certificates")
    _check_settings(api, profile)
    if await ApplicationProfile.exists(application_id=application.id, profile_id=profile.id):
        raise Conflict(
            f"profile {profile.name!r} is already attached to {application.name!r}: update it instead",
            field="profileId",
        )
    try:
        async with in_transaction() as conn:
            attachment = await ApplicationProfile.create(
                application=application,
                profile=profile,
                api_enabled=api.enabled,
                api_auto_renew=api.auto_renew,
                api_renew_before_days=api.renew_before_days,
                using_db=conn,
            )
            await audit.record(
                actor=actor,
                action="application_profile.attach",
                resource_type="application_profile",
                resource_id=attachment.id,
                application_id=application.id,
                details={"profile_id": str(profile.id), "profile": profile.name, **_settings_details(api)},
                connection=conn,
            )
    except IntegrityError:
        raise Conflict(f"profile {profile.name!r} is already attached to {application.name!r}") from None
    attachment.profile = profile
    return attachment


def current_settings(attachment: ApplicationProfile) -> ApiEnrollmentSettings:
    return ApiEnrollmentSettings(
        enabled=attachment.api_enabled,
        auto_renew=attachment.api_auto_renew,
        renew_before_days=attachment.api_renew_before_days,
    )


async def update_attachment(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    profile_id: uuid.UUID,
    changes: Mapping[str, Any],
) -> ApplicationProfile:
    """Change the named API settings (fields of ApiEnrollmentSettings); the others stay as they are."""
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)
    attachment = await load_attachment(application, profile_id, "profile")
    before = current_settings(attachment)
    api = dataclasses.replace(before, **changes)
    _check_settings(api, attachment.profile)
    if api == before:
        return attachment
    async with in_transaction() as conn:
        attachment.api_enabled = api.enabled
        attachment.api_auto_renew = api.auto_renew
        attachment.api_renew_before_days = api.renew_before_days
        await attachment.save(
            using_db=conn,
            update_fields=["api_enabled", "api_auto_renew", "api_renew_before_days", "updated_at"],
        )
        await audit.record(
            actor=actor,
            action="application_profile.update",
            resource_type="application_profile",
            resource_id=attachment.id,
            application_id=application.id,
            details={
                "profile_id": str(profile_id),
                "before": _settings_details(before),
                "after": _settings_details(api),
            },
            connection=conn,
        )
    return attachment


async def detach_profile(
    *, actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> ApplicationProfile:
    """Stops new issuance through this pair; certificates already issued stay in the inventory."""
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)
    attachment = await load_attachment(application, profile_id, "profile")
    async with in_transaction() as conn:
        await ApplicationProfile.filter(id=attachment.id).using_db(conn).delete()
        await audit.record(
            actor=actor,
            action="application_profile.detach",
            resource_type="application_profile",
            resource_id=attachment.id,
            application_id=application.id,
            details={"profile_id": str(profile_id), "profile": attachment.profile.name},
            connection=conn,
        )
    return attachment


# ACME enrollment (RFC 8555) ----------------------------------------------------------------------------

EAB_HMAC_KEY_BYTES = 32  # 256-bit HMAC key for HS256


def _eab_context(attachment: ApplicationProfile) -> bytes:
    return f"eab:{attachment.id}".encode()


def _new_eab_credentials(attachment: ApplicationProfile) -> None:
    """A fresh key id and HMAC key (sealed); the previous ones stop working once this is saved."""
    attachment.acme_eab_kid = f"kw-{secrets.token_urlsafe(18)}"
    key = secrets.token_bytes(EAB_HMAC_KEY_BYTES)
    # A key whose base64url text starts with "-" reads as an option to certbot and lego when pasted after a
    # space; drawing again costs 1/64 of one bit of the key's 256.
    while key[0] >> 2 == 62:
        key = secrets.token_bytes(EAB_HMAC_KEY_BYTES)
    attachment.acme_eab_hmac_encrypted = sealing.seal(
        kek=runtime.kek(), plaintext=key, context=_eab_context(attachment)
    )


_ACME_FIELDS = ["acme_enabled", "acme_eab_required", "acme_eab_kid", "acme_eab_hmac_encrypted", "updated_at"]


async def _save_acme(
    actor: Actor, attachment: ApplicationProfile, action: str, details: dict[str, Any]
) -> ApplicationProfile:
    try:
        async with in_transaction() as conn:
            await attachment.save(using_db=conn, update_fields=_ACME_FIELDS)
            await audit.record(
                actor=actor,
                action=action,
                resource_type="application_profile",
                resource_id=attachment.id,
                application_id=attachment.application_id,
                details={"profile_id": str(attachment.profile_id), **details},
                connection=conn,
            )
    except IntegrityError:  # a key id collision (never in practice): nothing was written
        raise Conflict("could not allocate a unique EAB key id; try again") from None
    return attachment


async def enable_acme(
    *, actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID, eab_required: bool = True
) -> ApplicationProfile:
    """Turn ACME on for the pair; the first enable creates the EAB key id and HMAC key."""
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)
    attachment = await load_attachment(application, profile_id, "profile")
    if attachment.profile.deleted_at is not None:
        raise InvalidState(f"profile {attachment.profile.name!r} is deleted: it issues no new certificates")
    generated = attachment.acme_eab_kid is None or attachment.acme_eab_hmac_encrypted is None
    if attachment.acme_enabled and attachment.acme_eab_required == eab_required and not generated:
        return attachment
    if generated:
        _new_eab_credentials(attachment)
    attachment.acme_enabled = True
    attachment.acme_eab_required = eab_required
    return await _save_acme(
        actor,
        attachment,
        "application_profile.acme_enable",
        {"eab_required": eab_required, "eab_key_generated": generated},
    )


async def disable_acme(
    *, actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> ApplicationProfile:
    """Turn ACME off: the directory answers 404; accounts and the EAB key are kept for a later enable."""
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)
    attachment = await load_attachment(application, profile_id, "profile")
    if not attachment.acme_enabled:
        return attachment
    attachment.acme_enabled = False
    return await _save_acme(actor, attachment, "application_profile.acme_disable", {})


async def rotate_acme_eab(
    *, actor: Actor, application_id: uuid.UUID, profile_id: uuid.UUID
) -> ApplicationProfile:
    """A new EAB key id and HMAC key; the old ones stop working at once (existing accounts stay valid)."""
    application = await load_application(actor, application_id, Permission.ENROLLMENT_MANAGE)
    legacy_rules.refuse_enrollment_change(application)
    attachment = await load_attachment(application, profile_id, "profile")
    _new_eab_credentials(attachment)
    return await _save_acme(actor, attachment, "application_profile.acme_rotate_eab", {})


def acme_eab_kid(*, actor: Actor, attachment: ApplicationProfile, organization_id: uuid.UUID) -> str | None:
    """The EAB key id: application Admins and Product Admins only."""
    authz.require(actor, Permission.CONFIG_SECRET_READ, Scope(organization_id, attachment.application_id))
    return attachment.acme_eab_kid


def acme_eab_hmac_key(
    *, actor: Actor, attachment: ApplicationProfile, organization_id: uuid.UUID
) -> str | None:
    """The EAB HMAC key, base64url without padding as ACME clients take it: application Admins only."""
    authz.require(actor, Permission.CONFIG_SECRET_READ, Scope(organization_id, attachment.application_id))
    if attachment.acme_eab_hmac_encrypted is None:
        return None
    key = sealing.unseal(
        kek=runtime.kek(), sealed=attachment.acme_eab_hmac_encrypted, context=_eab_context(attachment)
    )
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")
