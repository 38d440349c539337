"""ACME (RFC 8555) over HTTP: every route of a directory, per (application, profile) attachment.

Each directory answers under `/acme/applications/{appId}/profiles/{profileId}/`; a legacy profile's (on its
project's container, core.legacy.endpoints) under `/acme/profiles/{profileId}/` instead.

Each POST is verified here (JWS, nonce, url, signer) before a handler sees it; the order, authorization,
challenge, certificate and revocation handlers live in api/routes/acme_order.py.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.routes.acme_http import acme_response, problem_response
from core import acme_account, acme_order, acme_renewal, acme_sql, acme_validation
from core.acme_account import MAX_BODY, VerifiedRequest, acme_url, load_acme_attachment, verify_request
from models.application import ApplicationProfile
from pki.acme import ari, jws
from pki.acme.problem import AcmeProblem

logger = logging.getLogger(__name__)

PREFIX = "/acme/applications/{app_id}/profiles/{profile_id}"
LEGACY_PREFIX = "/acme/profiles/{profile_id}"
JOSE_JSON = "application/jose+json"

Handler = Callable[[VerifiedRequest, dict[str, str]], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
# The reads a handler starts with, made in the request's own trip to the database: from the path's
# parameters, the account the kid names and the (not yet verified) JWS.
Prefetcher = Callable[[dict[str, str], uuid.UUID, jws.Jws], acme_sql.Prefetch | None]


def _internal() -> AcmeProblem:
    return AcmeProblem(
        "serverInternal", "the server failed to handle this request; try again later", status=500
    )


async def _answer(
    request: Request, attachment_holder: list[ApplicationProfile], work: Callable[[], Awaitable[Response]]
) -> Response:
    """Run `work`; problems become problem documents, anything else serverInternal (logged, no internals)."""
    with acme_account.reply_nonce_scope():
        return await _answer_in_scope(request, attachment_holder, work)


async def _answer_in_scope(
    request: Request, attachment_holder: list[ApplicationProfile], work: Callable[[], Awaitable[Response]]
) -> Response:
    try:
        return await work()
    except AcmeProblem as problem:
        return await problem_response(attachment_holder[0] if attachment_holder else None, problem)
    except Exception:
        logger.exception("ACME %s %s failed", request.method, request.url.path)
        try:
            return await problem_response(attachment_holder[0] if attachment_holder else None, _internal())
        except Exception:  # noqa: BLE001 - even the nonce failed (database down): answer without one
            logger.exception("ACME problem response failed")
            return Response(
                b'{"type":"urn:ietf:params:acme:error:serverInternal","status":500}',
                status_code=500,
                media_type="application/problem+json",
            )


async def _read_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != JOSE_JSON:
        raise AcmeProblem("malformed", f"Content-Type must be {JOSE_JSON}", status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise AcmeProblem("malformed", f"request body exceeds {MAX_BODY} bytes", status=413)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise AcmeProblem("malformed", f"request body exceeds {MAX_BODY} bytes", status=413)
    except ClientDisconnect:
        raise AcmeProblem("malformed", "the client closed the connection before sending the body") from None
    return bytes(body)


async def _attachment(request: Request, holder: list[ApplicationProfile]) -> ApplicationProfile:
    attachment = await load_acme_attachment(
        request.path_params.get("app_id"), request.path_params["profile_id"]
    )
    holder.append(attachment)
    return attachment


def _post(
    path: str, handler: Handler, *, require_account: bool = True, prefetch: Prefetcher | None = None
) -> Endpoint:
    """A JWS-authenticated POST endpoint; `path` is relative to the directory, e.g. "order/{id}/finalize"."""

    async def endpoint(request: Request) -> Response:
        holder: list[ApplicationProfile] = []

        async def work() -> Response:
            # The body first, so the kid's account is read in the attachment's query; a directory that
            # does not exist still answers 404 before any complaint about the body.
            unreadable: AcmeProblem | None = None
            body = b""
            try:
                body = await _read_body(request)
            except AcmeProblem as problem:
                unreadable = problem
            parsed, kid = (None, None) if unreadable else acme_account.peek(body)
            nonce = parsed.protected.get("nonce") if parsed is not None else None
            params = {k: v for k, v in request.path_params.items() if k not in ("app_id", "profile_id")}
            reads: Callable[[uuid.UUID], acme_sql.Prefetch | None] | None = None
            if prefetch is not None and parsed is not None:
                jws_body = parsed
                reads = lambda account_id: prefetch(params, account_id, jws_body)  # noqa: E731
            attachment, preloaded, used_nonce, prefetched = await acme_account.load_acme_post(
                request.path_params.get("app_id"),
                request.path_params["profile_id"],
                kid=kid,
                nonce=nonce if isinstance(nonce, str) and nonce else None,
                prefetch=reads,
            )
            holder.append(attachment)
            if unreadable is not None:
                raise unreadable
            url = acme_url(attachment, path.format(**params))
            verified = await verify_request(
                attachment=attachment,
                body=body,
                url=url,
                require_account=require_account,
                preloaded=preloaded,
                parsed=parsed,
                used_nonce=used_nonce,
                prefetched=prefetched,
            )
            return await handler(verified, params)

        return await _answer(request, holder, work)

    return endpoint


# Directory and nonces ----------------------------------------------------------------------------------


async def directory(request: Request) -> Response:
    holder: list[ApplicationProfile] = []

    async def work() -> Response:
        attachment = await _attachment(request, holder)
        return await acme_response(attachment, acme_account.directory(attachment))

    return await _answer(request, holder, work)


async def new_nonce(request: Request) -> Response:
    holder: list[ApplicationProfile] = []

    async def work() -> Response:
        attachment = await _attachment(request, holder)
        return await acme_response(attachment, None, status=200 if request.method == "HEAD" else 204)

    return await _answer(request, holder, work)


async def renewal_info(request: Request) -> Response:
    """RFC 9773 §4.1: when to renew a certificate of this directory (a GET: no account, no JWS)."""
    holder: list[ApplicationProfile] = []

    async def work() -> Response:
        attachment = await _attachment(request, holder)
        body = await acme_renewal.renewal_info(attachment, request.path_params["cert_id"])
        return await acme_response(attachment, body, headers={"Retry-After": str(ari.RETRY_AFTER_SECONDS)})

    return await _answer(request, holder, work)


# Accounts ----------------------------------------------------------------------------------------------


async def _new_account(verified: VerifiedRequest, params: dict[str, str]) -> Response:
    account, created = await acme_account.new_account(verified)
    attachment = verified.attachment
    return await acme_response(
        attachment,
        acme_account.account_object(attachment, account),
        status=201 if created else 200,
        headers={"Location": acme_account.account_url(attachment, account)},
    )


async def _account(verified: VerifiedRequest, params: dict[str, str]) -> Response:
    account = await acme_account.update_account(verified, params["id"])
    attachment = verified.attachment
    return await acme_response(
        attachment,
        acme_account.account_object(attachment, account),
        headers={"Location": acme_account.account_url(attachment, account)},
    )


async def _account_orders(verified: VerifiedRequest, params: dict[str, str]) -> Response:
    orders = await acme_account.account_orders(verified, params["id"])
    return await acme_response(verified.attachment, {"orders": orders})


async def _key_change(verified: VerifiedRequest, params: dict[str, str]) -> Response:
    account = await acme_account.change_key(verified)
    attachment = verified.attachment
    return await acme_response(
        attachment,
        acme_account.account_object(attachment, account),
        headers={"Location": acme_account.account_url(attachment, account)},
    )


# Orders (api/routes/acme_order.py, imported when first used) ------------------------------------------


def _orders_handler(name: str, param: str | None = None) -> Handler:
    async def handler(verified: VerifiedRequest, params: dict[str, str]) -> Response:
        try:
            acme_order = importlib.import_module("api.routes.acme_order")
        except ImportError:
            logger.exception("api.routes.acme_order does not import: ACME %s is unavailable", name)
            raise _internal() from None
        function: Any = getattr(acme_order, name, None)
        if function is None:
            logger.error("api.routes.acme_order.%s is missing", name)
            raise _internal()
        if param is None:
            return await function(verified)
        return await function(verified, params[param])

    return handler


def _payload(body: jws.Jws) -> Any:
    try:
        return body.payload_json()
    except AcmeProblem:
        return None


_PREFETCH: dict[str, Prefetcher] = {
    "new-order": lambda params, account_id, body: acme_order.prefetch_new_order(account_id, _payload(body)),
    "order/{id}": lambda params, account_id, body: acme_order.prefetch_order(params["id"]),
    "order/{id}/finalize": lambda params, account_id, body: acme_order.prefetch_order(params["id"]),
    "authz/{id}": lambda params, account_id, body: acme_order.prefetch_authorization(params["id"]),
    "chall/{id}": lambda params, account_id, body: acme_validation.prefetch_challenge(params["id"]),
    "cert/{id}": lambda params, account_id, body: acme_order.prefetch_certificate(account_id, params["id"]),
}

# Every resource of a directory, relative to it, served under both URL forms; those every order uses first
# (Starlette tries routes in order).
_DIRECTORY: list[tuple[str, Endpoint, list[str]]] = [
    *(
        (path, _post(path, handler, require_account=require_account, prefetch=_PREFETCH.get(path)), ["POST"])
        for path, handler, require_account in [
            ("order/{id}", _orders_handler("get_order", "id"), True),
            ("new-order", _orders_handler("new_order"), True),
            ("authz/{id}", _orders_handler("get_authorization", "id"), True),
            ("chall/{id}", _orders_handler("respond_challenge", "id"), True),
            ("order/{id}/finalize", _orders_handler("finalize_order", "id"), True),
            ("cert/{id}", _orders_handler("download_certificate", "id"), True),
            ("new-account", _new_account, False),
            ("account/{id}", _account, True),
            ("account/{id}/orders", _account_orders, True),
            ("key-change", _key_change, True),
            ("revoke-cert", _orders_handler("revoke_certificate"), False),
        ]
    ),
    ("directory", directory, ["GET"]),
    ("new-nonce", new_nonce, ["GET", "HEAD"]),
    ("renewal-info/{cert_id}", renewal_info, ["GET"]),
]

routes: list[BaseRoute] = [
    Route(f"{prefix}/{path}", endpoint, methods=methods)
    for prefix in (PREFIX, LEGACY_PREFIX)
    for path, endpoint, methods in _DIRECTORY
]
