"""Shared by the legacy rules tests: the example legacy project "payments" in org acme, with a bearer token
for each of its members (one per legacy role)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import authn
from core.authz import Actor
from core.legacy.importer import import_legacy_project
from models import Application, LegacyMembership, LegacyResource, Principal, ProductMembership
from models.enums import PrincipalKind, ProductRole, TokenKind

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "legacy-export.json"

# The members of the example export, by the legacy role they hold: (email or machine name, role, custom role).
MEMBERS = {
    "admin": ("alice@payments.example.com", "admin", None),
    "member": ("bob@payments.example.com", "member", None),
    "viewer": ("victor@payments.example.com", "viewer", None),
    "web-issuers": ("payments-ci-bot", "custom", "web-issuers"),
    "sync-operators": ("carol@payments.example.com", "custom", "sync-operators"),
}


@dataclass
class LegacyPayments:
    organization_id: uuid.UUID
    project_id: uuid.UUID  # == the container application's id
    profiles: dict[str, uuid.UUID]  # slug -> profile id
    certificates: dict[str, uuid.UUID]  # slug -> certificate id
    principals: dict[str, uuid.UUID]  # MEMBERS key (or "outsider") -> principal id
    tokens: dict[str, str] = field(default_factory=dict)
    alert_id: uuid.UUID | None = None
    sync_id: uuid.UUID | None = None
    policy_id: uuid.UUID | None = None

    def system(self) -> Actor:
        return Actor.system(self.organization_id)

    async def actor(self, who: str) -> Actor:
        return await authn.load_actor(await Principal.get(id=self.principals[who]))

    async def container(self) -> Application:
        return await Application.get(id=self.project_id)


async def token_for(principal: Principal) -> str:
    """A Product Member membership (if it has no product role yet) and an API token."""
    if not await ProductMembership.exists(principal_id=principal.id):
        await ProductMembership.create(
            organization_id=principal.organization_id, principal_id=principal.id, role=ProductRole.MEMBER
        )
    token, _ = await authn.create_token(principal=principal, kind=TokenKind.API, name="legacy-rules")
    return token


def example_export() -> dict[str, Any]:
    """A fresh copy of examples/legacy-export.json (tests may change it before importing)."""
    return dict(json.loads(EXAMPLE.read_text()))


async def legacy_payments(
    organization_id: uuid.UUID, document: dict[str, Any] | None = None
) -> LegacyPayments:
    """The example export imported by the importer (core.legacy.importer), members given API tokens."""
    report = await import_legacy_project(
        document if document is not None else example_export(), actor=Actor.system(organization_id)
    )
    resources: dict[tuple[str, str], uuid.UUID] = {
        (kind, slug): target
        for kind, slug, target in await LegacyResource.filter(project_id=report.project_id).values_list(
            "kind", "slug", "target_id"
        )
    }

    def ids(kind: str) -> dict[str, uuid.UUID]:
        return {slug: uuid.UUID(str(target)) for (k, slug), target in resources.items() if k == kind}

    principals: dict[str, uuid.UUID] = {}
    tokens: dict[str, str] = {}
    memberships = ids("member")
    for key, (handle, _, _) in MEMBERS.items():
        if handle not in memberships:  # a test's own export may leave members out
            continue
        membership = await LegacyMembership.get(id=memberships[handle]).prefetch_related("principal")
        principals[key], tokens[key] = membership.principal_id, await token_for(membership.principal)
    outsider = await Principal.get_or_none(organization_id=organization_id, email="olga@acme.test")
    if outsider is None:
        outsider = await Principal.create(
            organization_id=organization_id,
            kind=PrincipalKind.USER,
            name="olga@acme.test",
            email="olga@acme.test",
        )
    principals["outsider"], tokens["outsider"] = outsider.id, await token_for(outsider)
    return LegacyPayments(
        organization_id=organization_id,
        project_id=report.project_id,
        profiles=ids("profile"),
        certificates=ids("certificate"),
        principals=principals,
        tokens=tokens,
        alert_id=ids("alert").get("payments-expiry-and-issuance"),
        sync_id=ids("sync").get("edge-push"),
        policy_id=ids("approval_policy").get("payments-api-approval"),
    )
