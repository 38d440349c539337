"""Certificate syncs of an application (SPEC §10): create, update, delete with validation first; queue pushes
and removals per (sync, certificate); react to issuance, renewal and revocation events from the outbox.

The pushes themselves run in the worker (core/sync_runner.py): a service here only writes SyncTarget rows.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from core import audit, authz, runtime
from core.access import attached_profiles, load_application, load_application_row
from core.authz import Actor, Permission, Scope
from core.errors import Conflict, InvalidInput, NotFound
from core.legacy import rules as legacy_rules
from core.sync_destinations import destination_for
from core.sync_destinations.common import needs_keystore_password
from models import Application, Certificate, OutboxEvent
from models.enums import CertificateStatus
from models.sync import Sync, SyncAction, SyncDestination, SyncFormat, SyncTarget, SyncTargetStatus
from pki import sealing
from pki.errors import PkiError

MAX_NAME_LENGTH = 100
MAX_TEMPLATE_LENGTH = 255
MAX_CONCURRENCY = 64
MAX_FILTER_ITEMS = 500
MAX_CREDENTIAL_LENGTH = 16384
TEMPLATE_VARIABLES = ("certificateId", "commonName", "applicationName", "profileName")
_TEMPLATE_TOKEN = re.compile(r"\{\{\s*([A-Za-z]+)\s*\}\}")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._@+=-]+")
_ENQUEUE_CHUNK = 500
# Statuses of a target whose certificate is (or is about to be) at the destination.
LIVE = (
    SyncTargetStatus.PENDING,
    SyncTargetStatus.RUNNING,
    SyncTargetStatus.SUCCEEDED,
    SyncTargetStatus.FAILED,
)


# ---------------------------------------------------------------- credentials (write-only, sealed)


def _context(sync_id: uuid.UUID) -> bytes:
    return f"sync:{sync_id}".encode()


def seal_credentials(sync_id: uuid.UUID, credentials: dict[str, str]) -> bytes | None:
    if not credentials:
        return None
    data = json.dumps(credentials, sort_keys=True).encode()
    return sealing.seal(kek=runtime.kek(), plaintext=data, context=_context(sync_id))


def unseal_credentials(sync: Sync) -> dict[str, str]:
    """The sync's credentials; raises PkiError when they cannot be decrypted (KEK replaced)."""
    if not sync.encrypted_credentials:
        return {}
    data = sealing.unseal(
        kek=runtime.kek(), sealed=bytes(sync.encrypted_credentials), context=_context(sync.id)
    )
    loaded = json.loads(data)
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


# ---------------------------------------------------------------- validation (pure, before any write)


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"sync name must be 1 to {MAX_NAME_LENGTH} characters", field="name")
    return name


def validate_template(template: str) -> str:
    template = (template or "").strip()
    if not template or len(template) > MAX_TEMPLATE_LENGTH:
        raise InvalidInput(
            f"name template must be 1 to {MAX_TEMPLATE_LENGTH} characters", field="nameTemplate"
        )
    names = _TEMPLATE_TOKEN.findall(template)
    unknown = sorted({n for n in names if n not in TEMPLATE_VARIABLES})
    if unknown:
        raise InvalidInput(
            f"name template uses unknown variable(s) {', '.join(unknown)}; "
            f"use {', '.join('{{' + v + '}}' for v in TEMPLATE_VARIABLES)}",
            field="nameTemplate",
        )
    if "certificateId" not in names:
        raise InvalidInput(
            "name template must contain {{certificateId}} so two certificates never share a name, "
            "e.g. {{commonName}}-{{certificateId}}",
            field="nameTemplate",
        )
    return template


def render_name(template: str, values: dict[str, str | None]) -> str:
    """The template with its variables filled in, made safe as a file, object or secret name."""

    def value(match: re.Match[str]) -> str:
        return (values.get(match.group(1)) or "").replace("*", "wildcard")

    rendered = _UNSAFE_NAME.sub("_", _TEMPLATE_TOKEN.sub(value, template)).strip("._")
    return rendered[:200] or str(values.get("certificateId"))


def parse_destination(value: str) -> SyncDestination:
    try:
        return SyncDestination(str(value).lower())
    except ValueError:
        raise InvalidInput(
            f"unknown destination {value!r}: use {', '.join(d.value for d in SyncDestination)}",
            field="destination",
        ) from None


def parse_format(value: str) -> SyncFormat:
    try:
        return SyncFormat(str(value).lower())
    except ValueError:
        raise InvalidInput(
            f"unknown format {value!r}: use {', '.join(f.value.upper() for f in SyncFormat)}", field="format"
        ) from None


def validate_concurrency(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_CONCURRENCY:
        raise InvalidInput(f"maxConcurrency must be from 1 to {MAX_CONCURRENCY}", field="maxConcurrency")
    return value


def validate_metadata_filter(metadata: dict[str, Any] | None) -> dict[str, str]:
    if not metadata:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > 50:
        raise InvalidInput("metadata filter must be an object of at most 50 keys", field="metadata")
    checked = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > 100 or not isinstance(value, str | int | bool):
            raise InvalidInput("metadata filter keys and values must be text", field="metadata")
        checked[key] = str(value)
    return checked


def _clean_credentials(credentials: dict[str, Any] | None) -> dict[str, str | None]:
    if credentials is None:
        return {}
    if not isinstance(credentials, dict):
        raise InvalidInput("credentials must be an object of text values", field="credentials")
    cleaned: dict[str, str | None] = {}
    for key, value in credentials.items():
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CREDENTIAL_LENGTH):
            raise InvalidInput(f"credentials.{key} must be text", field=f"credentials.{key}")
        cleaned[str(key)] = value if value else None
    return cleaned


def _check_destination(
    destination: SyncDestination, fmt: SyncFormat, connection: Any, credentials: dict[str, str]
) -> dict[str, Any]:
    if not isinstance(connection, dict):
        raise InvalidInput("connection must be an object", field="connection")
    if destination == SyncDestination.AWS_ACM and fmt != SyncFormat.PEM:
        raise InvalidInput("AWS Certificate Manager imports PEM only: use format PEM", field="format")
    needs_keystore_password(credentials, fmt.value)
    return destination_for(destination).check(dict(connection), credentials)


async def _check_profiles(application: Application, profile_ids: Sequence[uuid.UUID]) -> list[str]:
    if len(set(profile_ids)) > MAX_FILTER_ITEMS:
        raise InvalidInput(f"at most {MAX_FILTER_ITEMS} profiles", field="profileIds")
    return [str(a.profile_id) for a in await attached_profiles(application, profile_ids)]


async def _check_certificates(application: Application, certificate_ids: Sequence[uuid.UUID]) -> list[str]:
    wanted = list(dict.fromkeys(certificate_ids))
    if len(wanted) > MAX_FILTER_ITEMS:
        raise InvalidInput(f"at most {MAX_FILTER_ITEMS} certificates", field="certificateIds")
    if not wanted:
        return []
    found = set(
        await Certificate.filter(application_id=application.id, id__in=wanted).values_list("id", flat=True)
    )
    missing = [str(c) for c in wanted if c not in found]
    if missing:
        raise InvalidInput(
            f"certificate(s) {', '.join(missing)} are not in application {application.name}",
            field="certificateIds",
        )
    return [str(c) for c in wanted]


def _taken(name: str) -> Conflict:
    return Conflict(f"a sync named {name!r} already exists in this application", field="name")


def _summary(sync: Sync, credential_keys: Iterable[str]) -> dict[str, Any]:
    """For the audit log: everything but the credentials' values (their names only)."""
    return {
        "name": sync.name,
        "destination": sync.destination.value,
        "connection": sync.connection,
        "credentialsSet": sorted(credential_keys),
        "profileIds": sync.profile_ids,
        "certificateIds": sync.certificate_ids,
        "metadata": sync.metadata_filter,
        "autoSync": sync.auto_sync,
        "removeOnRevoke": sync.remove_on_revoke,
        "removeOnExpiry": sync.remove_on_expiry,
        "includeRoot": sync.include_root,
        "includePrivateKey": sync.include_private_key,
        "nameTemplate": sync.name_template,
        "format": sync.format.value,
        "maxConcurrency": sync.max_concurrency,
    }


# ---------------------------------------------------------------- matching and queueing


def matches(sync: Sync, certificate: Certificate) -> bool:
    """The sync's filters (each empty = any): profiles, certificate ids, metadata key/values."""
    if certificate.application_id != sync.application_id:
        return False
    if sync.profile_ids and str(certificate.profile_id) not in set(sync.profile_ids):
        return False
    if sync.certificate_ids and str(certificate.id) not in set(sync.certificate_ids):
        return False
    metadata = certificate.metadata if isinstance(certificate.metadata, dict) else {}
    return all(str(metadata.get(key)) == value for key, value in (sync.metadata_filter or {}).items())


def _pushable(certificate: Certificate, now: datetime) -> bool:
    return certificate.status == CertificateStatus.ACTIVE and certificate.not_after > now


async def enqueue(
    *,
    sync_id: uuid.UUID,
    certificate_id: uuid.UUID,
    action: SyncAction,
    conn: BaseDBAsyncClient,
    replaces_target_id: uuid.UUID | None = None,
) -> SyncTarget:
    """Due at once, a fresh series of attempts; an existing (sync, certificate) row is reused."""
    now = datetime.now(UTC)
    existing = (
        await SyncTarget.filter(sync_id=sync_id, certificate_id=certificate_id)
        .using_db(conn)
        .select_for_update()
        .first()
    )
    if existing is None:
        target = SyncTarget(
            id=uuid.uuid4(),
            sync_id=sync_id,
            certificate_id=certificate_id,
            action=action,
            status=SyncTargetStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            replaces_target_id=replaces_target_id,
        )
        await target.save(using_db=conn, force_create=True)
        return target
    values: dict[str, Any] = {
        "action": action,
        "status": SyncTargetStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "message": None,
        "updated_at": now,
    }
    if replaces_target_id is not None:
        values["replaces_target_id"] = replaces_target_id
    # A running push keeps running; its result is overwritten by this newer request's run.
    await SyncTarget.filter(id=existing.id).using_db(conn).update(**values)
    for key, value in values.items():
        setattr(existing, key, value)
    return existing


async def _enqueue_matching(
    sync: Sync, conn: BaseDBAsyncClient, only: Sequence[uuid.UUID] | None = None
) -> int:
    """A push for every active certificate of the application the sync's filters select."""
    now = datetime.now(UTC)
    query = Certificate.filter(
        application_id=sync.application_id, status=CertificateStatus.ACTIVE, not_after__gt=now
    ).using_db(conn)
    if sync.profile_ids:
        query = query.filter(profile_id__in=list(sync.profile_ids))
    if sync.certificate_ids:
        query = query.filter(id__in=list(sync.certificate_ids))
    if only is not None:
        query = query.filter(id__in=list(only))
    rows = await query.only("id", "application_id", "profile_id", "metadata")
    queued = 0
    for certificate in rows:
        if matches(sync, certificate):
            await enqueue(sync_id=sync.id, certificate_id=certificate.id, action=SyncAction.PUSH, conn=conn)
            queued += 1
    return queued


# ---------------------------------------------------------------- services


async def _load_sync(actor: Actor, sync_id: uuid.UUID, permission: Permission) -> tuple[Sync, Application]:
    sync, application = await load_application_row(actor, Sync, sync_id, Permission.APPLICATION_READ, "sync")
    _require_on(actor, permission, application, sync.name)
    return sync, application


def _require_on(actor: Actor, permission: Permission, application: Application, sync_name: str) -> None:
    """`permission` on the sync named `sync_name` (a legacy custom role may be limited to some syncs)."""
    authz.require(actor, permission, Scope(application.organization_id, application.id, sync_name=sync_name))


async def get_sync(*, actor: Actor, sync_id: uuid.UUID) -> Sync:
    sync, _ = await _load_sync(actor, sync_id, Permission.APPLICATION_READ)
    return sync


async def list_syncs(*, actor: Actor, application_id: uuid.UUID) -> list[Sync]:
    application = await load_application(actor, application_id, Permission.APPLICATION_READ)
    return await Sync.filter(application_id=application.id).order_by("name", "id")


async def create_sync(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    name: str,
    destination: str,
    connection: dict[str, Any],
    credentials: dict[str, Any] | None = None,
    profile_ids: Sequence[uuid.UUID] = (),
    certificate_ids: Sequence[uuid.UUID] = (),
    metadata: dict[str, Any] | None = None,
    auto_sync: bool = True,
    remove_on_revoke: bool = True,
    remove_on_expiry: bool = False,
    include_root: bool = False,
    include_private_key: bool = True,
    name_template: str = "{{certificateId}}",
    format: str = "pem",
    max_concurrency: int | None = None,
) -> Sync:
    """Everything is validated before the first write; nothing is saved on bad input. With auto-sync, every
    matching certificate is queued in the same transaction."""
    application = await load_application(actor, application_id, Permission.SYNC_MANAGE)
    legacy_rules.refuse_create_outside_application(application, "sync")
    name = validate_name(name)
    kind = parse_destination(destination)
    fmt = parse_format(format)
    template = validate_template(name_template)
    concurrency = validate_concurrency(max_concurrency)
    given = {k: v for k, v in _clean_credentials(credentials).items() if v is not None}
    checked_connection = _check_destination(kind, fmt, connection, given)
    profiles = await _check_profiles(application, profile_ids)
    certificates = await _check_certificates(application, certificate_ids)
    metadata_filter = validate_metadata_filter(metadata)
    if await Sync.exists(application_id=application.id, name=name):
        raise _taken(name)
    sync_id = uuid.uuid4()
    sync = Sync(
        id=sync_id,
        application_id=application.id,
        name=name,
        destination=kind,
        connection=checked_connection,
        encrypted_credentials=seal_credentials(sync_id, given),
        profile_ids=profiles,
        certificate_ids=certificates,
        metadata_filter=metadata_filter,
        auto_sync=auto_sync,
        remove_on_revoke=remove_on_revoke,
        remove_on_expiry=remove_on_expiry,
        include_root=include_root,
        include_private_key=include_private_key,
        name_template=template,
        format=fmt,
        max_concurrency=concurrency,
    )
    try:
        async with in_transaction() as conn:
            await sync.save(using_db=conn, force_create=True)
            queued = await _enqueue_matching(sync, conn) if auto_sync else 0
            await audit.record(
                actor=actor,
                action="sync.create",
                resource_type="sync",
                resource_id=sync.id,
                application_id=application.id,
                details={**_summary(sync, given), "queued": queued},
                connection=conn,
            )
    except IntegrityError:
        raise _taken(name) from None
    return sync


_UNSET: Any = object()


async def update_sync(
    *,
    actor: Actor,
    sync_id: uuid.UUID,
    name: str | None = None,
    connection: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
    profile_ids: Sequence[uuid.UUID] | None = None,
    certificate_ids: Sequence[uuid.UUID] | None = None,
    metadata: dict[str, Any] | None = None,
    auto_sync: bool | None = None,
    remove_on_revoke: bool | None = None,
    remove_on_expiry: bool | None = None,
    include_root: bool | None = None,
    include_private_key: bool | None = None,
    name_template: str | None = None,
    format: str | None = None,
    max_concurrency: int | None = _UNSET,
) -> Sync:
    """None leaves a field as it is. `credentials` merges into the stored ones (a null value removes a key).
    Changes apply to the next pushes; run the sync to push again with them."""
    sync, application = await _load_sync(actor, sync_id, Permission.SYNC_MANAGE)
    changes: dict[str, Any] = {}
    if name is not None:
        name = validate_name(name)
        if name != sync.name:
            _require_on(actor, Permission.SYNC_MANAGE, application, name)
            if await Sync.exists(application_id=application.id, name=name):
                raise _taken(name)
            changes["name"] = name
    fmt = parse_format(format) if format is not None else sync.format
    if name_template is not None:
        changes["name_template"] = validate_template(name_template)
    if max_concurrency is not _UNSET:
        changes["max_concurrency"] = validate_concurrency(max_concurrency)
    try:
        stored = unseal_credentials(sync)
    except PkiError:
        stored = {}  # the KEK was replaced: the caller must give every credential again
    effective = dict(stored)
    if credentials is not None:
        for key, value in _clean_credentials(credentials).items():
            if value is None:
                effective.pop(key, None)
            else:
                effective[key] = value
    if connection is not None or credentials is not None or format is not None:
        checked = _check_destination(
            SyncDestination(sync.destination),
            fmt,
            connection if connection is not None else sync.connection,
            effective,
        )
        if checked != sync.connection:
            changes["connection"] = checked
    if format is not None and fmt != sync.format:
        changes["format"] = fmt
    if credentials is not None and effective != stored:
        changes["encrypted_credentials"] = seal_credentials(sync.id, effective)
    if profile_ids is not None:
        changes["profile_ids"] = await _check_profiles(application, profile_ids)
    if certificate_ids is not None:
        changes["certificate_ids"] = await _check_certificates(application, certificate_ids)
    if metadata is not None:
        changes["metadata_filter"] = validate_metadata_filter(metadata)
    for key, flag in (
        ("auto_sync", auto_sync),
        ("remove_on_revoke", remove_on_revoke),
        ("remove_on_expiry", remove_on_expiry),
        ("include_root", include_root),
        ("include_private_key", include_private_key),
    ):
        if flag is not None:
            changes[key] = flag
    changes = {k: v for k, v in changes.items() if getattr(sync, k) != v}
    if not changes:
        return sync
    for key, value in changes.items():
        setattr(sync, key, value)
    details = {k: v for k, v in _summary(sync, effective).items()}
    details["changed"] = sorted("credentials" if k == "encrypted_credentials" else k for k in changes)
    try:
        async with in_transaction() as conn:
            await sync.save(using_db=conn, update_fields=[*changes, "updated_at"])
            await audit.record(
                actor=actor,
                action="sync.update",
                resource_type="sync",
                resource_id=sync.id,
                application_id=application.id,
                details=details,
                connection=conn,
            )
    except IntegrityError:
        raise _taken(sync.name) from None
    return sync


async def delete_sync(*, actor: Actor, sync_id: uuid.UUID) -> Sync:
    """Deletes the sync and its statuses; what was pushed stays at the destination (remove it first)."""
    sync, application = await _load_sync(actor, sync_id, Permission.SYNC_MANAGE)
    async with in_transaction() as conn:
        await SyncTarget.filter(sync_id=sync.id).using_db(conn).delete()
        await sync.delete(using_db=conn)
        await audit.record(
            actor=actor,
            action="sync.delete",
            resource_type="sync",
            resource_id=sync.id,
            application_id=application.id,
            details={"name": sync.name, "destination": sync.destination.value},
            connection=conn,
        )
    return sync


async def run_sync(
    *, actor: Actor, sync_id: uuid.UUID, certificate_ids: Sequence[uuid.UUID] | None = None
) -> tuple[Sync, int]:
    """Queue a push of every matching certificate (or of the given ones, which must match)."""
    sync, application = await _load_sync(actor, sync_id, Permission.SYNC_RUN)
    wanted = list(dict.fromkeys(certificate_ids)) if certificate_ids else None
    if wanted is not None:
        if len(wanted) > MAX_FILTER_ITEMS:
            raise InvalidInput(f"at most {MAX_FILTER_ITEMS} certificates at once", field="certificateIds")
        now = datetime.now(UTC)
        rows = await Certificate.filter(application_id=application.id, id__in=wanted)
        by_id = {row.id: row for row in rows}
        for certificate_id in wanted:
            certificate = by_id.get(certificate_id)
            if certificate is None:
                raise NotFound(f"certificate {certificate_id} not found")
            if not matches(sync, certificate):
                raise InvalidInput(
                    f"certificate {certificate_id} does not match the sync's filters", field="certificateIds"
                )
            if not _pushable(certificate, now):
                raise InvalidInput(
                    f"certificate {certificate_id} is {certificate.status.value}"
                    + (" (past notAfter)" if certificate.not_after <= now else "")
                    + ": only active certificates are pushed",
                    field="certificateIds",
                )
    async with in_transaction() as conn:
        queued = await _enqueue_matching(sync, conn, wanted)
        await audit.record(
            actor=actor,
            action="sync.run",
            resource_type="sync",
            resource_id=sync.id,
            application_id=application.id,
            details={"queued": queued, "certificateIds": [str(c) for c in wanted] if wanted else None},
            connection=conn,
        )
    return sync, queued


async def remove_from_sync(*, actor: Actor, sync_id: uuid.UUID, certificate_id: uuid.UUID) -> SyncTarget:
    """Queue the removal of one certificate from the destination."""
    sync, application = await _load_sync(actor, sync_id, Permission.SYNC_RUN)
    target = await SyncTarget.get_or_none(sync_id=sync.id, certificate_id=certificate_id)
    if target is None:
        raise NotFound(f"certificate {certificate_id} was never pushed by this sync")
    async with in_transaction() as conn:
        target = await enqueue(
            sync_id=sync.id, certificate_id=certificate_id, action=SyncAction.REMOVE, conn=conn
        )
        await audit.record(
            actor=actor,
            action="sync.remove",
            resource_type="sync",
            resource_id=sync.id,
            application_id=application.id,
            details={"certificateId": str(certificate_id)},
            connection=conn,
        )
    return target


async def list_targets(
    *,
    actor: Actor,
    sync_id: uuid.UUID,
    first: int,
    after: tuple[datetime, str] | None = None,
    status: SyncTargetStatus | None = None,
) -> tuple[list[SyncTarget], bool]:
    """One page of (sync, certificate) statuses, oldest first (keyset on created_at, id); and whether more."""
    sync, _ = await _load_sync(actor, sync_id, Permission.APPLICATION_READ)
    query = SyncTarget.filter(sync_id=sync.id)
    if status is not None:
        query = query.filter(status=status)
    if after is not None:
        created_at, row_id = after
        query = query.filter(Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=row_id))
    rows = await query.order_by("created_at", "id").limit(first + 1)
    return rows[:first], len(rows) > first


# ---------------------------------------------------------------- outbox events (called by the dispatcher)


async def _syncs_of(application_id: uuid.UUID, conn: BaseDBAsyncClient, cache: dict[Any, Any]) -> list[Sync]:
    key = ("syncs", application_id)
    if key not in cache:
        cache[key] = await Sync.filter(application_id=application_id).using_db(conn)
    return list(cache[key])


async def on_outbox_event(event: OutboxEvent, conn: BaseDBAsyncClient, cache: dict[Any, Any]) -> int:
    """Queue what an event asks of the application's syncs, in the dispatcher's transaction; returns how many.

    Issuance: push to matching auto syncs. Renewal: push the successor where it matches or where its
    predecessor was pushed, replacing the predecessor. Revocation: removal where the sync asks for it.
    Re-running an event only re-queues the same rows, so a re-dispatch is harmless.
    """
    if event.application_id is None or event.certificate_id is None:
        return 0
    if event.event_type not in ("certificate.issued", "certificate.renewed", "certificate.revoked"):
        return 0
    syncs = await _syncs_of(event.application_id, conn, cache)
    if not syncs:
        return 0
    certificate = await Certificate.filter(id=event.certificate_id).using_db(conn).first()
    if certificate is None:
        return 0
    queued = 0
    if event.event_type == "certificate.revoked":
        targets = await SyncTarget.filter(
            certificate_id=certificate.id, sync_id__in=[s.id for s in syncs if s.remove_on_revoke]
        ).using_db(conn)
        for target in targets:
            if target.status != SyncTargetStatus.REMOVED:
                await enqueue(
                    sync_id=target.sync_id, certificate_id=certificate.id, action=SyncAction.REMOVE, conn=conn
                )
                queued += 1
        return queued
    if not _pushable(certificate, datetime.now(UTC)):
        return 0
    predecessors: dict[uuid.UUID, SyncTarget] = {}
    if event.event_type == "certificate.renewed" and certificate.renewed_from_id is not None:
        for target in await SyncTarget.filter(
            certificate_id=certificate.renewed_from_id, action=SyncAction.PUSH, status__in=list(LIVE)
        ).using_db(conn):
            predecessors[target.sync_id] = target
    for sync in syncs:
        if not sync.auto_sync:
            continue
        predecessor = predecessors.get(sync.id)
        if predecessor is None and not matches(sync, certificate):
            continue
        await enqueue(
            sync_id=sync.id,
            certificate_id=certificate.id,
            action=SyncAction.PUSH,
            conn=conn,
            replaces_target_id=predecessor.id if predecessor is not None else None,
        )
        queued += 1
    return queued
