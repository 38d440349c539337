"""Alerts over GraphQL: CRUD, validation that saves nothing, roles, write-only secrets, sendTestAlert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channel_peers import http_receiver, settings_override, smtp_server
from conftest import Cast, GraphQL, GraphQLError, create_profile_rows

from models import Alert, AlertChannel, ApplicationProfile, AuditEvent, Delivery, DeliveryAttempt

SIGNING = "whsec-graphql-test-signing-secret"
SLACK_URL_PATH = "/services/T000/B000/SLACKSECRETPATH"
ROUTING_KEY = "ROUTINGKEYSECRET0123456789abcdef"

ALERT_FIELDS = """
  id applicationId name eventTypes thresholds dailyRepeat profileIds namePattern isActive
  channels { id type position config hasSecret }
"""
CREATE = f"mutation($input: CreateAlertInput!) {{ createAlert(input: $input) {{ {ALERT_FIELDS} }} }}"
UPDATE = (
    "mutation($id: ID!, $input: UpdateAlertInput!) "
    f"{{ updateAlert(id: $id, input: $input) {{ {ALERT_FIELDS} }} }}"
)
READ = f"query($id: ID!) {{ alert(id: $id) {{ {ALERT_FIELDS} }} }}"
LIST = "query($app: ID!) { alerts(applicationId: $app) { id name } }"
DELETE = "mutation($id: ID!) { deleteAlert(id: $id) }"
TEST = """
mutation($id: ID!) { sendTestAlert(id: $id) {
  ok deliveries { id channelId eventType status attemptCount lastError
                  attempts { attemptedAt succeeded httpStatus smtpReply error } } } }
"""
LOG = """
query($id: ID!) { alert(id: $id) { deliveries(first: 10) {
  id channelId eventId eventType status attemptCount
  attempts { attemptedAt succeeded httpStatus smtpReply error durationMs } } } }
"""
RETRY = "mutation($id: ID!) { retryDelivery(deliveryId: $id) { id status attemptCount } }"


@pytest.fixture
def loopback() -> Iterator[None]:
    with settings_override(allow_loopback_webhooks=True):
        yield


def alert_input(cast: Cast, **overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "applicationId": str(cast.application_id),
        "name": "expiry-watch",
        "eventTypes": ["EXPIRATION", "REVOCATION"],
        "thresholds": ["30d,7d", "1d"],
        "dailyRepeat": False,
        "namePattern": "*.example.com",
        "channels": [{"type": "EMAIL", "config": {"recipients": ["ops@acme.test"]}}],
    }
    value.update(overrides)
    return value


async def assert_nothing_saved() -> None:
    assert await Alert.all().count() == 0
    assert await AlertChannel.all().count() == 0


async def audit_text() -> str:
    rows = await AuditEvent.all().values_list("details", flat=True)
    return json.dumps(rows)


async def test_crud_and_write_only_secrets(gql: GraphQL, cast: Cast, loopback: None) -> None:
    admin = cast.token("app_admin")
    profile = await create_profile_rows(cast.organization_id)
    await ApplicationProfile.create(application_id=cast.application_id, profile=profile)
    with http_receiver() as hook:
        channels = [
            {"type": "EMAIL", "config": {"recipients": ["ops@acme.test", "sre@acme.test"]}},
            {"type": "WEBHOOK", "config": {"url": hook.url}, "secret": SIGNING},
            {"type": "SLACK", "config": {"channel": "#ops"}, "secret": hook.url + SLACK_URL_PATH},
            {
                "type": "PAGERDUTY",
                "config": {"eventsUrl": hook.url, "severity": "critical"},
                "secret": ROUTING_KEY,
            },
        ]
        created = (
            await gql(
                CREATE,
                {"input": alert_input(cast, channels=channels, profileIds=[str(profile.id)])},
                token=admin,
            )
        )["createAlert"]
    assert created["name"] == "expiry-watch"
    assert created["eventTypes"] == ["EXPIRATION", "REVOCATION"]
    assert created["thresholds"] == ["30d", "7d", "1d"]
    assert created["profileIds"] == [str(profile.id)]
    assert [c["type"] for c in created["channels"]] == ["EMAIL", "WEBHOOK", "SLACK", "PAGERDUTY"]
    assert [c["hasSecret"] for c in created["channels"]] == [False, True, True, True]
    assert created["channels"][0]["config"] == {"recipients": ["ops@acme.test", "sre@acme.test"]}
    assert created["channels"][3]["config"] == {"eventsUrl": hook.url, "severity": "critical"}

    for role in ("app_operator", "app_auditor", "product_admin"):
        read = (await gql(READ, {"id": created["id"]}, token=cast.token(role)))["alert"]
        assert read == created
        listed = (await gql(LIST, {"app": str(cast.application_id)}, token=cast.token(role)))["alerts"]
        assert listed == [{"id": created["id"], "name": "expiry-watch"}]
    everything = json.dumps(created)
    for secret in (SIGNING, SLACK_URL_PATH, ROUTING_KEY):
        assert secret not in everything
        assert secret not in await audit_text()
    stored = await AlertChannel.filter(alert_id=created["id"]).values_list("encrypted_secret", flat=True)
    assert all(SIGNING.encode() not in (blob or b"") for blob in stored)

    # Update: keep the webhook (by id, secret kept), drop the others, add a new email channel.
    webhook_id = created["channels"][1]["id"]
    updated = (
        await gql(
            UPDATE,
            {
                "id": created["id"],
                "input": {
                    "name": "renamed",
                    "thresholds": ["14d"],
                    "dailyRepeat": True,
                    "namePattern": None,
                    "channels": [
                        {"type": "EMAIL", "config": {"recipients": ["new@acme.test"]}},
                        {"id": webhook_id, "type": "WEBHOOK", "config": {"url": "http://127.0.0.1:9/other"}},
                    ],
                },
            },
            token=admin,
        )
    )["updateAlert"]
    assert updated["name"] == "renamed" and updated["thresholds"] == ["14d"] and updated["dailyRepeat"]
    assert updated["namePattern"] is None
    assert updated["eventTypes"] == ["EXPIRATION", "REVOCATION"]  # omitted: unchanged
    assert [c["type"] for c in updated["channels"]] == ["EMAIL", "WEBHOOK"]
    assert updated["channels"][1]["id"] == webhook_id and updated["channels"][1]["hasSecret"]
    assert updated["channels"][1]["config"] == {"url": "http://127.0.0.1:9/other"}
    assert await AlertChannel.filter(alert_id=created["id"]).count() == 2

    assert (await gql(DELETE, {"id": created["id"]}, token=admin))["deleteAlert"] == created["id"]
    await assert_nothing_saved()
    with pytest.raises(GraphQLError) as missing:
        await gql(READ, {"id": created["id"]}, token=admin)
    assert missing.value.codes == ["NOT_FOUND"]
    assert {"alert.create", "alert.update", "alert.delete"} <= set(
        await AuditEvent.filter(resource_type="alert").values_list("action", flat=True)
    )


BAD_INPUTS = [
    ({"thresholds": ["30x"]}, "30x"),
    ({"thresholds": ["30d,0d"]}, "0d"),
    ({"thresholds": []}, "thresholds"),
    ({"channels": [{"type": "EMAIL", "config": {"recipients": ["ops@acme.test"]}}] * 11}, "1 to 10 channels"),
    ({"channels": []}, "1 to 10 channels"),
    ({"channels": [{"type": "EMAIL", "config": {"recipients": ["not-an-address"]}}]}, "not-an-address"),
    ({"channels": [{"type": "EMAIL", "config": {}}]}, "recipients"),
    ({"channels": [{"type": "EMAIL", "config": {"recipients": ["a@acme.test"], "cc": "x"}}]}, "cc"),
    (
        {"channels": [{"type": "WEBHOOK", "config": {"url": "http://hooks.acme.test/x"}, "secret": SIGNING}]},
        "https",
    ),
    (
        {"channels": [{"type": "WEBHOOK", "config": {"url": "https://127.0.0.1/x"}, "secret": SIGNING}]},
        "loopback",
    ),
    (
        {"channels": [{"type": "WEBHOOK", "config": {"url": "https://10.1.2.3/x"}, "secret": SIGNING}]},
        "private",
    ),
    (
        {"channels": [{"type": "WEBHOOK", "config": {"url": "https://localhost/x"}, "secret": SIGNING}]},
        "loopback",
    ),
    (
        {"channels": [{"type": "WEBHOOK", "config": {"url": "ftp://hooks.acme.test"}, "secret": SIGNING}]},
        "https",
    ),
    ({"channels": [{"type": "WEBHOOK", "config": {"url": "https://hooks.acme.test/x"}}]}, "signing secret"),
    (
        {
            "channels": [
                {"type": "WEBHOOK", "config": {"url": "https://hooks.acme.test/x"}, "secret": "short"}
            ]
        },
        "16",
    ),
    ({"channels": [{"type": "SLACK", "config": {}}]}, "Slack incoming-webhook URL is required"),
    ({"channels": [{"type": "SLACK", "config": {}, "secret": "http://127.0.0.1/SECRETPATH"}]}, "Slack"),
    ({"channels": [{"type": "PAGERDUTY", "config": {}}]}, "routing key"),
    (
        {"channels": [{"type": "PAGERDUTY", "config": {"severity": "huge"}, "secret": ROUTING_KEY}]},
        "severity",
    ),
    ({"namePattern": "a***b"}, "name pattern"),
    ({"name": "  "}, "name"),
    ({"eventTypes": []}, "event type"),
    ({"profileIds": ["00000000-0000-0000-0000-000000000001"]}, "not attached"),
]


@pytest.mark.parametrize(("overrides", "named"), BAD_INPUTS)
async def test_bad_input_saves_nothing(
    gql: GraphQL, cast: Cast, overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(GraphQLError) as error:
        await gql(CREATE, {"input": alert_input(cast, **overrides)}, token=cast.token("app_admin"))
    assert error.value.codes == ["INVALID_INPUT"], error.value.errors
    message = error.value.errors[0]["message"]
    assert named in message
    assert "SECRETPATH" not in message and ROUTING_KEY not in message
    await assert_nothing_saved()
    assert "SECRETPATH" not in await audit_text()


async def test_unknown_channel_type_is_refused_by_the_schema(gql: GraphQL, cast: Cast) -> None:
    body = await gql.raw(
        CREATE,
        {"input": alert_input(cast, channels=[{"type": "SMS", "config": {}}])},
        token=cast.token("app_admin"),
    )
    assert body["errors"] and "SMS" in body["errors"][0]["message"]
    assert "AlertChannelType" in body["errors"][0]["message"]
    await assert_nothing_saved()


async def test_duplicate_name_is_a_conflict(gql: GraphQL, cast: Cast) -> None:
    await gql(CREATE, {"input": alert_input(cast)}, token=cast.token("app_admin"))
    with pytest.raises(GraphQLError) as error:
        await gql(CREATE, {"input": alert_input(cast)}, token=cast.token("app_admin"))
    assert error.value.codes == ["CONFLICT"]
    assert await Alert.all().count() == 1


async def test_update_with_bad_input_changes_nothing(gql: GraphQL, cast: Cast) -> None:
    created = (await gql(CREATE, {"input": alert_input(cast)}, token=cast.token("app_admin")))["createAlert"]
    for bad in ({"thresholds": ["7x"]}, {"name": "other", "channels": []}, {"eventTypes": []}):
        with pytest.raises(GraphQLError) as error:
            await gql(UPDATE, {"id": created["id"], "input": bad}, token=cast.token("app_admin"))
        assert error.value.codes == ["INVALID_INPUT"]
    assert (await gql(READ, {"id": created["id"]}, token=cast.token("app_admin")))["alert"] == created


@pytest.mark.parametrize(
    ("role", "code"),
    [
        ("app_operator", "FORBIDDEN"),
        ("app_auditor", "FORBIDDEN"),
        ("outsider", "NOT_FOUND"),
        ("foreign", "NOT_FOUND"),
        ("anonymous", "UNAUTHENTICATED"),
    ],
)
async def test_only_admins_manage_alerts(gql: GraphQL, cast: Cast, role: str, code: str) -> None:
    with pytest.raises(GraphQLError) as error:
        await gql(CREATE, {"input": alert_input(cast)}, token=cast.token(role))
    assert error.value.codes == [code]
    await assert_nothing_saved()
    created = (await gql(CREATE, {"input": alert_input(cast)}, token=cast.token("app_admin")))["createAlert"]
    for document, variables in (
        (UPDATE, {"id": created["id"], "input": {"name": "x"}}),
        (DELETE, {"id": created["id"]}),
        (TEST, {"id": created["id"]}),
    ):
        with pytest.raises(GraphQLError) as error:
            await gql(document, variables, token=cast.token(role))
        assert error.value.codes == [code]
    if role in ("outsider", "foreign", "anonymous"):
        with pytest.raises(GraphQLError) as error:
            await gql(READ, {"id": created["id"]}, token=cast.token(role))
        assert error.value.codes == [code]
    else:
        assert (await gql(READ, {"id": created["id"]}, token=cast.token(role)))["alert"][
            "name"
        ] == "expiry-watch"
    assert await Alert.filter(name="expiry-watch").count() == 1


async def test_product_admin_manages_alerts(gql: GraphQL, cast: Cast) -> None:
    created = (await gql(CREATE, {"input": alert_input(cast)}, token=cast.token("product_admin")))[
        "createAlert"
    ]
    assert (await gql(DELETE, {"id": created["id"]}, token=cast.token("product_admin")))["deleteAlert"]


async def test_send_test_alert_end_to_end(gql: GraphQL, cast: Cast, loopback: None) -> None:
    admin = cast.token("app_admin")
    with (
        smtp_server("none") as mail,
        http_receiver(status=200) as good,
        http_receiver(status=500, body=b"receiver exploded") as bad,
        settings_override(
            smtp_host="127.0.0.1", smtp_port=mail.port, smtp_tls="none", smtp_from="kw@acme.test"
        ),
    ):
        channels = [
            {"type": "EMAIL", "config": {"recipients": ["ops@acme.test"]}},
            {"type": "WEBHOOK", "config": {"url": good.url}, "secret": SIGNING},
            {"type": "WEBHOOK", "config": {"url": bad.url}, "secret": SIGNING},
        ]
        created = (await gql(CREATE, {"input": alert_input(cast, channels=channels)}, token=admin))[
            "createAlert"
        ]
        result = (await gql(TEST, {"id": created["id"]}, token=admin))["sendTestAlert"]
        assert len(mail.mails) == 1 and len(good.requests) == 1 and len(bad.requests) == 1
    assert result["ok"] is False
    email, hook, failing = result["deliveries"]
    assert [d["channelId"] for d in result["deliveries"]] == [c["id"] for c in created["channels"]]
    assert email["status"] == "SUCCEEDED" and email["attempts"][0]["smtpReply"].startswith("250")
    assert hook["status"] == "SUCCEEDED" and hook["attempts"][0]["httpStatus"] == 200
    assert failing["status"] == "DEAD" and failing["attempts"][0]["httpStatus"] == 500
    assert "receiver exploded" in failing["lastError"]
    assert all(d["eventType"] == "test" and d["attemptCount"] == 1 for d in result["deliveries"])
    assert mail.mails[0].message["Subject"] == "[Keyward] Test of alert expiry-watch for payments-api"
    assert "sample.example.com" in mail.mails[0].part("plain")
    event = good.requests[0].json()
    assert event["type"] == "com.keyward.alert.test" and event["data"]["alertName"] == "expiry-watch"

    # The delivery log, readable by an Auditor; one event id across the test's channels.
    log = (await gql(LOG, {"id": created["id"]}, token=cast.token("app_auditor")))["alert"]["deliveries"]
    assert len(log) == 3 and len({d["eventId"] for d in log}) == 1
    assert sorted(a["succeeded"] for d in log for a in d["attempts"]) == [False, True, True]
    assert await DeliveryAttempt.all().count() == 3
    assert SIGNING not in await audit_text()

    retried = (await gql(RETRY, {"id": failing["id"]}, token=admin))["retryDelivery"]
    assert retried["status"] == "PENDING"
    with pytest.raises(GraphQLError) as error:
        await gql(RETRY, {"id": hook["id"]}, token=cast.token("app_operator"))
    assert error.value.codes == ["FORBIDDEN"]
    assert await Delivery.filter(status="pending").count() == 1
