"""SCEP (RFC 8894) over HTTP: `pkiclient.exe` per (application, profile) attachment.

`/scep/applications/{appId}/profiles/{profileId}/pkiclient.exe`; a legacy profile's (on its project's
container, core.legacy.endpoints) is `/scep/{profileId}/pkiclient.exe`.

GetCACaps, GetCACert and PKIOperation (GET with a base64 `message`, or POST with the DER body). Refusals
go back as CertRep FAILURE with a failInfo whenever the request got far enough to be answered that way;
otherwise HTTP 400 (404 where no SCEP endpoint exists). Never a 5xx: an unexpected failure is logged and
answered as a refusal.
"""

from __future__ import annotations

import base64
import binascii
import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from core import scep
from core.scep import ScepBadRequest, ScepNotFound
from pki.scep import MAX_MESSAGE_BYTES

logger = logging.getLogger(__name__)

PATH = "/scep/applications/{app_id}/profiles/{profile_id}/pkiclient.exe"
LEGACY_PATH = "/scep/{profile_id}/pkiclient.exe"


def _bad_request(message: str, status: int = 400) -> Response:
    return PlainTextResponse(message + "\n", status_code=status)


def _decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional; a `+` turned into a space by form decoding is undone."""
    cleaned = "".join(text.replace(" ", "+").split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ScepBadRequest("the message parameter is not base64") from None


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    limit = 2 * MAX_MESSAGE_BYTES  # base64 bodies are larger than their DER
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ScepBadRequest("the request body is too large")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ScepBadRequest("the request body is too large")
    except ClientDisconnect:
        raise ScepBadRequest("the client closed the connection before sending the body") from None
    data = bytes(body)
    if data[:1] != b"\x30" and data:
        # A few clients POST the message base64-encoded.
        try:
            return _decode_base64(data.decode("ascii"))
        except UnicodeDecodeError:
            raise ScepBadRequest("the request body is neither DER nor base64") from None
    return data


async def pkiclient(request: Request) -> Response:
    operation = request.query_params.get("operation", "")
    try:
        if operation == "GetCACaps":
            await scep.load_public_endpoint(
                request.path_params.get("app_id"), request.path_params["profile_id"]
            )
            return PlainTextResponse(scep.ca_caps())
        if operation == "GetCACert":
            endpoint = await scep.load_public_endpoint(
                request.path_params.get("app_id"), request.path_params["profile_id"]
            )
            return Response(scep.ca_certificates(endpoint), media_type=scep.CONTENT_TYPE_CA_RA)
        if operation == "PKIOperation":
            if request.method == "POST":
                body = await _read_body(request)
            else:
                body = _decode_base64(request.query_params.get("message", ""))
            endpoint = await scep.load_endpoint(
                request.path_params.get("app_id"), request.path_params["profile_id"]
            )
            source = request.client.host if request.client else None
            reply = await scep.pki_operation(endpoint, body, source_address=source)
            return Response(reply, media_type=scep.CONTENT_TYPE_PKI_MESSAGE)
        return _bad_request(
            f"unsupported operation {operation[:40]!r}: use GetCACaps, GetCACert or PKIOperation"
        )
    except ScepNotFound as exc:
        return _bad_request(str(exc), status=404)
    except ScepBadRequest as exc:
        return _bad_request(str(exc))
    except Exception:  # noqa: BLE001 - never a 5xx to a SCEP client; the cause goes to the log
        logger.exception("SCEP %s %s failed", request.method, operation[:40])
        return _bad_request("the request could not be processed")


routes: list[BaseRoute] = [
    Route(PATH, pkiclient, methods=["GET", "POST"]),
    Route(LEGACY_PATH, pkiclient, methods=["GET", "POST"]),
]
