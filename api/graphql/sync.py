"""Certificate syncs of an application (SPEC §10): destinations (credentials write-only), runs by hand, and
the status of every (sync, certificate)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.context import actor_organization
from api.graphql.ids import parse_id
from api.graphql.legacy import LegacyProject, legacy_project_of
from api.graphql.pagination import Connection, Edge, PageInfo, check_page_size, decode_cursor, encode_cursor
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import sync as service
from core.authz import Permission, Scope
from core.errors import InvalidInput
from models.sync import Sync as SyncModel
from models.sync import SyncAction, SyncDestination, SyncFormat, SyncTargetStatus
from models.sync import SyncTarget as SyncTargetModel


@strawberry.enum(name="SyncDestinationType", description="Where a sync pushes certificates.")
class SyncDestinationEnum(Enum):
    LOCAL = "local"
    SFTP = "sftp"
    HTTP = "http"
    AWS_ACM = "aws_acm"
    AWS_SECRETS = "aws_secrets"


@strawberry.enum(name="SyncFormat", description="PEM files / JSON, a PKCS#12 file, or a Java KeyStore.")
class SyncFormatEnum(Enum):
    PEM = "pem"
    PKCS12 = "pkcs12"
    JKS = "jks"


@strawberry.enum(
    name="SyncTargetStatus",
    description="FAILED with nextAttemptAt: retried then; without: given up (run the sync again).",
)
class SyncTargetStatusEnum(Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REMOVED = "removed"


@strawberry.enum(name="SyncAction", description="What the next (or last) run of a target does.")
class SyncActionEnum(Enum):
    PUSH = "push"
    REMOVE = "remove"


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="One certificate at one sync destination: status, message, attempts and times.")
class SyncTarget:
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    sync_id: strawberry.ID
    certificate_id: strawberry.ID
    action: SyncActionEnum
    status: SyncTargetStatusEnum
    message: str | None
    attempts: int = strawberry.field(description="Attempts of the current series (reset when queued again).")
    next_attempt_at: datetime | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_succeeded_at: datetime | None
    remote_reference: str | None = strawberry.field(
        description="Where the certificate lives at the destination: a path, a URL, an ARN."
    )
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id)

    @classmethod
    def from_model(
        cls, model: SyncTargetModel, organization_id: uuid.UUID, application_id: uuid.UUID
    ) -> SyncTarget:
        return cls(
            _organization_id=organization_id,
            _application_id=application_id,
            id=strawberry.ID(str(model.id)),
            sync_id=strawberry.ID(str(model.sync_id)),
            certificate_id=strawberry.ID(str(model.certificate_id)),
            action=SyncActionEnum(SyncAction(model.action).value),
            status=SyncTargetStatusEnum(SyncTargetStatus(model.status).value),
            message=model.message,
            attempts=model.attempts,
            next_attempt_at=model.next_attempt_at,
            last_started_at=model.last_started_at,
            last_finished_at=model.last_finished_at,
            last_succeeded_at=model.last_succeeded_at,
            remote_reference=model.remote_reference,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


def _cursor_key(after: str | None) -> tuple[datetime, str] | None:
    if after is None:
        return None
    created_at, row_id = decode_cursor(after)
    try:
        return created_at, str(uuid.UUID(row_id))
    except ValueError:
        raise InvalidInput(f"cursor {after!r} is not one this server returned", field="after") from None


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="A sync of an application (SPEC §10). Its credentials are write-only.")
class Sync:
    _model: strawberry.Private[SyncModel]
    _organization_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    application_id: strawberry.ID
    name: str
    destination: SyncDestinationEnum
    connection: JSON = strawberry.field(description="Non-secret settings: directory, host, url, region ...")
    credentials_set: bool = strawberry.field(description="Whether credentials are stored (never readable).")
    profile_ids: list[strawberry.ID] = strawberry.field(description="Empty: every profile.")
    certificate_ids: list[strawberry.ID] = strawberry.field(description="Empty: every certificate.")
    metadata: JSON = strawberry.field(description="Metadata key/values a certificate must carry.")
    auto_sync: bool
    remove_on_revoke: bool
    remove_on_expiry: bool
    include_root: bool
    include_private_key: bool
    name_template: str
    format: SyncFormatEnum
    max_concurrency: int | None = strawberry.field(description="Null: the server's default.")
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(Permission.APPLICATION_READ, description="The status per certificate, oldest first.")
    async def targets(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        status: SyncTargetStatusEnum | None = None,
    ) -> Connection[SyncTarget]:
        rows, more = await service.list_targets(
            actor=info.context.actor,
            sync_id=self._model.id,
            first=check_page_size(first),
            after=_cursor_key(after),
            status=SyncTargetStatus(status.value) if status is not None else None,
        )
        edges: list[Any] = [
            Edge(
                cursor=encode_cursor(row.created_at, row.id),
                node=SyncTarget.from_model(row, self._organization_id, self._model.application_id),
            )
            for row in rows
        ]
        return Connection(
            edges=edges,
            page_info=PageInfo(has_next_page=more, end_cursor=edges[-1].cursor if edges else None),
        )

    @guarded_field(
        Permission.APPLICATION_READ, description="The legacy project it belongs to; null in an Application."
    )
    async def legacy_project(self, info: Info) -> LegacyProject | None:
        return await legacy_project_of(info, self._model.application_id)

    @classmethod
    def from_model(cls, model: SyncModel, organization_id: uuid.UUID) -> Sync:
        return cls(
            _model=model,
            _organization_id=organization_id,
            id=strawberry.ID(str(model.id)),
            application_id=strawberry.ID(str(model.application_id)),
            name=model.name,
            destination=SyncDestinationEnum(SyncDestination(model.destination).value),
            connection=cast(JSON, dict(model.connection or {})),
            credentials_set=bool(model.encrypted_credentials),
            profile_ids=[strawberry.ID(str(p)) for p in model.profile_ids or []],
            certificate_ids=[strawberry.ID(str(c)) for c in model.certificate_ids or []],
            metadata=cast(JSON, dict(model.metadata_filter or {})),
            auto_sync=model.auto_sync,
            remove_on_revoke=model.remove_on_revoke,
            remove_on_expiry=model.remove_on_expiry,
            include_root=model.include_root,
            include_private_key=model.include_private_key,
            name_template=model.name_template,
            format=SyncFormatEnum(SyncFormat(model.format).value),
            max_concurrency=model.max_concurrency,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="What runSync queued.")
class RunSyncPayload:
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    sync: Sync
    queued: int = strawberry.field(description="Certificates queued for a push.")

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id)


_CONNECTION_HELP = (
    "LOCAL {directory, postCommand, postCommandTimeoutSeconds}; "
    "SFTP {host, port, username, hostKey, directory}; HTTP {url}; "
    "AWS_ACM / AWS_SECRETS {region, endpointUrl}"
)
_CREDENTIALS_HELP = (
    "Write-only, sealed at rest. SFTP {privateKey, privateKeyPassphrase, password}; HTTP {signingSecret}; "
    "AWS {accessKeyId, secretAccessKey, sessionToken}; PKCS12/JKS formats {keystorePassword}. "
    "On update, given keys replace the stored ones and a null value removes one."
)


@strawberry.input
class CreateSyncInput:
    application_id: strawberry.ID
    name: str
    destination: SyncDestinationEnum
    connection: JSON = strawberry.field(description=_CONNECTION_HELP)
    credentials: JSON | None = strawberry.field(default=None, description=_CREDENTIALS_HELP)
    profile_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    certificate_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    metadata: JSON | None = strawberry.field(default=None, description="Key/values a certificate must carry.")
    auto_sync: bool = strawberry.field(
        default=True, description="Push on creation, issuance and renewal (off: only by runSync)."
    )
    remove_on_revoke: bool = True
    remove_on_expiry: bool = False
    include_root: bool = False
    include_private_key: bool = strawberry.field(
        default=True, description="Push the private key when the server holds it."
    )
    name_template: str = strawberry.field(
        default="{{certificateId}}",
        description=(
            "Must contain {{certificateId}}; may use {{commonName}} {{applicationName}} {{profileName}}"
        ),
    )
    format: SyncFormatEnum = SyncFormatEnum.PEM
    max_concurrency: int | None = strawberry.field(
        default=None, description="Pushes in flight at once (null: the server's default)."
    )


@strawberry.input(description="Omitted fields stay as they are.")
class UpdateSyncInput:
    name: str | None = strawberry.UNSET
    connection: JSON | None = strawberry.UNSET
    credentials: JSON | None = strawberry.field(default=strawberry.UNSET, description=_CREDENTIALS_HELP)
    profile_ids: list[strawberry.ID] | None = strawberry.UNSET
    certificate_ids: list[strawberry.ID] | None = strawberry.UNSET
    metadata: JSON | None = strawberry.UNSET
    auto_sync: bool | None = strawberry.UNSET
    remove_on_revoke: bool | None = strawberry.UNSET
    remove_on_expiry: bool | None = strawberry.UNSET
    include_root: bool | None = strawberry.UNSET
    include_private_key: bool | None = strawberry.UNSET
    name_template: str | None = strawberry.UNSET
    format: SyncFormatEnum | None = strawberry.UNSET
    max_concurrency: int | None = strawberry.field(default=strawberry.UNSET, description="Null: the default.")


T = TypeVar("T")


def _opt(value: T | None) -> T | None:
    return None if value is strawberry.UNSET else value


def _object(value: Any, field: str) -> dict[str, Any] | None:
    if value is None or value is strawberry.UNSET:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object", field=field)
    return dict(value)


def _organization(info: Info) -> uuid.UUID:
    return actor_organization(info.context)


@strawberry.type
class Query:
    @guarded_field(Permission.APPLICATION_READ, description="An application's syncs, by name.")
    async def syncs(self, info: Info, application_id: strawberry.ID) -> list[Sync]:
        rows = await service.list_syncs(
            actor=info.context.actor, application_id=parse_id(application_id, "application")
        )
        return [Sync.from_model(r, _organization(info)) for r in rows]

    @guarded_field(Permission.APPLICATION_READ, description="One sync; NOT_FOUND if you may not see it.")
    async def sync(self, info: Info, id: strawberry.ID) -> Sync:
        model = await service.get_sync(actor=info.context.actor, sync_id=parse_id(id, "sync"))
        return Sync.from_model(model, _organization(info))


@strawberry.type
class Mutation:
    @guarded_mutation(
        Permission.SYNC_MANAGE,
        description="Create a sync (application Admin); with autoSync, every matching certificate is queued.",
    )
    async def create_sync(self, info: Info, input: CreateSyncInput) -> Sync:
        model = await service.create_sync(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            name=input.name,
            destination=input.destination.value,
            connection=_object(input.connection, "connection") or {},
            credentials=_object(input.credentials, "credentials"),
            profile_ids=[parse_id(p, "profile") for p in input.profile_ids],
            certificate_ids=[parse_id(c, "certificate") for c in input.certificate_ids],
            metadata=_object(input.metadata, "metadata"),
            auto_sync=input.auto_sync,
            remove_on_revoke=input.remove_on_revoke,
            remove_on_expiry=input.remove_on_expiry,
            include_root=input.include_root,
            include_private_key=input.include_private_key,
            name_template=input.name_template,
            format=input.format.value,
            max_concurrency=input.max_concurrency,
        )
        return Sync.from_model(model, _organization(info))

    @guarded_mutation(Permission.SYNC_MANAGE, description="Change a sync; omitted fields stay.")
    async def update_sync(self, info: Info, id: strawberry.ID, input: UpdateSyncInput) -> Sync:
        profile_ids, certificate_ids, fmt = (
            _opt(input.profile_ids),
            _opt(input.certificate_ids),
            _opt(input.format),
        )
        extra: dict[str, Any] = {}
        if input.max_concurrency is not strawberry.UNSET:
            extra["max_concurrency"] = input.max_concurrency
        model = await service.update_sync(
            actor=info.context.actor,
            sync_id=parse_id(id, "sync"),
            name=_opt(input.name),
            connection=_object(input.connection, "connection"),
            credentials=_object(input.credentials, "credentials"),
            profile_ids=[parse_id(p, "profile") for p in profile_ids] if profile_ids is not None else None,
            certificate_ids=(
                [parse_id(c, "certificate") for c in certificate_ids] if certificate_ids is not None else None
            ),
            metadata=_object(input.metadata, "metadata"),
            auto_sync=_opt(input.auto_sync),
            remove_on_revoke=_opt(input.remove_on_revoke),
            remove_on_expiry=_opt(input.remove_on_expiry),
            include_root=_opt(input.include_root),
            include_private_key=_opt(input.include_private_key),
            name_template=_opt(input.name_template),
            format=fmt.value if fmt is not None else None,
            **extra,
        )
        return Sync.from_model(model, _organization(info))

    @guarded_mutation(
        Permission.SYNC_MANAGE,
        description="Delete a sync and its statuses (pushed files stay at the destination); returns its id.",
    )
    async def delete_sync(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        model = await service.delete_sync(actor=info.context.actor, sync_id=parse_id(id, "sync"))
        return strawberry.ID(str(model.id))

    @guarded_mutation(
        Permission.SYNC_RUN,
        description="Queue a push of every matching certificate, or of the given ones (Operators, Admins).",
    )
    async def run_sync(
        self, info: Info, id: strawberry.ID, certificate_ids: list[strawberry.ID] | None = None
    ) -> RunSyncPayload:
        model, queued = await service.run_sync(
            actor=info.context.actor,
            sync_id=parse_id(id, "sync"),
            certificate_ids=[parse_id(c, "certificate") for c in certificate_ids]
            if certificate_ids
            else None,
        )
        organization_id = _organization(info)
        return RunSyncPayload(
            _organization_id=organization_id,
            _application_id=model.application_id,
            sync=Sync.from_model(model, organization_id),
            queued=queued,
        )

    @guarded_mutation(
        Permission.SYNC_RUN, description="Queue the removal of one certificate from the sync's destination."
    )
    async def remove_from_sync(
        self, info: Info, sync_id: strawberry.ID, certificate_id: strawberry.ID
    ) -> SyncTarget:
        parsed_sync = parse_id(sync_id, "sync")
        target = await service.remove_from_sync(
            actor=info.context.actor,
            sync_id=parsed_sync,
            certificate_id=parse_id(certificate_id, "certificate"),
        )
        model = await service.get_sync(actor=info.context.actor, sync_id=parsed_sync)
        return SyncTarget.from_model(target, _organization(info), model.application_id)
