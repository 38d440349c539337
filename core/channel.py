"""Alert channels (SPEC §9): what a notification is, and how it reaches email, webhooks, Slack, PagerDuty."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import html
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
import httpx

from core import runtime
from models import AlertChannel
from models.enums import ChannelType
from pki import sealing
from pki.errors import PkiError

log = logging.getLogger("keyward.channel")

EVENT_TEST = "test"


@dataclass(frozen=True)
class Notification:
    """One thing to tell a channel; JSON-serializable via to_payload() so it can live in Delivery.payload."""

    event_id: uuid.UUID  # the outbox event id, or the ExpirationNotice id: stable across retries
    event_type: (
        str  # certificate.issued | certificate.renewed | certificate.revoked | certificate.expiring | test
    )
    occurred_at: datetime
    organization_id: uuid.UUID
    application_id: uuid.UUID
    application_name: str
    alert_name: str
    # Each: id, commonName, sans, serialNumber, notBefore, notAfter, status, profileName.
    certificates: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """A JSON-ready dict (ids and times as strings) to store in Delivery.payload."""
        return {
            "eventId": str(self.event_id),
            "eventType": self.event_type,
            "occurredAt": self.occurred_at.isoformat(),
            "organizationId": str(self.organization_id),
            "applicationId": str(self.application_id),
            "applicationName": self.application_name,
            "alertName": self.alert_name,
            "certificates": [dict(c) for c in self.certificates],
            "details": dict(self.details),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Notification:
        """The inverse of to_payload()."""
        return cls(
            event_id=uuid.UUID(payload["eventId"]),
            event_type=payload["eventType"],
            occurred_at=datetime.fromisoformat(payload["occurredAt"]),
            organization_id=uuid.UUID(payload["organizationId"]),
            application_id=uuid.UUID(payload["applicationId"]),
            application_name=payload["applicationName"],
            alert_name=payload["alertName"],
            certificates=[dict(c) for c in payload.get("certificates", [])],
            details=dict(payload.get("details", {})),
        )


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one attempt; `retryable` tells delivery whether to back off and try again."""

    ok: bool
    http_status: int | None = None
    smtp_reply: str | None = None
    error: str | None = None
    retryable: bool = False


# --- sending -------------------------------------------------------------------------------------------

# Every network wait is bounded: a receiver that hangs is a retryable failure, never a stuck worker.
CONNECT_TIMEOUT_SECONDS = 5.0
TOTAL_TIMEOUT_SECONDS = 10.0
DEFAULT_PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
USER_AGENT = "Keyward-Alerts/1"
MAX_LISTED_CERTIFICATES = 50  # in one email / Slack message; the rest are counted

CLOUDEVENT_TYPES = {
    "certificate.issued": "com.keyward.certificate.issued",
    "certificate.renewed": "com.keyward.certificate.renewed",
    "certificate.revoked": "com.keyward.certificate.revoked",
    "certificate.expiring": "com.keyward.certificate.expiring",
    EVENT_TEST: "com.keyward.alert.test",
}
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")


class _ChannelFailure(Exception):
    """A failure whose message is safe to store in the delivery log (no secret in it)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def seal_secret(channel_id: uuid.UUID, secret: str) -> bytes:
    """Seal a channel's write-only secret under the KEK, bound to the channel row."""
    return sealing.seal(kek=runtime.kek(), plaintext=secret.encode(), context=_context(channel_id))


def _context(channel_id: uuid.UUID) -> bytes:
    return f"channel:{channel_id}".encode()


def _secret(channel: AlertChannel) -> str:
    if not channel.encrypted_secret:
        raise _ChannelFailure(f"{channel.type.value} channel has no secret configured", retryable=False)
    try:
        return sealing.unseal(
            kek=runtime.kek(), sealed=bytes(channel.encrypted_secret), context=_context(channel.id)
        ).decode()
    except PkiError:
        raise _ChannelFailure(
            "the channel's secret cannot be decrypted (was the key-encryption key replaced?): set it again",
            retryable=False,
        ) from None


async def send(channel: AlertChannel, notification: Notification) -> AttemptResult:
    """Send one notification through one channel. Never raises; every network wait is bounded."""
    try:
        kind = ChannelType(channel.type)
    except ValueError:
        return AttemptResult(ok=False, error=f"unknown channel type {channel.type!r}", retryable=False)
    try:
        async with asyncio.timeout(TOTAL_TIMEOUT_SECONDS + 1):
            if kind == ChannelType.EMAIL:
                return await _send_email(channel, notification)
            if kind == ChannelType.WEBHOOK:
                return await _send_webhook(channel, notification)
            if kind == ChannelType.SLACK:
                return await _send_slack(channel, notification)
            if kind == ChannelType.PAGERDUTY:
                return await _send_pagerduty(channel, notification)
            return AttemptResult(ok=False, error=f"unknown channel type {kind.value!r}", retryable=False)
    except _ChannelFailure as failure:
        result = AttemptResult(ok=False, error=str(failure), retryable=failure.retryable)
    except TimeoutError:
        result = AttemptResult(
            ok=False, error=f"no answer within {TOTAL_TIMEOUT_SECONDS:g} s (timed out)", retryable=True
        )
    except Exception as exc:  # never raise into the worker: log the type, not the text (it may hold a URL)
        log.exception("sending through channel %s failed unexpectedly", channel.id)
        result = AttemptResult(ok=False, error=f"unexpected error: {type(exc).__name__}", retryable=True)
    log.info("channel %s (%s): %s", channel.id, kind.value, result.error)
    return result


# --- HTTP channels ---------------------------------------------------------------------------------------


async def _post_json(url: str, body: bytes, headers: dict[str, str], *, secret_url: bool) -> AttemptResult:
    """POST and classify: 2xx ok; 408/429/5xx/network/timeouts retryable; other answers not."""
    where = "the receiver" if secret_url else _redact(url)
    timeout = httpx.Timeout(TOTAL_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    try:
        async with (
            asyncio.timeout(TOTAL_TIMEOUT_SECONDS),
            httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client,
        ):
            response = await client.post(
                url,
                content=body,
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            )
    except (TimeoutError, httpx.TimeoutException):
        return AttemptResult(
            ok=False, error=f"{where} did not answer within {TOTAL_TIMEOUT_SECONDS:g} s", retryable=True
        )
    except httpx.HTTPError as exc:
        return AttemptResult(
            ok=False, error=f"cannot reach {where}: {type(exc).__name__}: {_short(str(exc))}", retryable=True
        )
    status = response.status_code
    if 200 <= status < 300:
        return AttemptResult(ok=True, http_status=status)
    answer = _short(response.text)
    retryable = status in (408, 429) or status >= 500
    return AttemptResult(
        ok=False,
        http_status=status,
        error=f"{where} answered HTTP {status}" + (f": {answer}" if answer else ""),
        retryable=retryable,
    )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redact(url: str) -> str:
    """Scheme, host and path only: a query string may carry a token."""
    parsed = urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc.rsplit('@', 1)[-1]}{parsed.path}"


def cloudevent(notification: Notification) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode envelope of a notification."""
    public_url = runtime.settings().public_url.rstrip("/")
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(notification.event_id),
        "source": f"{public_url}/applications/{notification.application_name}",
        "type": CLOUDEVENT_TYPES.get(notification.event_type, f"com.keyward.{notification.event_type}"),
        "time": _utc(notification.occurred_at).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": notification.to_payload(),
    }
    if len(notification.certificates) == 1:
        event["subject"] = str(notification.certificates[0].get("commonName") or "")
    return event


def signature_header(secret: str, body: bytes, timestamp_ms: int) -> str:
    """`t=<unix ms>,v1=<hex HMAC-SHA256 of "t.body">` (SPEC §9)."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_ms},v1={mac}"


async def _send_webhook(channel: AlertChannel, notification: Notification) -> AttemptResult:
    url = str((channel.config or {}).get("url") or "")
    if not url:
        raise _ChannelFailure("webhook channel has no URL", retryable=False)
    secret = _secret(channel)
    body = json.dumps(cloudevent(notification), separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/cloudevents+json; charset=utf-8",
        "X-Keyward-Signature": signature_header(secret, body, int(time.time() * 1000)),
    }
    return await _post_json(url, body, headers, secret_url=False)


def slack_message(notification: Notification) -> dict[str, Any]:
    """Slack incoming-webhook body: `text` (the fallback and notification line) and `blocks`."""
    summary = subject_line(notification).removeprefix("[Keyward] ")
    lines = []
    for cert in notification.certificates[:MAX_LISTED_CERTIFICATES]:
        left = _days_left(cert)
        name = _slack_escape(str(cert.get("commonName") or "(no CN)"))
        lines.append(
            f"• *{name}* — serial `{cert.get('serialNumber')}`,"
            f" {cert.get('status')}, expires {cert.get('notAfter')}"
            + (f" ({left} days left)" if left is not None else "")
        )
    extra = len(notification.certificates) - MAX_LISTED_CERTIFICATES
    if extra > 0:
        lines.append(f"…and {extra} more")
    text = "\n".join(lines)
    if len(text) > 2900:  # a section's text holds at most 3000 characters
        text = text[:2899] + "…"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _short(summary, 150)}},
    ]
    if text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _slack_escape(
                        f"Alert {notification.alert_name} · application {notification.application_name}"
                        f" · event {notification.event_id}"
                    ),
                }
            ],
        }
    )
    return {"text": _slack_escape(summary), "blocks": blocks}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def _send_slack(channel: AlertChannel, notification: Notification) -> AttemptResult:
    url = _secret(channel)
    body = json.dumps(slack_message(notification)).encode()
    return await _post_json(url, body, {}, secret_url=True)


def pagerduty_severity(notification: Notification) -> str:
    days = notification.details.get("daysLeft", notification.details.get("thresholdDays"))
    if notification.event_type == "certificate.expiring" and isinstance(days, int):
        return "critical" if days <= 1 else "error" if days <= 7 else "warning"
    if notification.event_type == "certificate.revoked":
        return "warning"
    return "info"


def pagerduty_event(routing_key: str, notification: Notification, severity: str | None) -> dict[str, Any]:
    """A PagerDuty Events API v2 trigger; dedup_key is the event id so retries never page twice."""
    first = notification.certificates[0] if notification.certificates else {}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": str(notification.event_id),
        "payload": {
            "summary": _short(subject_line(notification).removeprefix("[Keyward] "), 1024),
            "source": f"keyward/{notification.application_name}",
            "severity": severity or pagerduty_severity(notification),
            "timestamp": _utc(notification.occurred_at).isoformat(),
            "component": str(first.get("commonName") or notification.application_name),
            "group": notification.application_name,
            "class": notification.event_type,
            "custom_details": {
                "alert": notification.alert_name,
                "application": notification.application_name,
                "certificates": notification.certificates[:MAX_LISTED_CERTIFICATES],
                "details": notification.details,
            },
        },
        "client": "Keyward",
        "client_url": runtime.settings().public_url,
    }


async def _send_pagerduty(channel: AlertChannel, notification: Notification) -> AttemptResult:
    config = channel.config or {}
    url = str(config.get("eventsUrl") or DEFAULT_PAGERDUTY_EVENTS_URL)
    event = pagerduty_event(_secret(channel), notification, config.get("severity"))
    return await _post_json(url, json.dumps(event).encode(), {}, secret_url=False)


# --- email -------------------------------------------------------------------------------------------------

_VERBS = {
    "certificate.issued": "was issued",
    "certificate.renewed": "was renewed",
    "certificate.revoked": "was revoked",
}
_PLURAL_VERBS = {
    "certificate.issued": "were issued",
    "certificate.renewed": "were renewed",
    "certificate.revoked": "were revoked",
}


def subject_line(notification: Notification) -> str:
    """E.g. "[Keyward] 3 certificates of payments-api expire within 7 days"."""
    count = len(notification.certificates)
    app = notification.application_name
    if notification.event_type == EVENT_TEST:
        return f"[Keyward] Test of alert {notification.alert_name} for {app}"
    if notification.event_type == "approval.requested":
        details = notification.details
        name = details.get("commonName") or ", ".join(details.get("requestedSans") or [])
        return f"[Keyward] Approval requested: certificate {name or '(no name)'} of {app}"
    if count == 1:
        what = f"certificate {notification.certificates[0].get('commonName') or '(no CN)'} of {app}"
    else:
        what = f"{count} certificates of {app}"
    if notification.event_type == "certificate.expiring":
        days = notification.details.get("thresholdDays")
        verb = "expires" if count == 1 else "expire"
        within = f"within {days} day{'s' if days != 1 else ''}" if isinstance(days, int) else "soon"
        return f"[Keyward] {what} {verb} {within}"
    verbs = _VERBS if count == 1 else _PLURAL_VERBS
    return f"[Keyward] {what} {verbs.get(notification.event_type, notification.event_type)}"


def _happened(notification: Notification) -> str:
    details = notification.details
    if notification.event_type == EVENT_TEST:
        return (
            f"This is a test sent from alert {notification.alert_name!r} of application "
            f"{notification.application_name}. The certificate below is a sample."
        )
    if notification.event_type == "approval.requested":
        return (
            f"Alert {notification.alert_name!r}: request {details.get('approvalRequestId')} by "
            f"{details.get('requester')} waits for step {details.get('step')} of {details.get('steps')} "
            f"of policy {details.get('policy')!r} ({details.get('required')} approval(s) needed) until "
            f"{details.get('expiresAt')}. Approvers: approve or reject it in Keyward (approvalRequests)."
        )
    if notification.event_type == "certificate.expiring":
        return (
            f"Alert {notification.alert_name!r}: these certificates reach the "
            f"{details.get('thresholdDays')}-day expiration threshold."
        )
    count = len(notification.certificates)
    verb = (_VERBS if count == 1 else _PLURAL_VERBS).get(notification.event_type, notification.event_type)
    what = "this certificate" if count == 1 else f"these {count} certificates"
    text = f"Alert {notification.alert_name!r}: {what} {verb}."
    if details.get("reason"):
        text += f" Reason: {details['reason']}."
    return text


_COLUMNS = (
    ("Common name", "commonName"),
    ("SANs", "sans"),
    ("Serial", "serialNumber"),
    ("Not after", "notAfter"),
    ("Days left", "daysLeft"),
    ("Status", "status"),
    ("Profile", "profileName"),
    ("Application", "application"),
)


def _rows(notification: Notification) -> list[dict[str, str]]:
    rows = []
    for cert in notification.certificates[:MAX_LISTED_CERTIFICATES]:
        left = _days_left(cert)
        sans = cert.get("sans") or []
        rows.append(
            {
                "commonName": str(cert.get("commonName") or ""),
                "sans": ", ".join(str(s) for s in sans) if isinstance(sans, list) else str(sans),
                "serialNumber": str(cert.get("serialNumber") or ""),
                "notAfter": str(cert.get("notAfter") or ""),
                "daysLeft": "" if left is None else str(left),
                "status": str(cert.get("status") or ""),
                "profileName": str(cert.get("profileName") or ""),
                "application": notification.application_name,
            }
        )
    return rows


def email_bodies(notification: Notification) -> tuple[str, str]:
    """(plain text, HTML) listing the certificates and what happened."""
    rows = _rows(notification)
    extra = len(notification.certificates) - len(rows)
    text_lines = [_happened(notification), ""]
    for row in rows:
        for label, key in _COLUMNS:
            text_lines.append(f"  {label + ':':<13}{row[key]}")
        text_lines.append("")
    if extra > 0:
        text_lines.append(f"…and {extra} more certificates.")
    text_lines += [
        f"Application: {notification.application_name}",
        f"Event: {notification.event_type} ({notification.event_id})",
        f"Keyward: {runtime.settings().public_url}",
    ]
    head = "".join(f"<th align='left'>{html.escape(label)}</th>" for label, _ in _COLUMNS)
    body_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(row[key])}</td>" for _, key in _COLUMNS) + "</tr>" for row in rows
    )
    more = f"<p>…and {extra} more certificates.</p>" if extra > 0 else ""
    html_body = (
        "<!DOCTYPE html><html><body style='font-family:sans-serif'>"
        f"<p>{html.escape(_happened(notification))}</p>"
        f"<table border='1' cellpadding='4' cellspacing='0'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body_rows}</tbody></table>{more}"
        f"<p style='color:#666'>Application {html.escape(notification.application_name)} · event "
        f"{html.escape(notification.event_type)} ({notification.event_id}) · "
        f"<a href='{html.escape(runtime.settings().public_url)}'>Keyward</a></p>"
        "</body></html>"
    )
    return "\n".join(text_lines) + "\n", html_body


def email_message(notification: Notification, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject_line(notification)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message["Message-ID"] = email.utils.make_msgid(domain="keyward")
    message["X-Keyward-Event-Id"] = str(notification.event_id)
    text, html_body = email_bodies(notification)
    message.set_content(text)
    message.add_alternative(html_body, subtype="html")
    return message


async def _send_email(channel: AlertChannel, notification: Notification) -> AttemptResult:
    settings = runtime.settings()
    if not settings.smtp_host:
        raise _ChannelFailure("SMTP is not configured: set KEYWARD_SMTP_HOST", retryable=True)
    recipients = [str(r) for r in (channel.config or {}).get("recipients", [])]
    if not recipients:
        raise _ChannelFailure("email channel has no recipients", retryable=False)
    message = email_message(notification, settings.smtp_from, recipients)
    try:
        errors, reply = await aiosmtplib.send(
            message,
            sender=settings.smtp_from,
            recipients=recipients,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            use_tls=settings.smtp_tls == "implicit",
            start_tls=settings.smtp_tls == "starttls",
            cert_bundle=settings.smtp_ca_file,
            timeout=TOTAL_TIMEOUT_SECONDS,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        return AttemptResult(
            ok=False,
            smtp_reply="; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients),
            error="every recipient was refused",
            retryable=any(400 <= c < 500 for c in codes),
        )
    except aiosmtplib.SMTPResponseException as exc:
        return AttemptResult(
            ok=False,
            smtp_reply=f"{exc.code} {exc.message}",
            error=f"the SMTP server refused the message: {exc.code} {_short(exc.message)}",
            retryable=not 500 <= exc.code < 600,
        )
    except (aiosmtplib.SMTPTimeoutError, TimeoutError):
        return AttemptResult(
            ok=False,
            error=f"the SMTP server did not answer within {TOTAL_TIMEOUT_SECONDS:g} s",
            retryable=True,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        return AttemptResult(
            ok=False,
            error=f"cannot deliver to {settings.smtp_host}:{settings.smtp_port}: "
            f"{type(exc).__name__}: {_short(str(exc))}",
            retryable=True,
        )
    refused = "; ".join(f"{rcpt}: {r.code} {r.message}" for rcpt, r in errors.items())
    return AttemptResult(
        ok=True,
        smtp_reply=f"250 {reply}" + (f" (refused: {refused})" if refused else ""),
        error=f"some recipients were refused: {refused}" if refused else None,
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _days_left(cert: dict[str, Any]) -> int | None:
    not_after = cert.get("notAfter")
    if not not_after:
        return None
    try:
        moment = datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (_utc(moment) - datetime.now(UTC)).days
