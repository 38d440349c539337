"""HTTP push to a local receiver that verifies X-Keyward-Signature, and AWS Certificate Manager / Secrets
Manager against moto in server mode on loopback: import, re-import on renewal keeping the ARN, delete on
revoke; a receiver that fails is retried with backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import OrgAdmin
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sync_support import free_port, make_scene, settle, sweep, sync_roots, target

from core import sync as service
from models.sync import SyncTargetStatus
from pki.certificate import load_certificate

__all__ = ["sync_roots"]

SECRET = "http-push-signing-secret-0123456789"


class Receiver:
    """Accepts POSTs whose signature verifies; answers 503 while `failing` is set."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.failing = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                header = self.headers.get("X-Keyward-Signature", "")
                parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
                expected = hmac.new(
                    SECRET.encode(), f"{parts.get('t', '')}.".encode() + body, hashlib.sha256
                ).hexdigest()
                if not hmac.compare_digest(expected, parts.get("v1", "")):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.failing:
                    self.send_response(503)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keyward/sync"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


async def test_http_push_signed_retried_and_removed(
    org_admin: OrgAdmin, receiver: Receiver, sync_roots: Path
) -> None:
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("hook.example.com")
    receiver.failing = True
    sync = await service.create_sync(
        actor=scene.actor,
        application_id=scene.application.id,
        name="hook",
        destination="http",
        connection={"url": receiver.url},
        credentials={"signingSecret": SECRET},
    )
    await sweep()
    state = await target(sync.id, certificate.id)
    assert state.status == SyncTargetStatus.FAILED and "HTTP 503" in (state.message or "")
    assert state.next_attempt_at is not None
    receiver.failing = False
    await sweep(state.next_attempt_at + timedelta(seconds=1))
    assert (await target(sync.id, certificate.id)).status == SyncTargetStatus.SUCCEEDED
    assert receiver.bad_signatures == 0 and len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["event"] == "sync.push" and body["certificateId"] == str(certificate.id)
    assert load_certificate(body["certificate"]) == load_certificate(certificate.certificate_pem)
    assert "PRIVATE KEY" in body["privateKey"] and len(body["chain"]) == 1
    await scene.revoke(certificate)
    await settle()
    assert receiver.bodies[-1] == {
        "event": "sync.remove",
        "syncId": str(sync.id),
        "syncName": "hook",
        "applicationName": scene.application.name,
        "certificateId": str(certificate.id),
    }


async def test_http_push_without_key(org_admin: OrgAdmin, receiver: Receiver, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    await scene.issue("nokey.example.com")
    await service.create_sync(
        actor=scene.actor,
        application_id=scene.application.id,
        name="hook",
        destination="http",
        connection={"url": receiver.url},
        credentials={"signingSecret": SECRET},
        include_private_key=False,
    )
    await sweep()
    assert len(receiver.bodies) == 1 and "privateKey" not in receiver.bodies[0]


# ---------------------------------------------------------------- AWS through moto


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


AWS_CREDENTIALS = {"accessKeyId": "testing", "secretAccessKey": "testing-secret"}


def _client(service_name: str, endpoint: str) -> Any:
    return boto3.session.Session().client(
        service_name,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
    )


async def _aws_sync(scene: Any, kind: str, endpoint: str, **options: Any) -> Any:
    return await service.create_sync(
        actor=scene.actor,
        application_id=scene.application.id,
        name=kind,
        destination=kind,
        connection={"region": "us-east-1", "endpointUrl": endpoint},
        credentials=AWS_CREDENTIALS,
        name_template="keyward-{{commonName}}-{{certificateId}}",
        **options,
    )


async def test_acm_import_reimport_keeps_arn_and_delete(
    org_admin: OrgAdmin, moto_endpoint: str, sync_roots: Path
) -> None:
    scene = await make_scene(org_admin.organization_id)
    first = await scene.issue("acm.example.com")
    sync = await _aws_sync(scene, "aws_acm", moto_endpoint)
    await sweep()
    state = await target(sync.id, first.id)
    assert state.status == SyncTargetStatus.SUCCEEDED, state.message
    arn = state.remote_reference
    assert arn is not None and arn.startswith("arn:aws:acm:us-east-1:")
    acm = _client("acm", moto_endpoint)
    stored = acm.get_certificate(CertificateArn=arn)
    assert load_certificate(stored["Certificate"]) == load_certificate(first.certificate_pem)

    successor = await scene.renew(first)
    await settle()
    renewed = await target(sync.id, successor.id)
    assert renewed.status == SyncTargetStatus.SUCCEEDED and renewed.remote_reference == arn  # same ARN
    stored = acm.get_certificate(CertificateArn=arn)
    assert load_certificate(stored["Certificate"]) == load_certificate(successor.certificate_pem)
    old = await target(sync.id, first.id)
    assert old.status == SyncTargetStatus.REMOVED and old.remote_reference is None

    await scene.revoke(successor)
    await settle()
    assert (await target(sync.id, successor.id)).status == SyncTargetStatus.REMOVED
    with pytest.raises(ClientError) as error:
        acm.get_certificate(CertificateArn=arn)
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_acm_needs_a_server_held_key(org_admin: OrgAdmin, moto_endpoint: str, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    certificate = await scene.issue("nokey-acm.example.com")
    sync = await _aws_sync(scene, "aws_acm", moto_endpoint, include_private_key=False)
    await sweep()
    state = await target(sync.id, certificate.id)
    assert state.status == SyncTargetStatus.FAILED and state.next_attempt_at is None  # not retried
    assert "private key" in (state.message or "")


async def test_secrets_manager_create_put_delete(
    org_admin: OrgAdmin, moto_endpoint: str, sync_roots: Path
) -> None:
    scene = await make_scene(org_admin.organization_id)
    first = await scene.issue("secret.example.com")
    sync = await _aws_sync(scene, "aws_secrets", moto_endpoint)
    await sweep()
    state = await target(sync.id, first.id)
    assert state.status == SyncTargetStatus.SUCCEEDED, state.message
    secrets = _client("secretsmanager", moto_endpoint)
    name = f"keyward-secret.example.com-{first.id}"
    value = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
    assert load_certificate(value["certificate"]) == load_certificate(first.certificate_pem)
    assert load_pem_private_key(value["privateKey"].encode(), None) is not None
    # Run again by hand: the value is put again (same secret).
    await service.run_sync(actor=scene.actor, sync_id=sync.id)
    await sweep()
    assert (await target(sync.id, first.id)).remote_reference == state.remote_reference

    successor = await scene.renew(first)
    await settle()
    assert json.loads(
        secrets.get_secret_value(SecretId=f"keyward-secret.example.com-{successor.id}")["SecretString"]
    )["certificateId"] == str(successor.id)
    with pytest.raises(ClientError):
        secrets.get_secret_value(SecretId=name)  # the predecessor's secret was deleted
    await scene.revoke(successor)
    await settle()
    with pytest.raises(ClientError):
        secrets.get_secret_value(SecretId=f"keyward-secret.example.com-{successor.id}")
