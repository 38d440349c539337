"""Channel senders against real peers on loopback: SMTP (aiosmtpd, plain/STARTTLS/implicit TLS), a webhook
receiver checking the signature and CloudEvents fields, Slack and PagerDuty shapes, and failing receivers."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Any

import pytest
from channel_peers import (
    http_receiver,
    sample_notification,
    settings_override,
    smtp_server,
    throwaway_tls,
)

from core import channel
from core.channel import AttemptResult, Notification, send
from models import AlertChannel
from models.enums import ChannelType

SECRET = "whsec-0123456789abcdef-signing"


@pytest.fixture(autouse=True)
def _runtime(database_url: str) -> None:
    """The session fixture configures settings and the KEK; the senders need no table."""


def make_channel(kind: ChannelType, config: dict[str, Any], secret: str | None = None) -> AlertChannel:
    channel_id = uuid.uuid4()
    return AlertChannel(
        id=channel_id,
        alert_id=uuid.uuid4(),
        type=kind,
        config=config,
        encrypted_secret=channel.seal_secret(channel_id, secret) if secret else None,
    )


def test_notification_payload_round_trip() -> None:
    notification = sample_notification()
    payload = notification.to_payload()
    import json

    assert Notification.from_payload(json.loads(json.dumps(payload))) == notification


# ---------------------------------------------------------------- email


@pytest.mark.parametrize("mode", ["none", "starttls", "implicit"])
async def test_email_reaches_a_real_smtp_server(mode: str, tmp_path: Path) -> None:
    tls = throwaway_tls(tmp_path) if mode != "none" else None
    notification = sample_notification()
    with smtp_server(mode, tls) as server:
        settings = {
            "smtp_host": "127.0.0.1",
            "smtp_port": server.port,
            "smtp_tls": mode,
            "smtp_from": "keyward@acme.test",
            "smtp_ca_file": str(tls.ca_file) if tls else None,
        }
        with settings_override(**settings):
            result = await send(
                make_channel(ChannelType.EMAIL, {"recipients": ["ops@acme.test", "sre@acme.test"]}),
                notification,
            )
    assert result.ok, result
    assert result.smtp_reply is not None and result.smtp_reply.startswith("250")
    assert "accepted" in result.smtp_reply
    assert len(server.mails) == 1
    mail = server.mails[0]
    assert server.collected.tls_seen == [mode != "none"]
    assert mail.sender == "keyward@acme.test"
    assert sorted(mail.recipients) == ["ops@acme.test", "sre@acme.test"]
    assert mail.message["Subject"] == "[Keyward] 3 certificates of payments-api expire within 7 days"
    text, html = mail.part("plain"), mail.part("html")
    for cert in notification.certificates:
        for value in (
            cert["commonName"],
            cert["serialNumber"],
            cert["notAfter"],
            "www." + cert["commonName"],
        ):
            assert value in text and value in html
    for part in (text, html):
        assert "tls-server" in part and "payments-api" in part and "active" in part
        assert "7-day expiration threshold" in part
        assert "Days left" in part and ": 6" in text or "<td>6</td>" in html
    assert "<table" in html and "<table" not in text


async def test_starttls_with_an_untrusted_certificate_fails_retryably(tmp_path: Path) -> None:
    tls = throwaway_tls(tmp_path)
    with (
        smtp_server("starttls", tls) as server,
        settings_override(
            smtp_host="127.0.0.1", smtp_port=server.port, smtp_tls="starttls", smtp_ca_file=None
        ),
    ):
        result = await send(
            make_channel(ChannelType.EMAIL, {"recipients": ["ops@acme.test"]}), sample_notification()
        )
    assert not result.ok and result.retryable
    assert result.error and "cannot deliver" in result.error
    assert server.mails == []


async def test_email_without_smtp_configuration_is_a_clear_retryable_failure() -> None:
    with settings_override(smtp_host=None):
        result = await send(
            make_channel(ChannelType.EMAIL, {"recipients": ["ops@acme.test"]}), sample_notification()
        )
    assert result == AttemptResult(
        ok=False, error="SMTP is not configured: set KEYWARD_SMTP_HOST", retryable=True
    )


async def test_smtp_server_refusing_the_recipient_is_not_retryable() -> None:
    class Refuse:
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, options: Any
        ) -> str:  # noqa: N802
            return "550 5.1.1 no such user"

    from aiosmtpd.controller import Controller
    from channel_peers import free_port

    port = free_port()
    controller = Controller(Refuse(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with settings_override(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none"):
            result = await send(
                make_channel(ChannelType.EMAIL, {"recipients": ["ghost@acme.test"]}), sample_notification()
            )
    finally:
        controller.stop()
    assert not result.ok and not result.retryable
    assert result.smtp_reply and "550" in result.smtp_reply


async def test_smtp_server_that_is_down_fails_retryably() -> None:
    from channel_peers import free_port

    with settings_override(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_tls="none"):
        result = await send(
            make_channel(ChannelType.EMAIL, {"recipients": ["ops@acme.test"]}), sample_notification()
        )
    assert not result.ok and result.retryable and result.error


# ---------------------------------------------------------------- webhook


def verify_signature(header: str, body: bytes, secret: str) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected)


async def test_webhook_is_a_signed_cloudevent() -> None:
    notification = sample_notification()
    with http_receiver(status=204, body=b"") as receiver:
        result = await send(make_channel(ChannelType.WEBHOOK, {"url": receiver.url}, SECRET), notification)
    assert result == AttemptResult(ok=True, http_status=204)
    (request,) = receiver.requests
    assert request.path == "/hook"
    assert request.headers["content-type"].startswith("application/cloudevents+json")
    signature = request.headers["x-keyward-signature"]
    assert signature.startswith("t=") and ",v1=" in signature
    assert verify_signature(signature, request.body, SECRET)
    assert not verify_signature(signature, request.body + b" ", SECRET)
    assert not verify_signature(signature, request.body, "another-secret-entirely")
    event = request.json()
    assert event["specversion"] == "1.0"
    assert event["id"] == str(notification.event_id)
    assert event["type"] == "com.keyward.certificate.expiring"
    assert event["source"].endswith("/applications/payments-api")
    assert event["source"].startswith("http")
    assert event["datacontenttype"] == "application/json"
    assert event["time"].endswith("Z")
    assert Notification.from_payload(event["data"]) == notification
    assert SECRET not in request.body.decode()


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (408, True), (429, True), (400, False), (404, False)]
)
async def test_webhook_error_answers(status: int, retryable: bool) -> None:
    with http_receiver(status=status, body=b"nope") as receiver:
        result = await send(
            make_channel(ChannelType.WEBHOOK, {"url": receiver.url}, SECRET), sample_notification()
        )
    assert not result.ok
    assert result.http_status == status
    assert result.retryable is retryable
    assert result.error and f"HTTP {status}" in result.error and "nope" in result.error


async def test_hanging_receiver_times_out_retryably(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "TOTAL_TIMEOUT_SECONDS", 0.5)
    with http_receiver(mode="hang") as receiver:
        result = await send(
            make_channel(ChannelType.WEBHOOK, {"url": receiver.url}, SECRET), sample_notification()
        )
        assert len(receiver.requests) == 1
    assert not result.ok and result.retryable and result.http_status is None
    assert result.error and "did not answer within 0.5 s" in result.error


async def test_receiver_closing_the_connection_fails_retryably() -> None:
    with http_receiver(mode="close") as receiver:
        result = await send(
            make_channel(ChannelType.WEBHOOK, {"url": receiver.url}, SECRET), sample_notification()
        )
    assert not result.ok and result.retryable
    assert result.error and result.error.startswith("cannot reach")


async def test_receiver_that_is_down_fails_retryably() -> None:
    from channel_peers import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"
    result = await send(make_channel(ChannelType.WEBHOOK, {"url": url}, SECRET), sample_notification())
    assert not result.ok and result.retryable and "ConnectError" in (result.error or "")


async def test_webhook_without_a_secret_is_not_sent() -> None:
    with http_receiver() as receiver:
        result = await send(make_channel(ChannelType.WEBHOOK, {"url": receiver.url}), sample_notification())
    assert not result.ok and not result.retryable and receiver.requests == []


async def test_secret_sealed_for_another_channel_does_not_open() -> None:
    with http_receiver() as receiver:
        moved = make_channel(ChannelType.WEBHOOK, {"url": receiver.url})
        moved.encrypted_secret = channel.seal_secret(uuid.uuid4(), SECRET)
        result = await send(moved, sample_notification())
    assert not result.ok and not result.retryable and "cannot be decrypted" in (result.error or "")
    assert receiver.requests == []


# ---------------------------------------------------------------- Slack and PagerDuty


async def test_slack_incoming_webhook_shape() -> None:
    notification = sample_notification("certificate.revoked", count=1)
    with http_receiver(status=200, body=b"ok") as receiver:
        url = receiver.url + "/T000/B000/XXXXSECRET"
        result = await send(make_channel(ChannelType.SLACK, {"channel": "#ops"}, url), notification)
    assert result.ok and result.http_status == 200
    body = receiver.requests[0].json()
    assert set(body) == {"text", "blocks"}
    assert body["text"] == "certificate api0.example.com of payments-api was revoked"
    assert body["blocks"][0]["type"] == "header"
    assert body["blocks"][0]["text"]["type"] == "plain_text"
    section = body["blocks"][1]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "api0.example.com" in section["text"]["text"]
    assert all(block["type"] in {"header", "section", "context"} for block in body["blocks"])


async def test_slack_error_never_shows_the_secret_url() -> None:
    with http_receiver(status=404, body=b"no_service") as receiver:
        url = receiver.url + "/T000/B000/XXXXSECRET"
        result = await send(make_channel(ChannelType.SLACK, {}, url), sample_notification())
    assert not result.ok and not result.retryable
    assert "XXXXSECRET" not in (result.error or "") and "127.0.0.1" not in (result.error or "")
    assert "no_service" in (result.error or "")


async def test_pagerduty_events_v2_shape() -> None:
    notification = sample_notification(count=2)
    routing_key = "R0UT1NGKEY0123456789abcdefABCDEF"
    with http_receiver(status=202, body=b'{"status":"success","message":"Event processed"}') as receiver:
        result = await send(
            make_channel(ChannelType.PAGERDUTY, {"eventsUrl": receiver.url}, routing_key), notification
        )
    assert result.ok and result.http_status == 202
    body = receiver.requests[0].json()
    assert body["routing_key"] == routing_key
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == str(notification.event_id)
    payload = body["payload"]
    assert {"summary", "source", "severity", "timestamp", "custom_details"} <= set(payload)
    assert payload["severity"] in {"critical", "error", "warning", "info"}
    assert payload["severity"] == "error"  # 6 days left
    assert payload["summary"] == "2 certificates of payments-api expire within 7 days"
    assert len(payload["summary"]) <= 1024
    assert payload["source"] == "keyward/payments-api"
    assert payload["custom_details"]["certificates"] == notification.certificates


async def test_pagerduty_default_url_is_the_public_events_api() -> None:
    assert channel.DEFAULT_PAGERDUTY_EVENTS_URL == "https://events.pagerduty.com/v2/enqueue"


async def test_every_event_type_has_a_subject() -> None:
    for event_type in ("certificate.issued", "certificate.renewed", "certificate.revoked", "test"):
        subject = channel.subject_line(sample_notification(event_type, count=1))
        assert subject.startswith("[Keyward] ") and event_type not in subject
    assert channel.subject_line(sample_notification("certificate.issued", count=2)).endswith("were issued")


# ---------------------------------------------------------------- settings


def test_smtp_settings_are_validated(tmp_path: Path) -> None:
    from core.config import load_settings
    from core.errors import ConfigurationError

    password_file = tmp_path / "smtp-password"
    password_file.write_text("hunter2-from-file\n")
    settings = load_settings(
        {
            "KEYWARD_SMTP_HOST": "mail.acme.test",
            "KEYWARD_SMTP_TLS": "implicit",
            "KEYWARD_SMTP_USERNAME": "keyward",
            "KEYWARD_SMTP_PASSWORD_FILE": str(password_file),
            "KEYWARD_ALLOW_LOOPBACK_WEBHOOKS": "true",
        }
    )
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls) == ("mail.acme.test", 465, "implicit")
    assert settings.smtp_password == "hunter2-from-file" and "hunter2" not in repr(settings)
    assert settings.allow_loopback_webhooks
    assert not load_settings({}).allow_loopback_webhooks
    for bad, named in (
        ({"KEYWARD_SMTP_TLS": "ssl"}, "KEYWARD_SMTP_TLS"),
        ({"KEYWARD_SMTP_PORT": "99999"}, "KEYWARD_SMTP_PORT"),
        ({"KEYWARD_SMTP_PASSWORD": "x", "KEYWARD_SMTP_PASSWORD_FILE": "/x"}, "not both"),
        ({"KEYWARD_SMTP_PASSWORD_FILE": str(tmp_path / "missing")}, "KEYWARD_SMTP_PASSWORD_FILE"),
        ({"KEYWARD_ALLOW_LOOPBACK_WEBHOOKS": "maybe"}, "KEYWARD_ALLOW_LOOPBACK_WEBHOOKS"),
    ):
        with pytest.raises(ConfigurationError, match=named):
            load_settings(bad)


async def test_unknown_channel_type_never_raises() -> None:
    broken = make_channel(ChannelType.WEBHOOK, {})
    broken.type = "carrier-pigeon"  # type: ignore[assignment]
    result = await send(broken, sample_notification())
    assert not result.ok and not result.retryable and "carrier-pigeon" in (result.error or "")
