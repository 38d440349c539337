"""Certificate policies of the shared PKI (SPEC §4): rules stored as validated JSON."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import audit, authz
from core.access import organization_scope
from core.authz import Actor, Permission
from core.errors import Conflict, InvalidInput, InvalidState, NotFound
from core.naming import clean_name
from models import CertificatePolicy, CertificateProfile
from pki.errors import PkiError
from pki.policy import PolicyRules

_PATH_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_.\[\]]*): ")


def parse_rules(rules: Any) -> PolicyRules:
    """Validate rules JSON; the error's field names the offending path, e.g. `rules.sans[0].type`."""
    try:
        return PolicyRules.from_dict(rules)
    except PkiError as exc:
        match = _PATH_PREFIX.match(exc.message)
        field = f"rules.{match.group(1)}" if match else "rules"
        raise InvalidInput(f"rules: {exc.message}", field=field) from None


def rules_of(policy: CertificatePolicy) -> PolicyRules:
    return PolicyRules.from_dict(policy.rules)


async def _check_unique_name(organization_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None) -> None:
    query = CertificatePolicy.filter(organization_id=organization_id, name=name)
    if exclude is not None:
        query = query.exclude(id=exclude)
    if await query.exists():
        raise Conflict(f"a policy named '{name}' already exists; choose another name", field="name")


async def get_policy(
    *, actor: Actor, policy_id: uuid.UUID, permission: Permission = Permission.PKI_READ
) -> CertificatePolicy:
    authz.require(actor, permission, organization_scope(actor))
    policy = await CertificatePolicy.get_or_none(id=policy_id, organization_id=actor.organization_id)
    if policy is None:
        raise NotFound(f"certificate policy {policy_id} not found")
    return policy


async def list_policies(*, actor: Actor) -> list[CertificatePolicy]:
    authz.require(actor, Permission.PKI_READ, organization_scope(actor))
    return await CertificatePolicy.filter(organization_id=actor.organization_id).order_by("name")


async def create_policy(*, actor: Actor, name: str, description: str = "", rules: Any) -> CertificatePolicy:
    scope = organization_scope(actor)
    authz.require(actor, Permission.PKI_MANAGE, scope)
    name = clean_name(name)
    parsed = parse_rules(rules)
    await _check_unique_name(scope.organization_id, name)
    try:
        async with in_transaction() as conn:
            policy = await CertificatePolicy.create(
                organization_id=scope.organization_id,
                name=name,
                description=description,
                rules=parsed.to_dict(),
                using_db=conn,
            )
            await audit.record(
                actor=actor,
                action="policy.create",
                resource_type="certificate_policy",
                resource_id=policy.id,
                details={"name": name, "rules": policy.rules},
                connection=conn,
            )
    except IntegrityError:
        raise Conflict(f"a policy named '{name}' already exists; choose another name", field="name") from None
    return policy


async def update_policy(
    *,
    actor: Actor,
    policy_id: uuid.UUID,
    name: str | None = None,
    description: str | None = None,
    rules: Any = None,
    replace_rules: bool = False,
) -> CertificatePolicy:
    """Only the given fields change; `replace_rules` says rules were given (null rules allow anything)."""
    policy = await get_policy(actor=actor, policy_id=policy_id, permission=Permission.PKI_MANAGE)
    changes: dict[str, Any] = {}
    if name is not None:
        name = clean_name(name)
        if name != policy.name:
            await _check_unique_name(policy.organization_id, name, exclude=policy.id)
            changes["name"] = name
    if description is not None and description != policy.description:
        changes["description"] = description
    if replace_rules:
        new_rules = parse_rules(rules).to_dict()
        if new_rules != policy.rules:
            changes["rules"] = new_rules
    if not changes:
        return policy
    try:
        async with in_transaction() as conn:
            for attribute, value in changes.items():
                setattr(policy, attribute, value)
            await policy.save(using_db=conn)
            await audit.record(
                actor=actor,
                action="policy.update",
                resource_type="certificate_policy",
                resource_id=policy.id,
                details={
                    "changed": sorted(changes),
                    **({"rules": changes["rules"]} if "rules" in changes else {}),
                },
                connection=conn,
            )
    except IntegrityError:
        raise Conflict(f"a policy named '{name}' already exists; choose another name", field="name") from None
    return policy


async def delete_policy(*, actor: Actor, policy_id: uuid.UUID) -> None:
    """Refused while a profile (even a deleted one, whose certificates still point at it) uses the policy."""
    policy = await get_policy(actor=actor, policy_id=policy_id, permission=Permission.PKI_MANAGE)
    users = await CertificateProfile.filter(policy_id=policy.id).values_list("name", flat=True)
    if users:
        raise InvalidState(
            f"policy '{policy.name}' is used by profile(s) {', '.join(sorted(str(u) for u in users))}; "
            "point them at another policy first"
        )
    async with in_transaction() as conn:
        await audit.record(
            actor=actor,
            action="policy.delete",
            resource_type="certificate_policy",
            resource_id=policy.id,
            details={"name": policy.name},
            connection=conn,
        )
        await policy.delete(using_db=conn)
