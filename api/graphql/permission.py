"""Every GraphQL field declares its permission here; the decision itself is core.authz's.

`guarded_field(P)` puts `@requires(permission: "P")` in the SDL and checks it on every resolution;
`public_field(reason)` marks the few fields anyone may call. `guard_type(cls, P)` gives each field of an
object type that declares none the type's read permission. A test walks the schema and fails on any field
carrying neither directive, so a forgotten check fails closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location
from strawberry.types import Info

from api.graphql.context import RequestContext
from core import audit, authz
from core.authz import Permission, Scope
from core.errors import KeywardError, Unauthenticated
from models.enums import AuditOutcome


@strawberry.schema_directive(locations=[Location.FIELD_DEFINITION], name="requires")
class RequiresDirective:
    permission: str


@strawberry.schema_directive(locations=[Location.FIELD_DEFINITION], name="public")
class PublicDirective:
    reason: str


# Application-level permissions at a root field cannot be checked before the object is loaded:
# there the field checks authentication and the resolver's service calls authz.require with the scope.
_APPLICATION_PERMISSIONS = frozenset(
    {
        Permission.APPLICATION_READ,
        Permission.APPLICATION_UPDATE,
        Permission.MEMBERS_MANAGE,
        Permission.ENROLLMENT_MANAGE,
        Permission.CONFIG_SECRET_READ,
        Permission.CERTIFICATE_READ,
        Permission.CERTIFICATE_ISSUE,
        Permission.CERTIFICATE_REVOKE,
        Permission.PRIVATE_KEY_READ,
        Permission.AUDIT_READ,
        Permission.ALERTS_MANAGE,
        Permission.SCEP_CHALLENGE_CREATE,
        Permission.APPROVAL_POLICY_MANAGE,
        Permission.APPROVAL_DECIDE,
        Permission.SYNC_MANAGE,
        Permission.SYNC_RUN,
    }
)


def scope_of(source: Any) -> Scope | None:
    """Objects exposed through GraphQL define `authz_scope()`; root fields have no source."""
    getter = getattr(source, "authz_scope", None)
    return getter() if callable(getter) else None


class Requires(BasePermission):
    def __init__(self, permission: Permission) -> None:
        self.permission = permission
        self._schema_directive = RequiresDirective(permission=permission.value)  # type: ignore[misc]

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        context: RequestContext = info.context
        actor = context.actor
        if not actor.is_authenticated:
            raise context.auth_error or Unauthenticated(
                "a bearer token is required: send `Authorization: Bearer <token>`"
            )
        scope = scope_of(source)
        if scope is None and self.permission in _APPLICATION_PERMISSIONS:
            return True
        authz.require(actor, self.permission, scope)
        return True


class _Public(BasePermission):
    def __init__(self, reason: str) -> None:
        self._schema_directive = PublicDirective(reason=reason)  # type: ignore[misc]

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return True


def permission_extension(permission: Permission) -> PermissionExtension:
    return PermissionExtension(permissions=[Requires(permission)])


def guarded_field(permission: Permission, **kwargs: Any) -> Any:
    """`strawberry.field` that requires `permission`; usable bare or as a decorator."""
    extensions = [permission_extension(permission), *kwargs.pop("extensions", [])]
    return strawberry.field(extensions=extensions, **kwargs)


class AuditFailures(FieldExtension):
    """Record a refused or failed mutation in the audit log; services record their own successes."""

    async def resolve_async(self, next_: Any, source: Any, info: Info, **kwargs: Any) -> Any:
        try:
            return await next_(source, info, **kwargs)
        except KeywardError as error:
            actor = info.context.actor
            await audit.record(
                actor=actor,
                action=f"mutation.{info.field_name}",
                resource_type="graphql",
                outcome=AuditOutcome.FAILURE,
                details={"code": error.code, "message": error.message},
            )
            raise


def guarded_mutation(permission: Permission, **kwargs: Any) -> Any:
    """A mutation: permission checked first (outermost), failures of any kind audited."""
    # Strawberry nests extensions so that the LAST one is outermost: AuditFailures must see refusals too.
    extensions = [*kwargs.pop("extensions", []), permission_extension(permission), AuditFailures()]
    return strawberry.mutation(extensions=extensions, **kwargs)


def public_field(reason: str, **kwargs: Any) -> Any:
    return strawberry.field(extensions=[PermissionExtension(permissions=[_Public(reason)])], **kwargs)


def public_mutation(reason: str, **kwargs: Any) -> Any:
    return strawberry.mutation(extensions=[PermissionExtension(permissions=[_Public(reason)])], **kwargs)


def _has_permission_extension(extensions: list[FieldExtension]) -> bool:
    return any(isinstance(ext, PermissionExtension) for ext in extensions)


T = TypeVar("T")


def guard_type(permission: Permission) -> Callable[[T], T]:
    """Class decorator (after @strawberry.type): fields without their own guard require `permission`."""

    def apply(cls: T) -> T:
        definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
        for field in definition.fields:
            if not _has_permission_extension(field.extensions):
                field.extensions.append(permission_extension(permission))
        return cls

    return apply


def public_type(reason: str) -> Callable[[T], T]:
    """Class decorator for payloads whose every field is the caller's own result (a login's token)."""

    def apply(cls: T) -> T:
        definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
        for field in definition.fields:
            if not _has_permission_extension(field.extensions):
                field.extensions.append(PermissionExtension(permissions=[_Public(reason)]))
        return cls

    return apply
