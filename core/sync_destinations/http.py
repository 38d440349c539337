"""HTTP push: the material POSTed as JSON, signed like webhooks (X-Keyward-Signature, SPEC §9)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import httpx

from core.alert import validate_url
from core.channel import signature_header
from core.errors import InvalidInput
from core.sync_destinations import Material, SyncFailure, Target
from core.sync_destinations.common import CONNECT_TIMEOUT_SECONDS, TOTAL_TIMEOUT_SECONDS, only_keys
from models.sync import SyncFormat

_CREDENTIALS = {"signingSecret", "keystorePassword"}
MIN_SECRET_LENGTH = 16
USER_AGENT = "Keyward-Sync/1"


def push_body(target: Target, material: Material) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "sync.push",
        "syncId": str(target.sync_id),
        "syncName": target.sync_name,
        "applicationName": target.application_name,
        "certificateId": str(material.certificate_id),
        "name": material.name,
        "commonName": material.common_name,
        "serialNumber": material.serial,
        "notAfter": material.not_after.isoformat(),
        "format": material.format.value.upper(),
        "certificate": material.certificate_pem,
        "chain": material.chain_pems,
    }
    if material.private_key_pem is not None:
        body["privateKey"] = material.private_key_pem
    if material.format != SyncFormat.PEM and material.bundle is not None:
        body["bundleBase64"] = base64.b64encode(material.bundle).decode()
    return body


class HttpPush:
    reuses_reference = False

    def check(self, connection: dict[str, Any], credentials: dict[str, str]) -> dict[str, Any]:
        only_keys(connection, {"url"}, "HTTP push")
        unknown = sorted(set(credentials) - _CREDENTIALS)
        if unknown:
            raise InvalidInput(f"unknown HTTP push credential(s) {', '.join(unknown)}", field="credentials")
        secret = credentials.get("signingSecret") or ""
        if len(secret) < MIN_SECRET_LENGTH:
            raise InvalidInput(
                f"credentials.signingSecret (at least {MIN_SECRET_LENGTH} characters) is required: "
                "receivers verify X-Keyward-Signature with it",
                field="credentials.signingSecret",
            )
        return {"url": validate_url(connection.get("url"), "connection.url", "the receiver URL")}

    async def _post(self, target: Target, body: dict[str, Any]) -> None:
        url = str(target.connection["url"])
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Keyward-Signature": signature_header(
                target.credentials["signingSecret"], data, int(time.time() * 1000)
            ),
        }
        timeout = httpx.Timeout(TOTAL_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
        try:
            async with (
                asyncio.timeout(TOTAL_TIMEOUT_SECONDS),
                httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            ):
                response = await client.post(url, content=data, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            raise SyncFailure(f"the receiver did not answer within {TOTAL_TIMEOUT_SECONDS:g} s") from None
        except httpx.HTTPError as exc:
            raise SyncFailure(f"cannot reach the receiver: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            answer = " ".join(response.text.split())[:200]
            raise SyncFailure(
                f"the receiver answered HTTP {response.status_code}" + (f": {answer}" if answer else "")
            )

    async def push(self, target: Target, material: Material, reference: str | None) -> str:
        await self._post(target, push_body(target, material))
        return f"{target.connection['url']}#{material.certificate_id}"

    async def remove(self, target: Target, reference: str, certificate_id: uuid.UUID) -> None:
        await self._post(
            target,
            {
                "event": "sync.remove",
                "syncId": str(target.sync_id),
                "syncName": target.sync_name,
                "applicationName": target.application_name,
                "certificateId": str(certificate_id),
            },
        )
