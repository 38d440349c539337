"""CA certificate, CRL and OCSP over HTTP (SPEC §7): public, relying parties call them without a token."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from core import revocation_status
from core.errors import NotFound
from pki.ocsp import ocsp_error_response

# Largest OCSP request accepted; a single-CertID request with a nonce is a few hundred bytes.
MAX_OCSP_REQUEST = 16 * 1024


def _not_found(error: NotFound) -> PlainTextResponse:
    return PlainTextResponse(error.message, status_code=404)


async def ca_certificate(request: Request) -> Response:
    try:
        der = await revocation_status.ca_certificate_der(request.path_params["ca_id"])
    except NotFound as error:
        return _not_found(error)
    return Response(der, media_type="application/pkix-cert", headers={"Cache-Control": "max-age=3600"})


async def crl(request: Request) -> Response:
    try:
        der = await revocation_status.current_crl(request.path_params["ca_id"])
    except NotFound as error:
        return _not_found(error)
    return Response(der, media_type="application/pkix-crl", headers={"Cache-Control": "max-age=300"})


def _ocsp_response(der: bytes) -> Response:
    return Response(der, media_type="application/ocsp-response", headers={"Cache-Control": "no-cache"})


def _malformed() -> Response:
    return _ocsp_response(ocsp_error_response("malformedRequest"))


async def _answer(ca_id: str, der: bytes) -> Response:
    try:
        answer = await revocation_status.ocsp_answer(ca_id, der)
    except NotFound as error:
        return _not_found(error)
    return _ocsp_response(answer.der)


async def ocsp_post(request: Request) -> Response:
    body = await request.body()
    if not body or len(body) > MAX_OCSP_REQUEST:
        return _malformed()
    return await _answer(request.path_params["ca_id"], body)


def _decode_get_request(encoded: str) -> bytes | None:
    """RFC 6960 A.1: base64 of the DER, URL-encoded; accept the url-safe alphabet and missing padding too."""
    text = unquote(encoded).strip()
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


async def ocsp_get(request: Request) -> Response:
    encoded = request.path_params["request"]
    if len(encoded) > MAX_OCSP_REQUEST:
        return _malformed()
    der = _decode_get_request(encoded)
    if not der:
        return _malformed()
    return await _answer(request.path_params["ca_id"], der)


routes: list[BaseRoute] = [
    Route("/pki/cas/{ca_id}/ca.crt", ca_certificate, methods=["GET"]),
    Route("/pki/cas/{ca_id}/crl", crl, methods=["GET"]),
    Route("/pki/ocsp/{ca_id}", ocsp_post, methods=["POST"]),
    # The standard alphabet has "/", so the request may span several path segments.
    Route("/pki/ocsp/{ca_id}/{request:path}", ocsp_get, methods=["GET"]),
]
