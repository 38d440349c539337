"""Principals (users, machine identities), their product roles, and their API tokens (SPEC §2)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import audit, authn, authz
from core.access import organization_scope
from core.authz import Actor, Permission
from core.errors import Conflict, InvalidInput, InvalidState, NotFound
from core.naming import clean_name
from models import ApiToken, Organization, Principal, ProductMembership
from models.enums import PrincipalKind, ProductRole, TokenKind

MAX_NAME_LENGTH = 200
MAX_TOKEN_DAYS = 3650


def normalize_email(email: str) -> str:
    cleaned = email.strip().lower()
    local, at, domain = cleaned.partition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in cleaned) or len(cleaned) > 320:
        raise InvalidInput(f"{email!r} is not an email address (name@example.com)", field="email")
    return cleaned


async def get_organization(*, actor: Actor) -> Organization:
    authz.require(actor, Permission.PRODUCT_READ)
    return await Organization.get(id=actor.organization_id)


async def load_principal(actor: Actor, principal_id: uuid.UUID) -> Principal:
    """A principal of the actor's organization; any other id answers as unknown."""
    principal = await Principal.get_or_none(id=principal_id, organization_id=actor.organization_id)
    if principal is None:
        raise NotFound(f"principal {principal_id} not found")
    return principal


async def list_principals(*, actor: Actor, kind: PrincipalKind) -> list[Principal]:
    authz.require(actor, Permission.PRODUCT_READ, organization_scope(actor))
    return (
        await Principal.filter(organization_id=actor.organization_id, kind=kind)
        .order_by("name", "id")
        .prefetch_related("product_membership")
    )


async def _create_principal(
    *,
    actor: Actor,
    kind: PrincipalKind,
    name: str,
    role: ProductRole,
    email: str | None = None,
    password_hash: str | None = None,
) -> Principal:
    try:
        async with in_transaction() as conn:
            principal = await Principal.create(
                organization_id=actor.organization_id,
                kind=kind,
                name=name,
                email=email,
                password_hash=password_hash,
                using_db=conn,
            )
            await ProductMembership.create(
                organization_id=actor.organization_id, principal=principal, role=role, using_db=conn
            )
            await audit.record(
                actor=actor,
                action="user.create" if kind == PrincipalKind.USER else "machine_identity.create",
                resource_type="principal",
                resource_id=principal.id,
                details={"name": name, "email": email, "product_role": role.value},
                connection=conn,
            )
    except IntegrityError:
        # Two concurrent creations of the same email: the unique index decides.
        raise Conflict(f"a user with email {email!r} already exists", field="email") from None
    return principal


async def create_user(
    *, actor: Actor, email: str, name: str, role: ProductRole, password: str | None = None
) -> Principal:
    """Every principal gets its product membership at creation: without one it could do nothing."""
    authz.require(actor, Permission.PRODUCT_MANAGE, organization_scope(actor))
    email = normalize_email(email)
    name = clean_name(name, max_length=MAX_NAME_LENGTH)
    password_hash = authn.hash_password(password) if password is not None else None
    if await Principal.exists(email=email):
        raise Conflict(f"a user with email {email!r} already exists", field="email")
    return await _create_principal(
        actor=actor, kind=PrincipalKind.USER, name=name, role=role, email=email, password_hash=password_hash
    )


async def create_machine_identity(*, actor: Actor, name: str, role: ProductRole) -> Principal:
    authz.require(actor, Permission.PRODUCT_MANAGE, organization_scope(actor))
    return await _create_principal(
        actor=actor, kind=PrincipalKind.MACHINE, name=clean_name(name, max_length=MAX_NAME_LENGTH), role=role
    )


async def _ensure_another_active_admin(
    conn: BaseDBAsyncClient, organization_id: uuid.UUID, leaving: uuid.UUID
) -> None:
    """Refuse to leave the organization without an active Product Admin (nobody could manage it)."""
    # Locking the admin memberships serializes concurrent demotions on PostgreSQL (no-op on SQLite).
    admins = (
        await ProductMembership.select_for_update()
        .filter(organization_id=organization_id, role=ProductRole.ADMIN)
        .using_db(conn)
    )
    others = [m.principal_id for m in admins if m.principal_id != leaving]
    if not others or not await Principal.filter(id__in=others, is_active=True).using_db(conn).exists():
        raise InvalidState(
            "this is the last active Product Admin of the organization: make another principal "
            "Product Admin first"
        )


async def set_product_role(*, actor: Actor, principal_id: uuid.UUID, role: ProductRole) -> Principal:
    authz.require(actor, Permission.PRODUCT_MANAGE, organization_scope(actor))
    principal = await load_principal(actor, principal_id)
    async with in_transaction() as conn:
        membership = (
            await ProductMembership.select_for_update().using_db(conn).get_or_none(principal_id=principal.id)
        )
        previous = membership.role if membership else None
        if membership is not None and previous == ProductRole.ADMIN and role != ProductRole.ADMIN:
            await _ensure_another_active_admin(conn, principal.organization_id, principal.id)
        if membership is None:
            await ProductMembership.create(
                organization_id=principal.organization_id, principal=principal, role=role, using_db=conn
            )
        elif previous != role:
            membership.role = role
            await membership.save(using_db=conn, update_fields=["role"])
        await audit.record(
            actor=actor,
            action="product_membership.set_role",
            resource_type="principal",
            resource_id=principal.id,
            details={
                "previous_role": ProductRole(previous).value if previous else None,
                "product_role": role.value,
            },
            connection=conn,
        )
    return principal


async def set_principal_active(*, actor: Actor, principal_id: uuid.UUID, active: bool) -> Principal:
    """A deactivated principal's tokens stop working at once (authentication checks is_active)."""
    authz.require(actor, Permission.PRODUCT_MANAGE, organization_scope(actor))
    principal = await load_principal(actor, principal_id)
    if principal.is_active == active:
        state = "active" if active else "deactivated"
        raise InvalidState(f"principal {principal.id} is already {state}")
    async with in_transaction() as conn:
        if not active:
            membership = await ProductMembership.filter(principal_id=principal.id).using_db(conn).first()
            if membership is not None and membership.role == ProductRole.ADMIN:
                await _ensure_another_active_admin(conn, principal.organization_id, principal.id)
        principal.is_active = active
        await principal.save(using_db=conn, update_fields=["is_active"])
        await audit.record(
            actor=actor,
            action="principal.reactivate" if active else "principal.deactivate",
            resource_type="principal",
            resource_id=principal.id,
            details={"name": principal.name, "kind": PrincipalKind(principal.kind).value},
            connection=conn,
        )
    return principal


async def product_role_of(principal: Principal) -> ProductRole | None:
    membership = await ProductMembership.get_or_none(principal_id=principal.id)
    return ProductRole(membership.role) if membership else None


# Tokens ------------------------------------------------------------------------------------------------


async def create_api_token(
    *,
    actor: Actor,
    principal_id: uuid.UUID | None,
    name: str,
    expires_in_days: int | None = None,
) -> tuple[str, ApiToken]:
    """A user mints tokens for themselves; a Product Admin for any principal (machine identities)."""
    authz.require(actor, Permission.SELF)
    if principal_id is None or principal_id == actor.principal_id:
        if actor.principal_id is None:
            raise InvalidInput("this caller is not a principal: pass principalId", field="principalId")
        principal = await load_principal(actor, actor.principal_id)
    else:
        authz.require(actor, Permission.PRODUCT_MANAGE, organization_scope(actor))
        principal = await load_principal(actor, principal_id)
    name = clean_name(name, max_length=MAX_NAME_LENGTH)
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise InvalidInput(
            f"expiresInDays must be between 1 and {MAX_TOKEN_DAYS}, or omitted for a token that does "
            "not expire",
            field="expiresInDays",
        )
    if not principal.is_active:
        raise InvalidState(f"principal {principal.id} is deactivated: reactivate it first")
    ttl = timedelta(days=expires_in_days) if expires_in_days is not None else None
    async with in_transaction() as conn:
        plaintext, token = await authn.create_token(
            principal=principal, kind=TokenKind.API, name=name, ttl=ttl, connection=conn
        )
        await audit.record(
            actor=actor,
            action="api_token.create",
            resource_type="api_token",
            resource_id=token.id,
            details={
                "principal_id": str(principal.id),
                "name": name,
                "prefix": token.prefix,
                "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            },
            connection=conn,
        )
    return plaintext, token


async def list_own_tokens(*, actor: Actor) -> list[ApiToken]:
    authz.require(actor, Permission.SELF)
    if actor.principal_id is None:
        return []
    return await ApiToken.filter(principal_id=actor.principal_id).order_by("-created_at", "id")


async def revoke_api_token(*, actor: Actor, token_id: uuid.UUID) -> ApiToken:
    """Own tokens, or any token of the organization for a Product Admin; others' tokens answer as unknown."""
    authz.require(actor, Permission.SELF)
    token = await ApiToken.get_or_none(id=token_id, principal__organization_id=actor.organization_id)
    if token is None or (
        token.principal_id != actor.principal_id
        and not authz.can(actor, Permission.PRODUCT_MANAGE, organization_scope(actor))
    ):
        raise NotFound(f"token {token_id} not found")
    if token.revoked_at is not None:
        raise InvalidState(f"token {token_id} is already revoked")
    async with in_transaction() as conn:
        if not await authn.revoke_token(token, connection=conn):
            raise InvalidState(f"token {token_id} is already revoked")
        await audit.record(
            actor=actor,
            action="api_token.revoke",
            resource_type="api_token",
            resource_id=token.id,
            details={"principal_id": str(token.principal_id), "prefix": token.prefix},
            connection=conn,
        )
    return token


async def logout(*, actor: Actor, presented_token: str) -> ApiToken:
    """End the login session whose token the caller presented; API tokens are revoked by revokeApiToken."""
    authz.require(actor, Permission.SELF)
    token = await authn.find_token(presented_token)
    if token is None or token.principal_id != actor.principal_id or token.revoked_at is not None:
        raise InvalidState("no active session token was presented")
    if TokenKind(token.kind) != TokenKind.SESSION:
        raise InvalidState(
            "the presented token is an API token, not a login session: revoke it with revokeApiToken"
        )
    async with in_transaction() as conn:
        if not await authn.revoke_token(token, connection=conn):
            raise InvalidState("no active session token was presented")
        await audit.record(
            actor=actor,
            action="session.logout",
            resource_type="api_token",
            resource_id=token.id,
            details={"prefix": token.prefix},
            connection=conn,
        )
    return token
