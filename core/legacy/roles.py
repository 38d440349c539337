"""The legacy role vocabulary: what each legacy permission grants, and the built-in legacy roles.

Legacy projects had project-level roles (admin, member, viewer) and custom roles made of permissions
from this fixed vocabulary, optionally limited by conditions. Each legacy permission grants Keyward
permissions inside the project's container application (core.authz does the checking).
"""

from __future__ import annotations

from core.authz import Permission
from models.enums import ApplicationRole

# Legacy permission -> the Keyward permissions it grants inside the legacy project.
LEGACY_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "project:read": frozenset({Permission.APPLICATION_READ}),
    "certificates:read": frozenset({Permission.APPLICATION_READ, Permission.CERTIFICATE_READ}),
    "certificates:issue": frozenset({Permission.CERTIFICATE_ISSUE}),
    "certificates:revoke": frozenset({Permission.CERTIFICATE_REVOKE}),
    "certificates:read-private-key": frozenset({Permission.PRIVATE_KEY_READ}),
    "enrollment:read-secrets": frozenset({Permission.CONFIG_SECRET_READ}),
    "scep-challenges:create": frozenset({Permission.SCEP_CHALLENGE_CREATE}),
    "alerts:manage": frozenset({Permission.ALERTS_MANAGE}),
    "syncs:manage": frozenset({Permission.SYNC_MANAGE}),
    "syncs:run": frozenset({Permission.SYNC_RUN}),
    "approval-policies:manage": frozenset({Permission.APPROVAL_POLICY_MANAGE}),
    "approvals:decide": frozenset({Permission.APPROVAL_DECIDE}),
    "members:manage": frozenset({Permission.MEMBERS_MANAGE}),
    "audit:read": frozenset({Permission.AUDIT_READ}),
}

# Conditions a custom role may carry, each limiting the permissions that act on that kind of resource.
#   profileSlugs: certificates (read, issue, revoke, private keys) and SCEP challenges of these profiles only
#   syncNames: syncs with these names only (manage, run)
CONDITION_KEYS = ("profileSlugs", "syncNames")

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(LEGACY_PERMISSIONS),
    "member": frozenset(
        {
            "project:read",
            "certificates:read",
            "certificates:issue",
            "certificates:revoke",
            "certificates:read-private-key",
            "scep-challenges:create",
            "syncs:run",
            "approvals:decide",
        }
    ),
    "viewer": frozenset({"project:read", "certificates:read", "audit:read"}),
}

# The migration assistant's default mapping of the built-in roles (SPEC §13).
BUILTIN_ROLE_TO_APPLICATION_ROLE: dict[str, ApplicationRole] = {
    "admin": ApplicationRole.ADMIN,
    "member": ApplicationRole.OPERATOR,
    "viewer": ApplicationRole.AUDITOR,
}


def granted_permissions(legacy_permissions: frozenset[str] | set[str] | list[str]) -> frozenset[Permission]:
    """The Keyward permissions that a set of legacy permissions grants (unknown names grant nothing)."""
    granted: set[Permission] = set()
    for name in legacy_permissions:
        granted |= LEGACY_PERMISSIONS.get(name, frozenset())
    return frozenset(granted)
