"""ACME orders, authorizations, challenges, certificates and revocation (RFC 8555 §7.4–§7.6): thin handlers
that call core.acme_order / core.acme_validation and render the RFC's JSON objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import Response

from api.routes.acme_http import acme_response
from core import acme_order, acme_validation
from core.acme_account import VerifiedRequest, acme_url
from models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
from models.application import ApplicationProfile
from pki.acme.problem import AcmeProblem
from pki.acme.timestamp import rfc3339

PEM_CHAIN = "application/pem-certificate-chain"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)


def _account(verified: VerifiedRequest) -> AcmeAccount:
    if verified.account is None:
        raise AcmeProblem("malformed", "this request must be signed with an account key id (kid)")
    return verified.account


def order_url(attachment: ApplicationProfile, order: AcmeOrder) -> str:
    return acme_url(attachment, f"order/{order.id}")


def order_object(attachment: ApplicationProfile, view: acme_order.OrderView) -> dict[str, Any]:
    """RFC 8555 §7.1.3."""
    order = view.order
    body: dict[str, Any] = {
        "status": order.status,
        "expires": _time(order.expires_at),
        "identifiers": view.identifiers,
        "authorizations": [acme_url(attachment, f"authz/{value}") for value in order.authorization_ids],
        "finalize": acme_url(attachment, f"order/{order.id}/finalize"),
    }
    if order.not_before is not None:
        body["notBefore"] = _time(order.not_before)
    if order.not_after is not None:
        body["notAfter"] = _time(order.not_after)
    if order.error:
        body["error"] = order.error
    if order.replaces is not None:
        body["replaces"] = order.replaces
    if order.status == "valid" and order.certificate_id is not None:
        body["certificate"] = acme_url(attachment, f"cert/{order.certificate_id}")
    return body


def challenge_object(attachment: ApplicationProfile, challenge: AcmeChallenge) -> dict[str, Any]:
    """RFC 8555 §7.1.5 / §8."""
    body: dict[str, Any] = {
        "type": challenge.type,
        "url": acme_url(attachment, f"chall/{challenge.id}"),
        "status": challenge.status,
        "token": challenge.token,
    }
    if challenge.validated_at is not None:
        body["validated"] = _time(challenge.validated_at)
    if challenge.error:
        body["error"] = challenge.error
    return body


def authorization_object(
    attachment: ApplicationProfile, authorization: AcmeAuthorization, challenges: list[AcmeChallenge]
) -> dict[str, Any]:
    """RFC 8555 §7.1.4: a final authorization lists only the challenge that decided it."""
    shown = challenges
    if authorization.status in ("valid", "invalid"):
        shown = [c for c in challenges if c.status == authorization.status] or challenges
    body: dict[str, Any] = {
        "identifier": {"type": authorization.identifier_type, "value": authorization.identifier_value},
        "status": authorization.status,
        "expires": _time(authorization.expires_at),
        "challenges": [challenge_object(attachment, challenge) for challenge in shown],
    }
    if authorization.wildcard:
        body["wildcard"] = True
    return body


def _retry_after(status: str, waiting: str) -> dict[str, str]:
    return {"Retry-After": str(acme_order.RETRY_AFTER_SECONDS)} if status == waiting else {}


async def _order_response(
    verified: VerifiedRequest, view: acme_order.OrderView, *, status: int = 200
) -> Response:
    attachment = verified.attachment
    headers = {"Location": order_url(attachment, view.order), **_retry_after(view.status, "processing")}
    return await acme_response(attachment, order_object(attachment, view), status=status, headers=headers)


async def new_order(verified: VerifiedRequest) -> Response:
    view = await acme_order.new_order(
        attachment=verified.attachment,
        account=_account(verified),
        payload=verified.payload,
        prefetched=verified.prefetched,
    )
    return await _order_response(verified, view, status=201)


async def get_order(verified: VerifiedRequest, order_id: str) -> Response:
    view = await acme_order.get_order(
        attachment=verified.attachment,
        account=_account(verified),
        order_id=order_id,
        prefetched=verified.prefetched,
    )
    pending = [a.id for a in view.authorizations if a.status == "pending"]
    if view.status == "pending" and await acme_validation.settle(pending):
        # A validation of this order ran here meanwhile: answer with its outcome.
        view = await acme_order.get_order(
            attachment=verified.attachment, account=_account(verified), order_id=order_id
        )
    return await _order_response(verified, view)


async def finalize_order(verified: VerifiedRequest, order_id: str) -> Response:
    view = await acme_order.finalize_order(
        attachment=verified.attachment,
        account=_account(verified),
        order_id=order_id,
        payload=verified.payload,
        prefetched=verified.prefetched,
    )
    return await _order_response(verified, view)


async def get_authorization(verified: VerifiedRequest, authz_id: str) -> Response:
    attachment = verified.attachment
    view = await acme_order.get_authorization(
        attachment=attachment,
        account=_account(verified),
        authz_id=authz_id,
        payload=verified.payload,
        prefetched=verified.prefetched,
    )
    if (
        not verified.payload
        and view.status == "pending"
        and await acme_validation.settle([view.authorization.id])
    ):
        # Its validation ran here meanwhile: answer with the outcome.
        view = await acme_order.get_authorization(
            attachment=attachment, account=_account(verified), authz_id=authz_id
        )
    return await acme_response(
        attachment,
        authorization_object(attachment, view.authorization, view.challenges),
        headers=_retry_after(view.status, "pending"),
    )


async def respond_challenge(verified: VerifiedRequest, challenge_id: str) -> Response:
    """POST {} starts validation; POST-as-GET (empty payload) only reads the challenge."""
    attachment = verified.attachment
    view = await acme_validation.respond_challenge(
        attachment=attachment,
        account=_account(verified),
        challenge_id=challenge_id,
        trigger=verified.payload is not None,
        prefetched=verified.prefetched,
    )
    links = (
        f'<{acme_url(attachment, "directory")}>;rel="index", '
        f'<{acme_url(attachment, f"authz/{view.authorization.id}")}>;rel="up"'
    )
    headers = {"Link": links, **_retry_after(view.challenge.status, "processing")}
    return await acme_response(attachment, challenge_object(attachment, view.challenge), headers=headers)


async def download_certificate(verified: VerifiedRequest, certificate_id: str) -> Response:
    attachment = verified.attachment
    pem = await acme_order.certificate_chain(
        attachment=attachment,
        account=_account(verified),
        certificate_id=certificate_id,
        prefetched=verified.prefetched,
    )
    return await acme_response(attachment, pem, content_type=PEM_CHAIN)


async def revoke_certificate(verified: VerifiedRequest) -> Response:
    """Signed by the ordering account (kid) or by the certificate's own key (jwk)."""
    await acme_order.revoke_certificate(
        attachment=verified.attachment, account=verified.account, jwk=verified.jwk, payload=verified.payload
    )
    return await acme_response(verified.attachment, None)
