"""Who may do what: the one place that decides (SPEC §2). Deny by default.

A permission is checked against a Scope: the organization and, for application resources, the
application. Product Admins hold every permission in their organization; Product Members hold the
product-read permissions and, inside applications they belong to, what their application role grants.
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
    return role is not None and permission in APPLICATION_ROLE_PERMISSIONS[role]


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
