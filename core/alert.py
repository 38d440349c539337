"""Alerts of an application (SPEC §9): create, update, delete with validation first, and test sends."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import audit, channel, runtime
from core.access import attached_profiles, load_application, load_application_row
from core.authz import Actor, Permission
from core.channel import AttemptResult, Notification
from core.delivery import log_attempt
from core.errors import Conflict, InvalidInput
from core.legacy import rules as legacy_rules
from models import (
    Alert,
    AlertChannel,
    Application,
    Delivery,
    DeliveryAttempt,
    ExpirationNotice,
)
from models.enums import ChannelType, DeliveryStatus
from pki.errors import PkiError
from pki.pattern import validate_pattern

# "approval": a request waits for its approvers (core/approval.py).
EVENT_TYPES = ("expiration", "issuance", "renewal", "revocation", "approval")
MAX_CHANNELS = 10
MAX_RECIPIENTS = 50
MAX_THRESHOLD_DAYS = 3650
MAX_NAME_LENGTH = 100
MIN_SIGNING_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 2048
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")

_THRESHOLD = re.compile(r"^(\d{1,4})d$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)

# Per type: the config keys allowed, and whether a secret is required (the secret is write-only).
_CONFIG_KEYS: dict[ChannelType, frozenset[str]] = {
    ChannelType.EMAIL: frozenset({"recipients"}),
    ChannelType.WEBHOOK: frozenset({"url"}),
    ChannelType.SLACK: frozenset({"channel"}),
    ChannelType.PAGERDUTY: frozenset({"eventsUrl", "severity"}),
}
_SECRET_NAMES = {
    ChannelType.WEBHOOK: "the webhook signing secret",
    ChannelType.SLACK: "the Slack incoming-webhook URL",
    ChannelType.PAGERDUTY: "the PagerDuty routing key",
}


@dataclass(frozen=True)
class ChannelSpec:
    """One channel as the caller gives it; `id` (on update) keeps an existing channel and its secret."""

    type: str
    config: dict[str, Any]
    secret: str | None = None
    id: uuid.UUID | None = None


@dataclass(frozen=True)
class _CheckedChannel:
    id: uuid.UUID
    type: ChannelType
    config: dict[str, Any]
    secret: str | None  # None: keep the existing sealed secret (or none for email)
    existing: bool


# ---------------------------------------------------------------- validation (pure, before any write)


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"alert name must be 1 to {MAX_NAME_LENGTH} characters", field="name")
    return name


def validate_event_types(event_types: Sequence[str]) -> list[str]:
    chosen = [str(e).strip().lower() for e in event_types]
    if not chosen:
        raise InvalidInput(
            f"choose at least one event type among {', '.join(EVENT_TYPES)}", field="eventTypes"
        )
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            f"unknown event type(s) {', '.join(map(repr, unknown))}: use {', '.join(EVENT_TYPES)}",
            field="eventTypes",
        )
    return [e for e in EVENT_TYPES if e in chosen]


def parse_thresholds(thresholds: Sequence[str] | str) -> list[int]:
    """'30d,7d,1d' or ['30d', '7d'] -> [30, 7, 1] (largest first, no duplicates)."""
    items = (
        thresholds.split(",")
        if isinstance(thresholds, str)
        else [p for t in thresholds for p in t.split(",")]
    )
    days: set[int] = set()
    for raw in items:
        text = raw.strip().lower()
        if not text and isinstance(thresholds, str) and not thresholds.strip():
            continue
        match = _THRESHOLD.match(text)
        if not match or not 1 <= int(match.group(1)) <= MAX_THRESHOLD_DAYS:
            raise InvalidInput(
                f"threshold {raw.strip()!r} is not a number of days from 1 to {MAX_THRESHOLD_DAYS} "
                "written like 30d (e.g. thresholds 30d,7d,1d)",
                field="thresholds",
            )
        days.add(int(match.group(1)))
    return sorted(days, reverse=True)


def validate_name_pattern(pattern: str | None) -> str | None:
    if pattern is None or not pattern.strip():
        return None
    pattern = pattern.strip()
    if len(pattern) > 255:
        raise InvalidInput("name pattern must be at most 255 characters", field="namePattern")
    try:
        validate_pattern(pattern)
    except PkiError as exc:
        raise InvalidInput(
            f"name pattern {pattern!r} is not usable: {exc} (e.g. *.example.com or **.example.com)",
            field="namePattern",
        ) from None
    return pattern


def _private_host(host: str) -> bool:
    """Loopback, private, link-local or unspecified addresses, and localhost names."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
    )


def validate_url(url: Any, field: str, what: str, *, secret: bool = False) -> str:
    """https only, and never loopback/private hosts, unless KEYWARD_ALLOW_LOOPBACK_WEBHOOKS is on."""
    shown = "the URL" if secret else repr(url)
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{what} is required", field=field)
    url = url.strip()
    try:
        parsed = urlsplit(url)
        host = parsed.hostname or ""
        parsed.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidInput(f"{what}: {shown} is not a valid URL", field=field) from None
    if parsed.scheme not in ("https", "http") or not host:
        raise InvalidInput(f"{what}: {shown} must be an absolute https:// URL", field=field)
    allow_local = runtime.settings().allow_loopback_webhooks
    if parsed.scheme != "https" and not allow_local:
        raise InvalidInput(
            f"{what}: {shown} must use https "
            "(plain http is allowed only with KEYWARD_ALLOW_LOOPBACK_WEBHOOKS)",
            field=field,
        )
    if _private_host(host) and not allow_local:
        raise InvalidInput(
            f"{what}: {shown} points at a loopback or private address; use a public https receiver "
            "(loopback is allowed only with KEYWARD_ALLOW_LOOPBACK_WEBHOOKS)",
            field=field,
        )
    return url


def _check_channel(index: int, spec: ChannelSpec, existing: dict[uuid.UUID, AlertChannel]) -> _CheckedChannel:
    where = f"channels[{index}]"
    try:
        kind = ChannelType(str(spec.type).lower())
    except ValueError:
        raise InvalidInput(
            f"{where}: unknown channel type {spec.type!r}: use {', '.join(t.value for t in ChannelType)}",
            field=f"{where}.type",
        ) from None
    config = dict(spec.config or {})
    unknown = sorted(set(config) - _CONFIG_KEYS[kind])
    if unknown:
        raise InvalidInput(
            f"{where}: unknown {kind.value} setting(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_CONFIG_KEYS[kind])) or 'none'}",
            field=f"{where}.config",
        )
    previous = existing.get(spec.id) if spec.id is not None else None
    if spec.id is not None and (previous is None or ChannelType(previous.type) != kind):
        raise InvalidInput(
            f"{where}: channel {spec.id} is not a {kind.value} channel of this alert", field=f"{where}.id"
        )
    secret = spec.secret.strip() if isinstance(spec.secret, str) and spec.secret.strip() else None
    if kind == ChannelType.EMAIL:
        recipients = config.get("recipients")
        if isinstance(recipients, str):
            recipients = [r for r in recipients.split(",")]
        if not isinstance(recipients, list) or not recipients:
            raise InvalidInput(
                f"{where}: an email channel needs recipients", field=f"{where}.config.recipients"
            )
        cleaned = []
        for recipient in recipients:
            address = str(recipient).strip()
            if not _EMAIL.match(address):
                raise InvalidInput(
                    f"{where}: {address!r} is not a valid email address", field=f"{where}.config.recipients"
                )
            if address not in cleaned:
                cleaned.append(address)
        if len(cleaned) > MAX_RECIPIENTS:
            raise InvalidInput(
                f"{where}: at most {MAX_RECIPIENTS} recipients per channel",
                field=f"{where}.config.recipients",
            )
        config = {"recipients": cleaned}
        if secret is not None:
            raise InvalidInput(f"{where}: an email channel takes no secret", field=f"{where}.secret")
    elif kind == ChannelType.WEBHOOK:
        config = {"url": validate_url(config.get("url"), f"{where}.config.url", f"{where}: webhook URL")}
        if secret is not None and not MIN_SIGNING_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
            raise InvalidInput(
                f"{where}: the signing secret must be {MIN_SIGNING_SECRET_LENGTH} to {MAX_SECRET_LENGTH} "
                "characters",
                field=f"{where}.secret",
            )
    elif kind == ChannelType.SLACK:
        label = config.get("channel")
        if label is not None and (not isinstance(label, str) or len(label) > 100):
            raise InvalidInput(
                f"{where}: the Slack channel label must be text", field=f"{where}.config.channel"
            )
        config = {"channel": label} if label else {}
        if secret is not None:
            validate_url(secret, f"{where}.secret", f"{where}: Slack incoming-webhook URL", secret=True)
    elif kind == ChannelType.PAGERDUTY:
        checked: dict[str, Any] = {}
        if config.get("eventsUrl"):
            checked["eventsUrl"] = validate_url(
                config["eventsUrl"], f"{where}.config.eventsUrl", f"{where}: PagerDuty events URL"
            )
        if config.get("severity") is not None:
            if config["severity"] not in PAGERDUTY_SEVERITIES:
                raise InvalidInput(
                    f"{where}: severity must be one of {', '.join(PAGERDUTY_SEVERITIES)}",
                    field=f"{where}.config.severity",
                )
            checked["severity"] = config["severity"]
        config = checked
        if secret is not None and (len(secret) > 128 or not secret.isprintable() or " " in secret):
            raise InvalidInput(f"{where}: the routing key is not valid", field=f"{where}.secret")
    if kind in _SECRET_NAMES and secret is None and (previous is None or not previous.encrypted_secret):
        raise InvalidInput(f"{where}: {_SECRET_NAMES[kind]} is required", field=f"{where}.secret")
    return _CheckedChannel(
        id=previous.id if previous is not None else uuid.uuid4(),
        type=kind,
        config=config,
        secret=secret,
        existing=previous is not None,
    )


def _check_channels(
    specs: Sequence[ChannelSpec], existing: dict[uuid.UUID, AlertChannel] | None = None
) -> list[_CheckedChannel]:
    if not 1 <= len(specs) <= MAX_CHANNELS:
        raise InvalidInput(f"an alert needs 1 to {MAX_CHANNELS} channels, got {len(specs)}", field="channels")
    ids = [s.id for s in specs if s.id is not None]
    if len(ids) != len(set(ids)):
        raise InvalidInput("a channel id appears twice", field="channels")
    return [_check_channel(i, spec, existing or {}) for i, spec in enumerate(specs)]


async def _check_profiles(application: Application, profile_ids: Sequence[uuid.UUID]) -> list[str]:
    return [str(a.profile_id) for a in await attached_profiles(application, profile_ids)]


def _check_thresholds(event_types: list[str], thresholds: list[int]) -> None:
    if "expiration" in event_types and not thresholds:
        raise InvalidInput('an expiration alert needs thresholds such as "30d,7d,1d"', field="thresholds")


def _channel_summary(checked: Sequence[_CheckedChannel]) -> list[dict[str, Any]]:
    """For the audit log: types and non-secret config, and whether a secret was set (never its value)."""
    return [{"type": c.type.value, "config": c.config, "secretSet": c.secret is not None} for c in checked]


def _taken(name: str) -> Conflict:
    return Conflict(f"an alert named {name!r} already exists in this application", field="name")


# ---------------------------------------------------------------- services


async def _load_alert(actor: Actor, alert_id: uuid.UUID, permission: Permission) -> tuple[Alert, Application]:
    return await load_application_row(actor, Alert, alert_id, permission, "alert")


async def get_alert(*, actor: Actor, alert_id: uuid.UUID) -> Alert:
    alert, _ = await _load_alert(actor, alert_id, Permission.APPLICATION_READ)
    return alert


async def list_alerts(*, actor: Actor, application_id: uuid.UUID) -> list[Alert]:
    application = await load_application(actor, application_id, Permission.APPLICATION_READ)
    return await Alert.filter(application_id=application.id).order_by("name", "id")


async def list_channels(*, alert: Alert) -> list[AlertChannel]:
    """The alert's channels in order (the caller already read the alert)."""
    return await AlertChannel.filter(alert_id=alert.id).order_by("position", "created_at")


async def _write_channels(alert: Alert, checked: Sequence[_CheckedChannel], conn: Any) -> None:
    keep = [c.id for c in checked if c.existing]
    await AlertChannel.filter(alert_id=alert.id).exclude(id__in=keep).using_db(conn).delete()
    for position, spec in enumerate(checked):
        sealed = channel.seal_secret(spec.id, spec.secret) if spec.secret is not None else None
        if spec.existing:
            values: dict[str, Any] = {"config": spec.config, "position": position}
            if sealed is not None:
                values["encrypted_secret"] = sealed
            await AlertChannel.filter(id=spec.id).using_db(conn).update(**values)
        else:
            await AlertChannel(
                id=spec.id,
                alert_id=alert.id,
                type=spec.type,
                position=position,
                config=spec.config,
                encrypted_secret=sealed,
            ).save(using_db=conn, force_create=True)


async def create_alert(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    name: str,
    event_types: Sequence[str],
    channels: Sequence[ChannelSpec],
    thresholds: Sequence[str] | str = (),
    daily_repeat: bool = False,
    profile_ids: Sequence[uuid.UUID] = (),
    name_pattern: str | None = None,
    is_active: bool = True,
) -> Alert:
    """Everything is validated before the first write; nothing is saved on bad input."""
    application = await load_application(actor, application_id, Permission.ALERTS_MANAGE)
    legacy_rules.refuse_create_outside_application(application, "alert")
    name = validate_name(name)
    chosen = validate_event_types(event_types)
    days = parse_thresholds(thresholds)
    _check_thresholds(chosen, days)
    pattern = validate_name_pattern(name_pattern)
    checked = _check_channels(channels)
    profiles = await _check_profiles(application, profile_ids)
    if await Alert.exists(application_id=application.id, name=name):
        raise _taken(name)
    alert = Alert(
        id=uuid.uuid4(),
        application_id=application.id,
        name=name,
        event_types=chosen,
        thresholds_days=days,
        daily_repeat=daily_repeat,
        profile_ids=profiles,
        name_pattern=pattern,
        is_active=is_active,
    )
    try:
        async with in_transaction() as conn:
            await alert.save(using_db=conn, force_create=True)
            await _write_channels(alert, checked, conn)
            await audit.record(
                actor=actor,
                action="alert.create",
                resource_type="alert",
                resource_id=alert.id,
                application_id=application.id,
                details={
                    "name": name,
                    "eventTypes": chosen,
                    "thresholdsDays": days,
                    "dailyRepeat": daily_repeat,
                    "profileIds": profiles,
                    "namePattern": pattern,
                    "isActive": is_active,
                    "channels": _channel_summary(checked),
                },
                connection=conn,
            )
    except IntegrityError:
        raise _taken(name) from None
    return alert


async def update_alert(
    *,
    actor: Actor,
    alert_id: uuid.UUID,
    name: str | None = None,
    event_types: Sequence[str] | None = None,
    thresholds: Sequence[str] | str | None = None,
    daily_repeat: bool | None = None,
    profile_ids: Sequence[uuid.UUID] | None = None,
    name_pattern: str | None = None,
    clear_name_pattern: bool = False,
    is_active: bool | None = None,
    channels: Sequence[ChannelSpec] | None = None,
) -> Alert:
    """None leaves a field as it is; `channels` replaces the list (an entry with an id keeps that channel)."""
    alert, application = await _load_alert(actor, alert_id, Permission.ALERTS_MANAGE)
    changes: dict[str, Any] = {}
    if name is not None:
        name = validate_name(name)
        if name != alert.name:
            if await Alert.exists(application_id=application.id, name=name):
                raise _taken(name)
            changes["name"] = name
    chosen = validate_event_types(event_types) if event_types is not None else list(alert.event_types)
    days = parse_thresholds(thresholds) if thresholds is not None else list(alert.thresholds_days)
    _check_thresholds(chosen, days)
    if chosen != alert.event_types:
        changes["event_types"] = chosen
    if days != alert.thresholds_days:
        changes["thresholds_days"] = days
    if daily_repeat is not None and daily_repeat != alert.daily_repeat:
        changes["daily_repeat"] = daily_repeat
    if profile_ids is not None:
        profiles = await _check_profiles(application, profile_ids)
        if profiles != alert.profile_ids:
            changes["profile_ids"] = profiles
    if clear_name_pattern:
        if alert.name_pattern is not None:
            changes["name_pattern"] = None
    elif name_pattern is not None:
        pattern = validate_name_pattern(name_pattern)
        if pattern != alert.name_pattern:
            changes["name_pattern"] = pattern
    if is_active is not None and is_active != alert.is_active:
        changes["is_active"] = is_active
    checked: list[_CheckedChannel] | None = None
    if channels is not None:
        existing = {c.id: c for c in await list_channels(alert=alert)}
        checked = _check_channels(channels, existing)
    if not changes and checked is None:
        return alert
    details: dict[str, Any] = {_camel(k): v for k, v in changes.items()}
    if checked is not None:
        details["channels"] = _channel_summary(checked)
    for key, value in changes.items():
        setattr(alert, key, value)
    try:
        async with in_transaction() as conn:
            await alert.save(using_db=conn, update_fields=[*changes, "updated_at"])
            if checked is not None:
                await _write_channels(alert, checked, conn)
            await audit.record(
                actor=actor,
                action="alert.update",
                resource_type="alert",
                resource_id=alert.id,
                application_id=application.id,
                details=details,
                connection=conn,
            )
    except IntegrityError:
        raise _taken(alert.name) from None
    return alert


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def delete_alert(*, actor: Actor, alert_id: uuid.UUID) -> Alert:
    """Deletes the alert with its channels, delivery log and expiration notices."""
    alert, application = await _load_alert(actor, alert_id, Permission.ALERTS_MANAGE)
    async with in_transaction() as conn:
        channel_ids = await AlertChannel.filter(alert_id=alert.id).using_db(conn).values_list("id", flat=True)
        delivery_ids = await Delivery.filter(alert_id=alert.id).using_db(conn).values_list("id", flat=True)
        await DeliveryAttempt.filter(delivery_id__in=list(delivery_ids)).using_db(conn).delete()
        await Delivery.filter(alert_id=alert.id).using_db(conn).delete()
        await AlertChannel.filter(id__in=list(channel_ids)).using_db(conn).delete()
        await ExpirationNotice.filter(alert_id=alert.id).using_db(conn).delete()
        await alert.delete(using_db=conn)
        await audit.record(
            actor=actor,
            action="alert.delete",
            resource_type="alert",
            resource_id=alert.id,
            application_id=application.id,
            details={"name": alert.name},
            connection=conn,
        )
    return alert


def sample_notification(alert: Alert, application: Application) -> Notification:
    """What a test send carries: one made-up certificate, clearly labelled a sample."""
    now = datetime.now(UTC)
    return Notification(
        event_id=uuid.uuid4(),
        event_type=channel.EVENT_TEST,
        occurred_at=now,
        organization_id=application.organization_id,
        application_id=application.id,
        application_name=application.name,
        alert_name=alert.name,
        certificates=[
            {
                "id": str(uuid.UUID(int=0)),
                "commonName": "sample.example.com",
                "sans": ["DNS:sample.example.com", "DNS:www.sample.example.com"],
                "serialNumber": "0123456789abcdef",
                "notBefore": (now - timedelta(days=83)).isoformat(),
                "notAfter": (now + timedelta(days=7, hours=1)).isoformat(),
                "status": "active",
                "profileName": "sample-profile",
            }
        ],
        details={"test": True, "thresholdDays": 7, "daysLeft": 7},
    )


@dataclass(frozen=True)
class TestSend:
    channel: AlertChannel
    delivery: Delivery
    result: AttemptResult


async def send_test_alert(*, actor: Actor, alert_id: uuid.UUID) -> list[TestSend]:
    """Send a sample through every channel now; each attempt lands in the delivery log (event type "test")."""
    alert, application = await _load_alert(actor, alert_id, Permission.ALERTS_MANAGE)
    channels = await list_channels(alert=alert)
    notification = sample_notification(alert, application)

    async def one(ch: AlertChannel) -> tuple[AttemptResult, datetime, int]:
        started, clock = datetime.now(UTC), time.monotonic()
        result = await channel.send(ch, notification)
        return result, started, int((time.monotonic() - clock) * 1000)

    outcomes = await asyncio.gather(*(one(ch) for ch in channels))
    sends: list[TestSend] = []
    async with in_transaction() as conn:
        for ch, (result, started, duration_ms) in zip(channels, outcomes, strict=True):
            delivery = Delivery(
                id=uuid.uuid4(),
                alert_id=alert.id,
                channel_id=ch.id,
                event_id=notification.event_id,
                event_type=channel.EVENT_TEST,
                payload=notification.to_payload(),
                # A test is tried once: a failure is dead at once (retryable by hand), never retried alone.
                status=DeliveryStatus.SUCCEEDED if result.ok else DeliveryStatus.DEAD,
                attempts=1,
                next_attempt_at=started,
                last_error=result.error,
            )
            await delivery.save(using_db=conn, force_create=True)
            await log_attempt(
                delivery_id=delivery.id,
                attempted_at=started,
                result=result,
                duration_ms=duration_ms,
                connection=conn,
            )
            sends.append(TestSend(ch, delivery, result))
        await audit.record(
            actor=actor,
            action="alert.test",
            resource_type="alert",
            resource_id=alert.id,
            application_id=application.id,
            details={
                "eventId": str(notification.event_id),
                "results": [
                    {"channelId": str(s.channel.id), "type": s.channel.type.value, "ok": s.result.ok}
                    for s in sends
                ],
            },
            connection=conn,
        )
    return sends
