"""Authentication: passwords (argon2), bearer tokens (stored as SHA-256), and loading the Actor."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from tortoise.backends.base.client import BaseDBAsyncClient

from core.authz import Actor, LegacyGrant
from core.errors import InvalidInput, Unauthenticated
from core.legacy import roles as legacy_roles
from core.rows import aliased_columns, from_row
from models import (
    ApiToken,
    ApplicationMembership,
    LegacyMembership,
    LegacyProject,
    LegacyResource,
    LegacyRole,
    Principal,
    ProductMembership,
)
from models.enums import PrincipalKind, TokenKind

TOKEN_PREFIX = "kw_"
MIN_PASSWORD_LENGTH = 12
LAST_USED_GRANULARITY = timedelta(minutes=1)

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown email as slow as one for a known email.
_DUMMY_HASH = _hasher.hash("keyward-timing-equalizer")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; passwords use argon2.
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    *,
    principal: Principal,
    kind: TokenKind,
    name: str = "",
    ttl: timedelta | None = None,
    connection: BaseDBAsyncClient | None = None,
) -> tuple[str, ApiToken]:
    """Create a token and return its plaintext, which is never stored and shown only this once."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = await ApiToken.create(
        principal=principal,
        kind=kind,
        name=name,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:10],
        expires_at=datetime.now(UTC) + ttl if ttl else None,
        using_db=connection,
    )
    return plaintext, token


@dataclass(frozen=True)
class _Statements:
    """What every authenticated request reads, in plain SQL: through the ORM's query builder these cost
    ~0.9 ms of CPU a request, several times what the database took to run them."""

    token: str  # the token and its principal, by the token's hash
    product_memberships: str  # by principal
    application_memberships: str  # by principal
    legacy_memberships: str  # by principal and organization, with project and custom role


_statements: dict[str, _Statements] = {}


def _statements_for(connection: BaseDBAsyncClient) -> _Statements:
    dialect = str(connection.capabilities.dialect)
    found = _statements.get(dialect)
    if found is None:
        first, second = ("?", "?") if dialect == "sqlite" else ("$1", "$2")
        found = _Statements(
            token=(
                f"SELECT {aliased_columns(ApiToken, 't')}, {aliased_columns(Principal, 'p')} "
                f'FROM "{ApiToken._meta.db_table}" t JOIN "{Principal._meta.db_table}" p '
                f'ON p."id" = t."principal_id" WHERE t."token_hash" = {first}'
            ),
            product_memberships=(
                f"SELECT {aliased_columns(ProductMembership, 'm')} "
                f'FROM "{ProductMembership._meta.db_table}" m WHERE m."principal_id" = {first}'
            ),
            application_memberships=(
                f"SELECT {aliased_columns(ApplicationMembership, 'm')} "
                f'FROM "{ApplicationMembership._meta.db_table}" m WHERE m."principal_id" = {first}'
            ),
            legacy_memberships=(
                f"SELECT {aliased_columns(LegacyMembership, 'm')}, {aliased_columns(LegacyProject, 'pr')}, "
                f'{aliased_columns(LegacyRole, "r")} FROM "{LegacyMembership._meta.db_table}" m '
                f'JOIN "{LegacyProject._meta.db_table}" pr ON pr."id" = m."project_id" '
                f'LEFT JOIN "{LegacyRole._meta.db_table}" r ON r."id" = m."custom_role_id" '
                f'WHERE m."principal_id" = {first} AND pr."organization_id" = {second}'
            ),
        )
        _statements[dialect] = found
    return found


async def _rows(statement: str, *values: uuid.UUID | str) -> list[dict[str, Any]]:
    connection = Principal._meta.db
    sqlite = connection.capabilities.dialect == "sqlite"
    arguments = [str(value) if sqlite and isinstance(value, uuid.UUID) else value for value in values]
    return await connection.execute_query_dict(statement, arguments)


async def load_actor(principal: Principal, *, source_address: str | None = None) -> Actor:
    """Load every role of a principal once, so field checks during the request are dictionary lookups."""
    statements = _statements_for(Principal._meta.db)
    products = await _rows(statements.product_memberships, principal.id)
    product = from_row(ProductMembership, products[0], "m__") if products else None
    app_roles = {
        membership.application_id: membership.role
        for membership in (
            from_row(ApplicationMembership, row, "m__")
            for row in await _rows(statements.application_memberships, principal.id)
        )
    }
    return Actor(
        principal_id=principal.id,
        organization_id=principal.organization_id,
        kind=PrincipalKind(principal.kind).value,
        name=principal.email or principal.name,
        product_role=product.role if product else None,
        application_roles=app_roles,
        source_address=source_address,
        legacy_grants=await load_legacy_grants(principal),
    )


def _string_list(value: object) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


async def load_legacy_grants(principal: Principal) -> dict[uuid.UUID, LegacyGrant]:
    """The principal's legacy roles (SPEC §12) as grants keyed by container application id: one query, and
    one more only when a custom role limits by profile slugs. A condition that cannot be evaluated (an
    unknown key, a malformed value) denies everything that role would grant."""
    found = await _rows(
        _statements_for(Principal._meta.db).legacy_memberships, principal.id, principal.organization_id
    )
    if not found:
        return {}
    memberships = [_legacy_membership(row) for row in found]
    wanted_slugs: dict[uuid.UUID, set[str]] = {}
    for membership in memberships:
        role = membership.custom_role
        if membership.role == "custom" and role is not None and isinstance(role.conditions, dict):
            slugs = _string_list(role.conditions.get("profileSlugs"))
            if slugs:
                wanted_slugs.setdefault(membership.project_id, set()).update(slugs)
    profile_ids: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
    if wanted_slugs:
        rows = await LegacyResource.filter(
            project_id__in=list(wanted_slugs),
            kind="profile",
            slug__in=sorted(set().union(*wanted_slugs.values())),
        ).only("project_id", "slug", "target_id")
        profile_ids = {(row.project_id, row.slug): row.target_id for row in rows}
    grants: dict[uuid.UUID, LegacyGrant] = {}
    for membership in memberships:
        grant = legacy_grant(membership, profile_ids)
        grants[membership.project.application_id] = grant
    return grants


def _legacy_membership(row: dict[str, Any]) -> LegacyMembership:
    membership = from_row(LegacyMembership, row, "m__")
    membership.project = from_row(LegacyProject, row, "pr__")
    membership.custom_role = None if row["r__id"] is None else from_row(LegacyRole, row, "r__")
    return membership


_NOTHING = LegacyGrant(permissions=frozenset())


def legacy_grant(
    membership: LegacyMembership, profile_ids: dict[tuple[uuid.UUID, str], uuid.UUID]
) -> LegacyGrant:
    if membership.role in legacy_roles.BUILTIN_ROLES:
        return LegacyGrant(legacy_roles.granted_permissions(legacy_roles.BUILTIN_ROLES[membership.role]))
    role = membership.custom_role
    if membership.role != "custom" or role is None or role.project_id != membership.project_id:
        return _NOTHING
    permissions = _string_list(role.permissions)
    conditions = role.conditions if role.conditions is not None else {}
    if permissions is None or not isinstance(conditions, dict):
        return _NOTHING
    if set(conditions) - set(legacy_roles.CONDITION_KEYS):
        return _NOTHING
    limited_profiles: frozenset[uuid.UUID] | None = None
    if "profileSlugs" in conditions:
        slugs = _string_list(conditions["profileSlugs"])
        if slugs is None:
            return _NOTHING
        # A slug the project does not have limits to nothing more: it matches no profile.
        limited_profiles = frozenset(
            profile_ids[(membership.project_id, slug)]
            for slug in slugs
            if (membership.project_id, slug) in profile_ids
        )
    limited_syncs: frozenset[str] | None = None
    if "syncNames" in conditions:
        names = _string_list(conditions["syncNames"])
        if names is None:
            return _NOTHING
        limited_syncs = frozenset(names)
    return LegacyGrant(
        permissions=legacy_roles.granted_permissions(permissions),
        profile_ids=limited_profiles,
        sync_names=limited_syncs,
    )


async def authenticate_bearer(token: str, *, source_address: str | None = None) -> Actor:
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("the bearer token is malformed")
    # One query for the token and its principal (a JOIN), not one each.
    found = await _rows(_statements_for(Principal._meta.db).token, hash_token(token))
    now = datetime.now(UTC)
    row = from_row(ApiToken, found[0], "t__") if found else None
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("the bearer token is unknown or revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated("the bearer token has expired; log in again")
    principal = from_row(Principal, found[0], "p__")
    if not principal.is_active:
        raise Unauthenticated("this identity is deactivated")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY:
        # At most one write a minute per token, so busy clients do not turn every request into a write.
        await ApiToken.filter(id=row.id).update(last_used_at=now)
    return await load_actor(principal, source_address=source_address)


async def login(*, email: str, password: str, session_ttl: timedelta) -> tuple[str, ApiToken]:
    principal = await Principal.get_or_none(email=email.strip().lower(), kind=PrincipalKind.USER)
    if not verify_password(principal.password_hash if principal else None, password) or principal is None:
        raise Unauthenticated("wrong email or password")
    if not principal.is_active:
        raise Unauthenticated("this user is deactivated")
    return await create_token(principal=principal, kind=TokenKind.SESSION, name="login", ttl=session_ttl)


async def find_token(token: str) -> ApiToken | None:
    """The stored row for a presented plaintext token (looked up by its hash), if any."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return await ApiToken.get_or_none(token_hash=hash_token(token))


async def revoke_token(token: ApiToken, *, connection: BaseDBAsyncClient | None = None) -> bool:
    """Mark a token revoked; a conditional update, so a concurrent second revocation changes nothing."""
    now = datetime.now(UTC)
    query = ApiToken.filter(id=token.id, revoked_at__isnull=True)
    if connection is not None:
        query = query.using_db(connection)
    changed = await query.update(revoked_at=now)
    if changed:
        token.revoked_at = now
    return bool(changed)
