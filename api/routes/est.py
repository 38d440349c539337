"""EST (RFC 7030) over HTTPS: cacerts, simpleenroll, simplereenroll, csrattrs, serverkeygen per attachment.

Two URL forms reach the same service: `/.well-known/est/applications/{appId}/profiles/{profileId}/{op}`
and, for clients that take a single label, `/.well-known/est/{appName}.{profileName}/{op}`; a label that
is a UUID is a legacy profile's id (`/.well-known/est/{profileId}/{op}`, core.legacy.endpoints). The client
certificate comes from the TLS connection (api/tls.py) or, behind a TLS-terminating proxy listed in
KEYWARD_TRUSTED_PROXIES, from the KEYWARD_EST_CLIENT_CERT_HEADER header (URL-encoded PEM).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from cryptography import x509
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from api.tls import PEER_EXTENSION, TLS_EXTENSION
from core import est, runtime
from core.est import EstCaller
from models.application import ApplicationProfile
from pki import est as pki_est
from pki.est import EstError, EstPending

logger = logging.getLogger(__name__)

PREFIX = "/.well-known/est"
BASE64 = {"Content-Transfer-Encoding": "base64"}
_GET_OPS = {"cacerts", "csrattrs"}
_POST_OPS = {"simpleenroll", "simplereenroll", "serverkeygen"}


# ---------------------------------------------------------------- the caller


def _peer(request: Request) -> str | None:
    """Who opened the connection (before any proxy header rewrote `client`)."""
    extensions = request.scope.get("extensions") or {}
    peer = extensions.get(PEER_EXTENSION) or request.scope.get("client")
    return str(peer[0]) if peer else None


def _from_trusted_proxy(request: Request) -> bool:
    proxies = runtime.settings().trusted_proxies
    peer = _peer(request)
    if not proxies or peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in proxies)


def _load_pem(text: str) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii", errors="replace"))
    except ValueError:
        return None


def _header_certificate(value: str) -> x509.Certificate | None:
    """nginx's $ssl_client_escaped_cert (URL-encoded PEM); also PEM whose newlines became spaces."""
    text = unquote(value).strip()
    certificate = _load_pem(text)
    if certificate is None and "-----BEGIN CERTIFICATE-----" in text:
        body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
        joined = "".join(body.split())
        certificate = _load_pem(f"-----BEGIN CERTIFICATE-----\n{joined}\n-----END CERTIFICATE-----\n")
    return certificate


def _client_certificate(request: Request, trusted_proxy: bool) -> x509.Certificate | None:
    header = runtime.settings().est_client_cert_header
    if trusted_proxy and header:
        # Behind the proxy the TLS peer is the proxy itself: only its header speaks for the client.
        value = request.headers.get(header)
        return _header_certificate(value) if value else None
    tls = (request.scope.get("extensions") or {}).get(TLS_EXTENSION) or {}
    chain = tls.get("client_cert_chain") or []
    return _load_pem(chain[0]) if chain else None


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    username, colon, passphrase = text.partition(":")
    return (username, passphrase) if colon else None


def caller_of(request: Request) -> EstCaller:
    trusted_proxy = _from_trusted_proxy(request)
    forwarded_https = trusted_proxy and request.headers.get("x-forwarded-proto", "").strip() == "https"
    return EstCaller(
        basic=_basic(request),
        certificate=_client_certificate(request, trusted_proxy),
        secure=request.url.scheme == "https" or forwarded_https,
        source_address=request.client.host if request.client else None,
    )


# ---------------------------------------------------------------- request body


async def _read_csr_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != pki_est.PKCS10:
        raise EstError(415, f"Content-Type must be {pki_est.PKCS10} (base64 DER of a PKCS#10 request)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > pki_est.MAX_BODY:
        raise EstError(413, f"the request body exceeds {pki_est.MAX_BODY} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > pki_est.MAX_BODY:
                raise EstError(413, f"the request body exceeds {pki_est.MAX_BODY} bytes")
    except ClientDisconnect:
        raise EstError(400, "the client closed the connection before sending the body") from None
    return bytes(body)


# ---------------------------------------------------------------- operations


def _certs_only(certificates: list[x509.Certificate], media_type: str) -> Response:
    body = pki_est.base64_lines(pki_est.certs_only(certificates))
    return Response(body, media_type=media_type, headers=BASE64)


async def _operate(request: Request, attachment: ApplicationProfile, op: str) -> Response:
    if op not in _GET_OPS | _POST_OPS:
        raise EstError(404, f"unknown EST operation {op!r}")
    allowed = "GET" if op in _GET_OPS else "POST"
    if request.method != allowed:
        raise EstError(405, f"/{op} takes {allowed}", {"Allow": allowed})
    if op == "cacerts":
        return _certs_only(await est.ca_certificates(attachment), pki_est.CACERTS)
    if op == "csrattrs":
        body = pki_est.base64_lines(est.csr_attributes(attachment))
        return Response(body, media_type=pki_est.CSRATTRS, headers=BASE64)
    csr = await _read_csr_body(request)
    caller = caller_of(request)
    if op == "simpleenroll":
        enrolled = await est.simple_enroll(attachment, caller, csr)
    elif op == "simplereenroll":
        enrolled = await est.simple_reenroll(attachment, caller, csr)
    else:
        enrolled = await est.server_keygen(attachment, caller, csr)
        assert enrolled.private_key_der is not None
        body, content_type = pki_est.server_keygen_multipart(
            enrolled.private_key_der, enrolled.certificates[:1]
        )
        return Response(body, media_type=content_type)
    # RFC 7030 §4.2.3: the certs-only response holds the issued certificate; /cacerts gives the chain.
    return _certs_only(enrolled.certificates[:1], pki_est.CERTS_ONLY)


async def _answer(request: Request, find: Callable[[], Awaitable[ApplicationProfile]]) -> Response:
    try:
        attachment = await find()
        return await _operate(request, attachment, request.path_params["op"])
    except EstError as error:
        return PlainTextResponse(error.message + "\n", status_code=error.status, headers=error.headers)
    except EstPending as pending:
        return PlainTextResponse(
            pending.message + "\n", status_code=202, headers={"Retry-After": str(pending.retry_after)}
        )
    except Exception:
        logger.exception("EST %s %s failed", request.method, request.url.path)
        return PlainTextResponse("the server failed to handle this request\n", status_code=500)


async def by_ids(request: Request) -> Response:
    params = request.path_params
    return await _answer(request, lambda: est.find_attachment(params["app_id"], params["profile_id"]))


async def by_label(request: Request) -> Response:
    return await _answer(request, lambda: est.find_attachment_by_label(request.path_params["label"]))


routes: list[BaseRoute] = [
    Route(
        f"{PREFIX}/applications/{{app_id}}/profiles/{{profile_id}}/{{op}}", by_ids, methods=["GET", "POST"]
    ),
    Route(f"{PREFIX}/{{label}}/{{op}}", by_label, methods=["GET", "POST"]),
]
