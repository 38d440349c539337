"""The audit log: the organization's for Product Admins, an application's for its Admins and Auditors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.ids import parse_id
from api.graphql.pagination import Connection, Edge, PageInfo, check_page_size
from api.graphql.permission import guard_type, guarded_field
from core import audit
from core.authz import Permission, Scope
from core.errors import InvalidInput
from models import AuditEvent as AuditEventModel


@guard_type(Permission.AUDIT_READ)
@strawberry.type
class AuditEvent:
    _model: strawberry.Private[AuditEventModel]
    id: strawberry.ID
    occurred_at: datetime
    actor_id: strawberry.ID | None
    actor_kind: str
    actor_name: str
    action: str
    resource_type: str
    resource_id: str | None
    application_id: strawberry.ID | None
    outcome: str
    source_address: str | None
    details: JSON
    entry_hash: str

    def authz_scope(self) -> Scope:
        assert self._model.organization_id is not None
        return Scope(self._model.organization_id, self._model.application_id)

    @classmethod
    def from_model(cls, model: AuditEventModel) -> AuditEvent:
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            occurred_at=model.occurred_at,
            actor_id=strawberry.ID(str(model.actor_id)) if model.actor_id else None,
            actor_kind=model.actor_kind,
            actor_name=model.actor_name,
            action=model.action,
            resource_type=model.resource_type,
            resource_id=model.resource_id,
            application_id=strawberry.ID(str(model.application_id)) if model.application_id else None,
            outcome=str(model.outcome.value if hasattr(model.outcome, "value") else model.outcome),
            source_address=model.source_address,
            details=model.details,
            entry_hash=model.entry_hash,
        )


def _before_id(after: str | None) -> int | None:
    if after is None:
        return None
    try:
        return int(after)
    except ValueError:
        raise InvalidInput(f"cursor {after!r} is not one this server returned", field="after") from None


@strawberry.type
class Query:
    @guarded_field(
        Permission.AUDIT_READ,
        description="Newest first. Without applicationId: the whole organization (Product Admins only).",
    )
    async def audit_events(
        self,
        info: Info,
        application_id: strawberry.ID | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> Connection[AuditEvent]:
        app_id = parse_id(application_id, "application") if application_id is not None else None
        rows = await audit.list_events(
            actor=info.context.actor,
            application_id=app_id,
            first=check_page_size(first),
            before_id=_before_id(after),
        )
        page = rows[:first]
        edges: list[Any] = [Edge(cursor=str(row.id), node=AuditEvent.from_model(row)) for row in page]
        return Connection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=len(rows) > first, end_cursor=edges[-1].cursor if edges else None
            ),
        )
