"""Who may do what: the one place that decides (SPEC §2). Deny by default.

A permission is checked against a Scope: the organization and, for application resources, the
application. Product Admins hold every permission in their organization; Product Members hold the
product-read permissions and, inside applications they belong to, what their application role grants.
Inside a legacy project's container, a legacy role grants what core.legacy.roles maps it to (SPEC §12),
and a custom role's conditions limit certificate and sync permissions to the profile or sync the Scope
names: a scope that names none is denied.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum

from core.errors import Forbidden, NotFound, Unauthenticated
from models.enums import ApplicationRole, PrincipalKind, ProductRole


class Permission(str, Enum):
    # Organization-wide, Product Admin only
    PRODUCT_MANAGE = "product:manage"  # users, machine identities, product memberships, tokens of others
    PKI_MANAGE = "pki:manage"  # CAs, policies, profiles
    APPLICATION_CREATE = "application:create"
    APPLICATION_DELETE = "application:delete"
    AUDIT_READ_ALL = "audit:read_all"
    # Organization-wide, any Product Member
    PKI_READ = "pki:read"  # metadata of CAs, policies, profiles
    PRODUCT_READ = "product:read"  # the organization, its principals' names
    SELF = "self"  # the caller's own identity, own tokens
    # Inside an application
    APPLICATION_READ = "application:read"  # the application, its members, attachments, inventory
    APPLICATION_UPDATE = "application:update"
    MEMBERS_MANAGE = "application:members_manage"
    ENROLLMENT_MANAGE = "application:enrollment_manage"  # attach/detach profiles, method settings
    CONFIG_SECRET_READ = "application:config_secret_read"  # EAB keys etc.: app Admin only
    CERTIFICATE_READ = "certificate:read"
    CERTIFICATE_ISSUE = "certificate:issue"  # issue, renew, import
    CERTIFICATE_REVOKE = "certificate:revoke"
    PRIVATE_KEY_READ = "certificate:private_key_read"
    AUDIT_READ = "audit:read"  # the application's audit log
    ALERTS_MANAGE = "application:alerts_manage"  # create/update/delete alerts, send test alerts
    SCEP_CHALLENGE_CREATE = "application:scep_challenge_create"  # dynamic SCEP one-time challenges
    APPROVAL_POLICY_MANAGE = "application:approval_policy_manage"  # create/update/delete approval policies
    # Approve or reject a request; the service also requires being a listed approver of the current step.
    APPROVAL_DECIDE = "application:approval_decide"
    SYNC_MANAGE = "application:sync_manage"  # create/update/delete syncs and their credentials
    SYNC_RUN = "application:sync_run"  # run a sync, remove a certificate from one


_MEMBER_PERMISSIONS = frozenset({Permission.PKI_READ, Permission.PRODUCT_READ, Permission.SELF})

_AUDITOR = frozenset({Permission.APPLICATION_READ, Permission.CERTIFICATE_READ, Permission.AUDIT_READ})
_OPERATOR = frozenset(
    {
        Permission.APPLICATION_READ,
        Permission.CERTIFICATE_READ,
        Permission.CERTIFICATE_ISSUE,
        Permission.CERTIFICATE_REVOKE,
        Permission.PRIVATE_KEY_READ,
        Permission.SCEP_CHALLENGE_CREATE,
        Permission.APPROVAL_DECIDE,
        Permission.SYNC_RUN,
    }
)
_ADMIN = _OPERATOR | {
    Permission.SYNC_MANAGE,
    Permission.APPROVAL_POLICY_MANAGE,
    Permission.APPLICATION_UPDATE,
    Permission.MEMBERS_MANAGE,
    Permission.ENROLLMENT_MANAGE,
    Permission.CONFIG_SECRET_READ,
    Permission.AUDIT_READ,
    Permission.ALERTS_MANAGE,
}

APPLICATION_ROLE_PERMISSIONS: dict[ApplicationRole, frozenset[Permission]] = {
    ApplicationRole.AUDITOR: _AUDITOR,
    ApplicationRole.OPERATOR: _OPERATOR,
    ApplicationRole.ADMIN: frozenset(_ADMIN),
}

# Permissions that mean "you may see this application exists"; without one, it answers as not found.
_VISIBILITY = Permission.APPLICATION_READ


@dataclass(frozen=True)
class Scope:
    organization_id: uuid.UUID
    application_id: uuid.UUID | None = None
    # The one profile or sync acted on, where there is one: legacy custom roles' conditions limit by them.
    profile_id: uuid.UUID | None = None
    sync_name: str | None = None


# Legacy conditions (core.legacy.roles.CONDITION_KEYS): what each one limits.
PROFILE_CONDITIONED = frozenset(
    {
        Permission.CERTIFICATE_READ,
        Permission.CERTIFICATE_ISSUE,
        Permission.CERTIFICATE_REVOKE,
        Permission.PRIVATE_KEY_READ,
        Permission.SCEP_CHALLENGE_CREATE,
    }
)
SYNC_CONDITIONED = frozenset({Permission.SYNC_MANAGE, Permission.SYNC_RUN})


@dataclass(frozen=True)
class LegacyGrant:
    """What a legacy role grants inside one legacy project's container application (SPEC §12).

    `profile_ids` / `sync_names`: None means unlimited; a set limits the certificate (resp. sync)
    permissions to those profiles (resp. syncs), and a scope that names none of them is denied.
    """

    permissions: frozenset[Permission]
    profile_ids: frozenset[uuid.UUID] | None = None
    sync_names: frozenset[str] | None = None

    def allows(self, permission: Permission, scope: Scope) -> bool:
        if permission not in self.permissions:
            return False
        if permission in PROFILE_CONDITIONED and self.profile_ids is not None:
            return scope.profile_id is not None and scope.profile_id in self.profile_ids
        if permission in SYNC_CONDITIONED and self.sync_names is not None:
            return scope.sync_name is not None and scope.sync_name in self.sync_names
        return True


@dataclass
class Actor:
    """The authenticated caller, with every role loaded once per request."""

    principal_id: uuid.UUID | None
    organization_id: uuid.UUID | None
    kind: str  # "user" | "machine" | "system" | "anonymous"
    name: str
    product_role: ProductRole | None = None
    application_roles: dict[uuid.UUID, ApplicationRole] = field(default_factory=dict)
    source_address: str | None = None
    # Legacy roles, keyed by the legacy project's container application id (== the project id).
    legacy_grants: dict[uuid.UUID, LegacyGrant] = field(default_factory=dict)

    @property
    def is_authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def is_machine(self) -> bool:
        return self.kind == PrincipalKind.MACHINE.value

    @property
    def is_product_admin(self) -> bool:
        return self.product_role == ProductRole.ADMIN

    @classmethod
    def anonymous(cls, source_address: str | None = None) -> Actor:
        return cls(None, None, "anonymous", "anonymous", source_address=source_address)

    @classmethod
    def system(cls, organization_id: uuid.UUID, name: str = "keyward") -> Actor:
        """The worker and the CLI act as the system: every permission inside one organization."""
        return cls(None, organization_id, "system", name, product_role=ProductRole.ADMIN)


def can(actor: Actor, permission: Permission, scope: Scope | None = None) -> bool:
    if not actor.is_authenticated or actor.organization_id is None or actor.product_role is None:
        return False
    if scope is not None and scope.organization_id != actor.organization_id:
        return False
    if actor.product_role == ProductRole.ADMIN:
        return True
    if permission in _MEMBER_PERMISSIONS:
        return True
    if scope is None or scope.application_id is None:
        return False
    role = actor.application_roles.get(scope.application_id)
    if role is not None and permission in APPLICATION_ROLE_PERMISSIONS[role]:
        return True
    grant = actor.legacy_grants.get(scope.application_id)
    return grant is not None and grant.allows(permission, scope)


def can_see_application(actor: Actor, scope: Scope) -> bool:
    return can(actor, _VISIBILITY, scope)


def require(actor: Actor, permission: Permission, scope: Scope | None = None) -> None:
    """Raise the error the caller should see: unauthenticated, not found (cannot see it), or forbidden."""
    if not actor.is_authenticated:
        raise Unauthenticated("a bearer token is required: send `Authorization: Bearer <token>`")
    if can(actor, permission, scope):
        return
    if scope is not None and (
        scope.organization_id != actor.organization_id
        or (scope.application_id is not None and not can_see_application(actor, scope))
    ):
        raise NotFound("not found")
    raise Forbidden(f"your role does not grant {permission.value}")


def application_ids_visible_to(actor: Actor) -> set[uuid.UUID] | None:
    """None means every application of the organization (Product Admin)."""
    if actor.is_product_admin:
        return None
    return set(actor.application_roles)


def legacy_project_ids_visible_to(actor: Actor) -> set[uuid.UUID] | None:
    """None means every legacy project of the organization (Product Admin); else those it may read."""
    if actor.is_product_admin:
        return None
    return {
        project_id
        for project_id, grant in actor.legacy_grants.items()
        if Permission.APPLICATION_READ in grant.permissions
    }


def profile_limit(actor: Actor, permission: Permission, scope: Scope) -> frozenset[uuid.UUID] | None:
    """For lists over many profiles (an inventory): None when `permission` holds in `scope` for every
    profile; else the profiles it holds for, through a legacy role limited by profileSlugs (maybe none)."""
    if can(actor, permission, scope):
        return None
    grant = actor.legacy_grants.get(scope.application_id) if scope.application_id else None
    if (
        grant is None
        or grant.profile_ids is None
        or permission not in PROFILE_CONDITIONED
        or permission not in grant.permissions
        or not can(actor, Permission.SELF, scope)
    ):
        return frozenset()
    return grant.profile_ids


def require_for_some_profiles(
    actor: Actor, permission: Permission, scope: Scope
) -> frozenset[uuid.UUID] | None:
    """`require` for a list over many profiles: None (every profile) or the non-empty set it is limited to."""
    limit = profile_limit(actor, permission, scope)
    if limit is None or limit:
        return limit
    require(actor, permission, scope)  # raises: unauthenticated, not found, or forbidden
    return frozenset()
