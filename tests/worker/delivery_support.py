"""Helpers for the delivery tests: a loopback webhook receiver that checks signatures, and a small world
(organization, PKI, application, alerts) to fan events out to."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from factories import Pki, make_application, make_pki

from core import runtime
from core.alert import ChannelSpec, create_alert
from core.authz import Actor
from core.issuance import issue_certificate
from models import Alert, Application, Certificate, Organization

SECRET = "s3cret-signing-key-for-tests-0123456789"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that records every POST and answers `status` after `delay` seconds."""

    secret: str = SECRET
    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    arrived: int = 0  # requests read, including those still waiting for their answer
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        parts = dict(p.split("=", 1) for p in headers.get("x-keyward-signature", "").split(",") if "=" in p)
        if "t" not in parts or "v1" not in parts:
            return False
        expected = hmac.new(
            self.secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(expected, parts["v1"])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            if not request_line.startswith(b"POST "):
                return  # a client that died before sending its request (the worker was killed)
            headers: dict[str, str] = {}
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
            if not body:
                return
            self.arrived += 1
            status = self.status
            if self.delay:
                await asyncio.sleep(self.delay)
            path = request_line.decode("latin-1").split(" ")[1]
            self.received.append(Received(path, headers, body, self.verify(headers, body)))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n"
                "Connection: close\r\n\r\nok".encode()
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def event_ids(self) -> list[str]:
        return [r.event["id"] for r in self.received]


@dataclass
class World:
    org: Organization
    actor: Actor
    pki: Pki
    other_pki: Pki
    application: Application

    async def issue(self, name: str, *, other_profile: bool = False) -> Certificate:
        profile = self.other_pki.profile if other_profile else self.pki.profile
        return await issue_certificate(
            actor=self.actor,
            application_id=self.application.id,
            profile_id=profile.id,
            subject=[("CN", name)],
            sans=[name],
        )

    async def alert(
        self,
        name: str,
        event_types: list[str],
        *,
        urls: list[str],
        thresholds: str = "",
        daily_repeat: bool = False,
        profile_ids: list[uuid.UUID] | None = None,
        name_pattern: str | None = None,
        is_active: bool = True,
        application_id: uuid.UUID | None = None,
    ) -> Alert:
        return await create_alert(
            actor=self.actor,
            application_id=application_id or self.application.id,
            name=name,
            event_types=event_types,
            channels=[ChannelSpec(type="webhook", config={"url": url}, secret=SECRET) for url in urls],
            thresholds=thresholds,
            daily_repeat=daily_repeat,
            profile_ids=profile_ids or [],
            name_pattern=name_pattern,
            is_active=is_active,
        )


async def make_world(organization_id: uuid.UUID) -> World:
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org, default_validity="90d")
    other_pki = await make_pki(org, default_validity="90d")
    application = await make_application(org, profiles=[pki.profile, other_pki.profile])
    return World(org, Actor.system(org.id, "test"), pki, other_pki, application)


async def set_not_after(certificate: Certificate, not_after: datetime) -> None:
    await Certificate.filter(id=certificate.id).update(not_after=not_after)


@contextlib.contextmanager
def loopback_webhooks() -> Iterator[None]:
    """KEYWARD_ALLOW_LOOPBACK_WEBHOOKS for the duration: the receiver lives on 127.0.0.1 over plain http."""
    before = runtime.settings()
    kek = runtime.kek()
    runtime.configure(dataclasses.replace(before, allow_loopback_webhooks=True), kek=kek)
    try:
        yield
    finally:
        runtime.configure(before, kek=kek)
