"""Legacy roles to application roles for the migration assistant (SPEC §13, step 7).

Built-in roles map one to one (admin→Admin, member→Operator, viewer→Auditor). A custom role maps to the
highest application role whose permissions it fully covers *in that application*, so migration never
widens access: a permission limited by a condition counts only where the condition is moot (the
application holds only the profiles, or only the syncs, it allowed). Every legacy permission the chosen
role does not carry, and every condition that could not be kept, is reported.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.authz import APPLICATION_ROLE_PERMISSIONS, PROFILE_CONDITIONED, SYNC_CONDITIONED, Permission
from core.legacy.roles import (
    BUILTIN_ROLE_TO_APPLICATION_ROLE,
    BUILTIN_ROLES,
    CONDITION_KEYS,
    LEGACY_PERMISSIONS,
)
from models.enums import ApplicationRole

# Highest first: the first one a role covers is the closest.
ROLE_ORDER = (ApplicationRole.ADMIN, ApplicationRole.OPERATOR, ApplicationRole.AUDITOR)


@dataclass(frozen=True)
class RoleMapping:
    """The application role a legacy membership becomes in one application (None: not migrated there)."""

    role: ApplicationRole | None
    dropped_permissions: tuple[str, ...] = ()
    dropped_conditions: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # Keyward permissions a role chosen by hand grants beyond the legacy role (reported as warnings).
    gained_permissions: tuple[str, ...] = ()


def map_builtin_role(legacy_role: str) -> RoleMapping:
    role = BUILTIN_ROLE_TO_APPLICATION_ROLE.get(legacy_role)
    if role is None:
        return RoleMapping(None, notes=(f"unknown legacy role {legacy_role!r}",))
    return RoleMapping(role)


def _names(value: Any) -> list[str] | None:
    """A condition's list of names, or None when the condition is absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value] if isinstance(value, list | tuple | set | frozenset) else []


def map_custom_role(
    permissions: Collection[str],
    conditions: Mapping[str, Any] | None,
    *,
    application: str,
    profile_slugs: Collection[str],
    sync_names: Collection[str],
) -> RoleMapping:
    """The closest role in `application`, which holds `profile_slugs` and (once migrated) `sync_names`."""
    conditions = dict(conditions or {})
    unknown_keys = sorted(set(conditions) - set(CONDITION_KEYS))
    if unknown_keys:
        # What an unknown condition limited cannot be told: keeping any permission could widen access.
        return RoleMapping(
            None,
            dropped_permissions=tuple(sorted(set(permissions))),
            dropped_conditions=tuple(f"unknown condition {key!r}" for key in unknown_keys),
        )
    allowed_profiles = _names(conditions.get("profileSlugs"))
    allowed_syncs = _names(conditions.get("syncNames"))
    profile_moot = allowed_profiles is None or set(profile_slugs) <= set(allowed_profiles)
    sync_moot = allowed_syncs is None or set(sync_names) <= set(allowed_syncs)

    held: set[Permission] = set()
    unknown_permissions: list[str] = []
    for name in permissions:
        granted = LEGACY_PERMISSIONS.get(name)
        if granted is None:
            unknown_permissions.append(name)
            continue
        for permission in granted:
            if permission in PROFILE_CONDITIONED and not profile_moot:
                continue
            if permission in SYNC_CONDITIONED and not sync_moot:
                continue
            held.add(permission)
    role = next((r for r in ROLE_ORDER if APPLICATION_ROLE_PERMISSIONS[r] <= held), None)
    kept = APPLICATION_ROLE_PERMISSIONS[role] if role is not None else frozenset()
    dropped = sorted(
        {name for name in permissions if name in unknown_permissions or not LEGACY_PERMISSIONS[name] <= kept}
    )
    granted_all = {p for name in permissions for p in LEGACY_PERMISSIONS.get(name, frozenset())}
    dropped_conditions: list[str] = []
    # A condition over permissions the role does not grant limited nothing: it is not reported.
    if not profile_moot and allowed_profiles is not None and granted_all & PROFILE_CONDITIONED:
        others = sorted(set(profile_slugs) - set(allowed_profiles))
        dropped_conditions.append(
            f"profileSlugs {sorted(allowed_profiles)}: application {application!r} also holds "
            f"{', '.join(others)}, and its roles cannot be limited to some profiles"
        )
    if not sync_moot and allowed_syncs is not None and granted_all & SYNC_CONDITIONED:
        others = sorted(set(sync_names) - set(allowed_syncs))
        dropped_conditions.append(
            f"syncNames {sorted(allowed_syncs)}: application {application!r} also holds the sync(s) "
            f"{', '.join(others)}, and its roles cannot be limited to some syncs"
        )
    return RoleMapping(role, tuple(dropped), tuple(dropped_conditions))


def chosen_role(member: Any, chosen: str) -> RoleMapping:
    """The role an admin chose for `member` (a migration LegacyMember) in the options: what it drops of the
    legacy role and what it grants beyond it are both reported, since the choice may narrow or widen."""
    if chosen == "none":
        return RoleMapping(None, notes=("no role, as chosen in the options",))
    role = ApplicationRole(chosen)
    if member.membership.role != "custom":
        legacy = set(BUILTIN_ROLES.get(member.membership.role, frozenset()))
        conditions: Mapping[str, Any] = {}
    elif member.custom_role is not None:
        legacy = set(member.custom_role.permissions or [])
        conditions = dict(member.custom_role.conditions or {})
    else:
        legacy, conditions = set(), {}
    granted = {p for name in legacy for p in LEGACY_PERMISSIONS.get(name, frozenset())}
    kept = APPLICATION_ROLE_PERMISSIONS[role]
    dropped = sorted(name for name in legacy if not LEGACY_PERMISSIONS.get(name, frozenset()) <= kept)
    gained = sorted(p.value for p in kept - granted)
    return RoleMapping(
        role,
        tuple(dropped),
        tuple(f"{key} {value!r}" for key, value in sorted(conditions.items())),
        gained_permissions=tuple(gained),
    )
