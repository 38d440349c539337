"""The authorization matrix (SPEC §2) for alerts: application Admins (and Product Admins) manage them and
retry deliveries; Operators and Auditors read them and their delivery log; nobody reads a channel secret.

ALERT_OPERATIONS is meant to join ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage
check counts these mutations; the cells run here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from authz_matrix_support import APP_ADMIN, APP_READ, Operation, check_rows, run_cell
from conftest import CAST_ROLES, Cast, GraphQL

from core import channel
from models import Alert, AlertChannel, Delivery
from models.enums import ChannelType, DeliveryStatus


async def _alert(cast: Cast) -> Alert:
    alert = await Alert.create(
        id=uuid.uuid4(),
        application_id=cast.application_id,
        name=f"alert-{uuid.uuid4().hex[:6]}",
        event_types=["revocation"],
    )
    channel_id = uuid.uuid4()
    await AlertChannel.create(
        id=channel_id,
        alert_id=alert.id,
        type=ChannelType.WEBHOOK,
        config={"url": "https://127.0.0.1:9/keyward"},  # refused at once: no network
        encrypted_secret=channel.seal_secret(channel_id, "matrix-signing-secret-0123"),
    )
    # Email without SMTP configured: a test send fails at once, without touching the network.
    await AlertChannel.create(
        id=uuid.uuid4(), alert_id=alert.id, type=ChannelType.EMAIL, config={"recipients": ["ops@acme.test"]}
    )
    return alert


async def an_application(cast: Cast, role: str) -> dict[str, Any]:
    return {"app": str(cast.application_id)}


async def an_alert(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str((await _alert(cast)).id)}


async def a_dead_delivery(cast: Cast, role: str) -> dict[str, Any]:
    alert = await _alert(cast)
    first = await AlertChannel.filter(alert_id=alert.id).first()
    assert first is not None
    delivery = await Delivery.create(
        id=uuid.uuid4(),
        alert_id=alert.id,
        channel_id=first.id,
        event_id=uuid.uuid4(),
        event_type="certificate.revoked",
        status=DeliveryStatus.DEAD,
        attempts=8,
        next_attempt_at=datetime.now(UTC),
        last_error="receiver answered HTTP 500",
    )
    return {"id": str(delivery.id)}


async def a_new_alert(cast: Cast, role: str) -> dict[str, Any]:
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "name": f"new-{role}",
            "eventTypes": ["ISSUANCE"],
            "channels": [{"type": "EMAIL", "config": {"recipients": ["ops@acme.test"]}}],
        }
    }


ALERT_OPERATIONS = [
    Operation(
        "alerts",
        "query($app: ID!) { alerts(applicationId: $app) { id name channels { id type config hasSecret } } }",
        APP_READ,
        an_application,
    ),
    Operation(
        "alert",
        "query($id: ID!) { alert(id: $id) { id channels { hasSecret } deliveries(first: 5) "
        "{ id status attempts { succeeded httpStatus smtpReply error } } } }",
        APP_READ,
        an_alert,
    ),
    Operation(
        "createAlert",
        "mutation($input: CreateAlertInput!) { createAlert(input: $input) { id } }",
        APP_ADMIN,
        a_new_alert,
    ),
    Operation(
        "updateAlert",
        'mutation($id: ID!) { updateAlert(id: $id, input: {name: "renamed"}) { id name } }',
        APP_ADMIN,
        an_alert,
    ),
    Operation("deleteAlert", "mutation($id: ID!) { deleteAlert(id: $id) }", APP_ADMIN, an_alert),
    Operation(
        "sendTestAlert",
        "mutation($id: ID!) { sendTestAlert(id: $id) { ok deliveries { id status lastError } } }",
        APP_ADMIN,
        an_alert,
    ),
    Operation(
        "retryDelivery",
        "mutation($id: ID!) { retryDelivery(deliveryId: $id) { id status } }",
        APP_ADMIN,
        a_dead_delivery,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in ALERT_OPERATIONS for role in CAST_ROLES]


def test_alert_rows_name_every_role() -> None:
    check_rows(ALERT_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_alert_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
