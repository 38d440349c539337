"""Alerts of an application, their channels (secrets write-only) and their delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TypeVar, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.context import actor_organization
from api.graphql.ids import parse_id
from api.graphql.legacy import LegacyProject, legacy_project_of
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import alert as service
from core import delivery as delivery_service
from core.authz import Permission, Scope
from core.errors import InvalidInput
from models import Alert as AlertModel
from models import AlertChannel as AlertChannelModel
from models import Delivery as DeliveryModel
from models import DeliveryAttempt as DeliveryAttemptModel
from models import enums

MAX_DELIVERIES = 500


@strawberry.enum(name="AlertEventType", description="What an alert fires on.")
class AlertEventTypeEnum(Enum):
    EXPIRATION = "expiration"
    ISSUANCE = "issuance"
    RENEWAL = "renewal"
    REVOCATION = "revocation"
    APPROVAL = "approval"


@strawberry.enum(name="AlertChannelType")
class AlertChannelTypeEnum(Enum):
    EMAIL = "email"
    WEBHOOK = "webhook"
    SLACK = "slack"
    PAGERDUTY = "pagerduty"


@strawberry.enum(name="DeliveryStatus", description="DEAD: out of attempts; retryable by hand.")
class DeliveryStatusEnum(Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="One attempt to deliver: when, outcome, HTTP status or SMTP reply, error.")
class DeliveryAttempt:
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    attempted_at: datetime
    succeeded: bool
    http_status: int | None
    smtp_reply: str | None
    error: str | None
    duration_ms: int

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id)

    @classmethod
    def from_model(
        cls, model: DeliveryAttemptModel, organization_id: uuid.UUID, application_id: uuid.UUID
    ) -> DeliveryAttempt:
        return cls(
            _organization_id=organization_id,
            _application_id=application_id,
            id=strawberry.ID(str(model.id)),
            attempted_at=model.attempted_at,
            succeeded=model.succeeded,
            http_status=model.http_status,
            smtp_reply=model.smtp_reply,
            error=model.error,
            duration_ms=model.duration_ms,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="One notification to one channel, with its attempts.")
class Delivery:
    _model: strawberry.Private[DeliveryModel]
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    channel_id: strawberry.ID
    event_id: strawberry.ID = strawberry.field(
        description="Stable across retries: receivers de-duplicate on it."
    )
    event_type: str
    status: DeliveryStatusEnum
    attempt_count: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id)

    @guarded_field(Permission.APPLICATION_READ, description="Every attempt, oldest first.")
    async def attempts(self, info: Info) -> list[DeliveryAttempt]:
        rows = await delivery_service.list_attempts(actor=info.context.actor, delivery_id=self._model.id)
        return [DeliveryAttempt.from_model(r, self._organization_id, self._application_id) for r in rows]

    @classmethod
    def from_model(
        cls, model: DeliveryModel, organization_id: uuid.UUID, application_id: uuid.UUID
    ) -> Delivery:
        return cls(
            _model=model,
            _organization_id=organization_id,
            _application_id=application_id,
            id=strawberry.ID(str(model.id)),
            channel_id=strawberry.ID(str(model.channel_id)),
            event_id=strawberry.ID(str(model.event_id)),
            event_type=model.event_type,
            status=DeliveryStatusEnum(enums.DeliveryStatus(model.status).value),
            attempt_count=model.attempts,
            next_attempt_at=model.next_attempt_at,
            last_error=model.last_error,
            created_at=model.created_at,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(
    description="Where an alert is sent. The secret (signing secret, Slack URL, routing key) is write-only."
)
class AlertChannel:
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    type: AlertChannelTypeEnum
    position: int
    config: JSON = strawberry.field(
        description="Non-secret settings: recipients, url, channel, eventsUrl, severity."
    )
    has_secret: bool

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id)

    @classmethod
    def from_model(
        cls, model: AlertChannelModel, organization_id: uuid.UUID, application_id: uuid.UUID
    ) -> AlertChannel:
        return cls(
            _organization_id=organization_id,
            _application_id=application_id,
            id=strawberry.ID(str(model.id)),
            type=AlertChannelTypeEnum(enums.ChannelType(model.type).value),
            position=model.position,
            config=cast(JSON, dict(model.config or {})),
            has_secret=bool(model.encrypted_secret),
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="An alert of an application (SPEC §9).")
class Alert:
    _model: strawberry.Private[AlertModel]
    _organization_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    application_id: strawberry.ID
    name: str
    event_types: list[AlertEventTypeEnum]
    thresholds: list[str] = strawberry.field(
        description='Expiration thresholds, largest first: ["30d", "7d"].'
    )
    daily_repeat: bool
    profile_ids: list[strawberry.ID] = strawberry.field(description="Empty: every profile.")
    name_pattern: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(Permission.APPLICATION_READ)
    async def channels(self) -> list[AlertChannel]:
        rows = await service.list_channels(alert=self._model)
        return [AlertChannel.from_model(r, self._organization_id, self._model.application_id) for r in rows]

    @guarded_field(Permission.APPLICATION_READ, description="The delivery log, newest first.")
    async def deliveries(
        self, info: Info, first: int = 50, status: DeliveryStatusEnum | None = None
    ) -> list[Delivery]:
        if not 1 <= first <= MAX_DELIVERIES:
            raise InvalidInput(f"`first` must be between 1 and {MAX_DELIVERIES}", field="first")
        rows = await delivery_service.list_deliveries(
            actor=info.context.actor,
            alert_id=self._model.id,
            status=enums.DeliveryStatus(status.value) if status is not None else None,
            limit=first,
        )
        return [Delivery.from_model(r, self._organization_id, self._model.application_id) for r in rows]

    @guarded_field(
        Permission.APPLICATION_READ, description="The legacy project it belongs to; null in an Application."
    )
    async def legacy_project(self, info: Info) -> LegacyProject | None:
        return await legacy_project_of(info, self._model.application_id)

    @classmethod
    def from_model(cls, model: AlertModel, organization_id: uuid.UUID) -> Alert:
        return cls(
            _model=model,
            _organization_id=organization_id,
            id=strawberry.ID(str(model.id)),
            application_id=strawberry.ID(str(model.application_id)),
            name=model.name,
            event_types=[AlertEventTypeEnum(e) for e in model.event_types],
            thresholds=[f"{d}d" for d in model.thresholds_days],
            daily_repeat=model.daily_repeat,
            profile_ids=[strawberry.ID(str(p)) for p in model.profile_ids],
            name_pattern=model.name_pattern,
            is_active=model.is_active,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="The outcome of a test send: one delivery (with its attempt) per channel.")
class SendTestAlertPayload:
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    ok: bool = strawberry.field(description="True when every channel accepted the sample.")
    deliveries: list[Delivery]

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id)


@strawberry.input(
    description="A channel. On update, give `id` to keep a channel and, without `secret`, its secret."
)
class AlertChannelInput:
    type: AlertChannelTypeEnum
    config: JSON = strawberry.field(
        default_factory=dict,
        description=(
            "EMAIL {recipients: [..]}; WEBHOOK {url}; SLACK {channel (a label)}; "
            "PAGERDUTY {eventsUrl, severity}"
        ),
    )
    secret: str | None = strawberry.field(
        default=None,
        description="Write-only: WEBHOOK signing secret, SLACK incoming-webhook URL, PAGERDUTY routing key.",
    )
    id: strawberry.ID | None = None


@strawberry.input
class CreateAlertInput:
    application_id: strawberry.ID
    name: str
    event_types: list[AlertEventTypeEnum]
    channels: list[AlertChannelInput] = strawberry.field(description="1 to 10 channels.")
    thresholds: list[str] = strawberry.field(
        default_factory=list, description='For EXPIRATION: e.g. ["30d", "7d", "1d"] or ["30d,7d,1d"].'
    )
    daily_repeat: bool = False
    profile_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    name_pattern: str | None = strawberry.field(
        default=None, description="Over CN and SANs, e.g. *.example.com"
    )
    is_active: bool = True


@strawberry.input(description="Omitted fields stay as they are; `channels` replaces the whole list.")
class UpdateAlertInput:
    name: str | None = strawberry.UNSET
    event_types: list[AlertEventTypeEnum] | None = strawberry.UNSET
    thresholds: list[str] | None = strawberry.UNSET
    daily_repeat: bool | None = strawberry.UNSET
    profile_ids: list[strawberry.ID] | None = strawberry.UNSET
    name_pattern: str | None = strawberry.field(default=strawberry.UNSET, description="Null clears it.")
    is_active: bool | None = strawberry.UNSET
    channels: list[AlertChannelInput] | None = strawberry.UNSET


T = TypeVar("T")


def _opt(value: T | None) -> T | None:
    """An omitted input field (UNSET) as None: "leave it as it is"."""
    return None if value is strawberry.UNSET else value


def _specs(channels: list[AlertChannelInput]) -> list[service.ChannelSpec]:
    specs = []
    for index, given in enumerate(channels):
        if not isinstance(given.config, dict):
            raise InvalidInput(
                f"channels[{index}].config must be an object", field=f"channels[{index}].config"
            )
        specs.append(
            service.ChannelSpec(
                type=given.type.value,
                config=dict(given.config),
                secret=given.secret,
                id=parse_id(given.id, "channel") if given.id is not None else None,
            )
        )
    return specs


def _organization(info: Info) -> uuid.UUID:
    return actor_organization(info.context)


@strawberry.type
class Query:
    @guarded_field(Permission.APPLICATION_READ, description="An application's alerts, by name.")
    async def alerts(self, info: Info, application_id: strawberry.ID) -> list[Alert]:
        rows = await service.list_alerts(
            actor=info.context.actor, application_id=parse_id(application_id, "application")
        )
        return [Alert.from_model(r, _organization(info)) for r in rows]

    @guarded_field(Permission.APPLICATION_READ, description="One alert; NOT_FOUND if you may not see it.")
    async def alert(self, info: Info, id: strawberry.ID) -> Alert:
        model = await service.get_alert(actor=info.context.actor, alert_id=parse_id(id, "alert"))
        return Alert.from_model(model, _organization(info))


@strawberry.type
class Mutation:
    @guarded_mutation(Permission.ALERTS_MANAGE, description="Create an alert (application Admin).")
    async def create_alert(self, info: Info, input: CreateAlertInput) -> Alert:
        model = await service.create_alert(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            name=input.name,
            event_types=[e.value for e in input.event_types],
            channels=_specs(input.channels),
            thresholds=input.thresholds,
            daily_repeat=input.daily_repeat,
            profile_ids=[parse_id(p, "profile") for p in input.profile_ids],
            name_pattern=input.name_pattern,
            is_active=input.is_active,
        )
        return Alert.from_model(model, _organization(info))

    @guarded_mutation(Permission.ALERTS_MANAGE, description="Change an alert; omitted fields stay.")
    async def update_alert(self, info: Info, id: strawberry.ID, input: UpdateAlertInput) -> Alert:
        event_types, profile_ids, channels = (
            _opt(input.event_types),
            _opt(input.profile_ids),
            _opt(input.channels),
        )
        model = await service.update_alert(
            actor=info.context.actor,
            alert_id=parse_id(id, "alert"),
            name=_opt(input.name),
            event_types=[e.value for e in event_types] if event_types is not None else None,
            thresholds=_opt(input.thresholds),
            daily_repeat=_opt(input.daily_repeat),
            profile_ids=[parse_id(p, "profile") for p in profile_ids] if profile_ids is not None else None,
            name_pattern=_opt(input.name_pattern),
            clear_name_pattern=input.name_pattern is None,
            is_active=_opt(input.is_active),
            channels=_specs(channels) if channels is not None else None,
        )
        return Alert.from_model(model, _organization(info))

    @guarded_mutation(
        Permission.ALERTS_MANAGE, description="Delete an alert and its delivery log; returns its id."
    )
    async def delete_alert(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        model = await service.delete_alert(actor=info.context.actor, alert_id=parse_id(id, "alert"))
        return strawberry.ID(str(model.id))

    @guarded_mutation(
        Permission.ALERTS_MANAGE,
        description="Send a sample through every channel now; each attempt lands in the delivery log.",
    )
    async def send_test_alert(self, info: Info, id: strawberry.ID) -> SendTestAlertPayload:
        sends = await service.send_test_alert(actor=info.context.actor, alert_id=parse_id(id, "alert"))
        organization_id = _organization(info)
        model = await service.get_alert(actor=info.context.actor, alert_id=parse_id(id, "alert"))
        application_id = model.application_id
        return SendTestAlertPayload(
            _organization_id=organization_id,
            _application_id=application_id,
            ok=all(s.result.ok for s in sends),
            deliveries=[Delivery.from_model(s.delivery, organization_id, application_id) for s in sends],
        )

    @guarded_mutation(
        Permission.ALERTS_MANAGE, description="Put a DEAD delivery back in the queue with fresh attempts."
    )
    async def retry_delivery(self, info: Info, delivery_id: strawberry.ID) -> Delivery:
        model = await delivery_service.retry_by_hand(
            actor=info.context.actor, delivery_id=parse_id(delivery_id, "delivery")
        )
        alert = await service.get_alert(actor=info.context.actor, alert_id=model.alert_id)
        return Delivery.from_model(model, _organization(info), alert.application_id)
