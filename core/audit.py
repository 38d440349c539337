"""Tamper-evident audit log: each entry's hash covers its content and the previous entry's hash."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from core import authz
from core.authz import Actor, Permission
from models import AuditChainHead, AuditEvent
from models.enums import AuditOutcome

GENESIS_HASH = "0" * 64


def _canonical(event: AuditEvent) -> bytes:
    body = {
        "organization_id": str(event.organization_id) if event.organization_id else None,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": str(event.actor_id) if event.actor_id else None,
        "actor_kind": event.actor_kind,
        "actor_name": event.actor_name,
        "action": event.action,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "application_id": str(event.application_id) if event.application_id else None,
        "outcome": AuditOutcome(event.outcome).value,
        "source_address": event.source_address,
        "details": event.details,
        "previous_hash": event.previous_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(_canonical(event)).hexdigest()


async def record(
    *,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | uuid.UUID | None = None,
    application_id: uuid.UUID | None = None,
    organization_id: uuid.UUID | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    details: dict[str, Any] | None = None,
    connection: BaseDBAsyncClient | None = None,
) -> AuditEvent:
    """Append one entry. Pass the caller's transaction as `connection` to commit with the change."""
    if connection is None:
        async with in_transaction() as conn:
            return await _append(
                conn,
                actor,
                action,
                resource_type,
                resource_id,
                application_id,
                organization_id,
                outcome,
                details,
            )
    return await _append(
        connection,
        actor,
        action,
        resource_type,
        resource_id,
        application_id,
        organization_id,
        outcome,
        details,
    )


def _head_sql(dialect: str) -> tuple[str, str]:
    """Read and move the chain head, in plain SQL: every audited change runs these (the ORM built them
    anew each time). The read locks the row for the rest of the transaction on PostgreSQL; SQLite
    serializes writers anyway."""
    table = AuditChainHead._meta.db_table
    if dialect == "sqlite":
        return (
            f'SELECT "last_hash" FROM "{table}" WHERE "id" = 1',
            f'UPDATE "{table}" SET "last_hash" = ? WHERE "id" = 1',
        )
    return (
        f'SELECT "last_hash" FROM "{table}" WHERE "id" = 1 FOR UPDATE',
        f'UPDATE "{table}" SET "last_hash" = $1 WHERE "id" = 1',
    )


async def _append(
    conn: BaseDBAsyncClient,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | uuid.UUID | None,
    application_id: uuid.UUID | None,
    organization_id: uuid.UUID | None,
    outcome: AuditOutcome,
    details: dict[str, Any] | None,
) -> AuditEvent:
    read_head, write_head = _head_sql(str(conn.capabilities.dialect))
    rows = await conn.execute_query_dict(read_head)
    if not rows:
        await AuditChainHead.get_or_create(id=1, defaults={"last_hash": GENESIS_HASH}, using_db=conn)
        rows = await conn.execute_query_dict(read_head)
    event = AuditEvent(
        organization_id=organization_id or actor.organization_id,
        occurred_at=datetime.now(UTC),
        actor_id=actor.principal_id,
        actor_kind=actor.kind,
        actor_name=actor.name,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id) if resource_id is not None else None,
        application_id=application_id,
        outcome=outcome,
        source_address=actor.source_address,
        details=details or {},
        previous_hash=rows[0]["last_hash"],
    )
    event.entry_hash = compute_hash(event)
    await event.save(using_db=conn)
    await conn.execute_query(write_head, [event.entry_hash])
    return event


@dataclass(frozen=True)
class ChainReport:
    checked: int
    first_bad_id: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


async def verify_chain(batch_size: int = 1000) -> ChainReport:
    """Walk the whole log in id order; report the first entry whose hash or link does not hold."""
    previous = GENESIS_HASH
    checked = 0
    last_id = 0
    while True:
        rows = await AuditEvent.filter(id__gt=last_id).order_by("id").limit(batch_size)
        if not rows:
            break
        for row in rows:
            if row.previous_hash != previous:
                return ChainReport(checked, row.id, "previous_hash does not match the entry before it")
            if compute_hash(row) != row.entry_hash:
                return ChainReport(checked, row.id, "entry content does not match its hash")
            previous = row.entry_hash
            checked += 1
            last_id = row.id
    head = await AuditChainHead.get_or_none(id=1)
    if head is not None and head.last_hash != previous:
        return ChainReport(checked, last_id or None, "the newest entries were removed")
    return ChainReport(checked, None, None)


async def list_events(
    *, actor: Actor, application_id: uuid.UUID | None, first: int, before_id: int | None
) -> list[AuditEvent]:
    """Newest first. Product Admins read the whole organization; application Admins and Auditors theirs."""
    from core.access import load_application  # access imports models only; local import keeps audit light

    query = AuditEvent.filter(organization_id=actor.organization_id)
    if application_id is None:
        authz.require(actor, Permission.AUDIT_READ_ALL)
    else:
        await load_application(actor, application_id, Permission.AUDIT_READ)
        query = query.filter(application_id=application_id)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(first + 1)
