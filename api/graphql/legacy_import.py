"""Import of a legacy project export (SPEC §12): the importLegacyProject mutation, Product Admins only."""

from __future__ import annotations

import uuid
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.permission import guard_type, guarded_mutation
from core.authz import Permission, Scope
from core.legacy.importer import ImportReport, import_legacy_project


@guard_type(Permission.PRODUCT_MANAGE)
@strawberry.type(description="How many items of one kind: project, role, principal, member, ca, policy, ...")
class LegacyImportCount:
    _scope: strawberry.Private[Scope]
    kind: str
    count: int

    def authz_scope(self) -> Scope:
        return self._scope


def _counts(scope: Scope, counts: dict[str, int]) -> list[LegacyImportCount]:
    return [LegacyImportCount(_scope=scope, kind=kind, count=count) for kind, count in counts.items()]


@guard_type(Permission.PRODUCT_MANAGE)
@strawberry.type(
    description="What an import created; a re-run of the same export creates nothing and lists everything "
    "under `existing`."
)
class LegacyImportReport:
    _scope: strawberry.Private[Scope]
    project_id: strawberry.ID = strawberry.field(description="The legacy project (and its container) id.")
    project_slug: str
    already_imported: bool = strawberry.field(description="True when this export had been imported before.")
    created: list[LegacyImportCount]
    existing: list[LegacyImportCount]

    def authz_scope(self) -> Scope:
        return self._scope

    @classmethod
    def from_report(cls, report: ImportReport, organization_id: uuid.UUID) -> LegacyImportReport:
        scope = Scope(organization_id=organization_id)
        return cls(
            _scope=scope,
            project_id=strawberry.ID(str(report.project_id)),
            project_slug=report.project_slug,
            already_imported=not report.created,
            created=_counts(scope, report.created),
            existing=_counts(scope, report.existing),
        )


@strawberry.type
class Mutation:
    @guarded_mutation(
        Permission.PRODUCT_MANAGE,
        description=(
            "Import a legacy project export (format v1, core/legacy/export-v1.schema.json) as a whole or "
            "not at all. A bad export fails with code INVALID_IMPORT and `extensions.problems` "
            "([{path, message}], each with its JSON path in the document). Large exports: "
            "`keyward legacy import FILE.json`."
        ),
    )
    async def import_legacy_project(self, info: Info, document: JSON) -> LegacyImportReport:
        actor = info.context.actor
        value: Any = document
        report = await import_legacy_project(value, actor=actor)
        assert actor.organization_id is not None
        return LegacyImportReport.from_report(report, actor.organization_id)
