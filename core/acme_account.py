"""ACME accounts (RFC 8555 §7.3): nonces, request verification, the directory, accounts and key changes."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import audit, runtime
from core.authz import Actor
from core.issuance import load_attachment_joined
from models.acme import AcmeAccount, AcmeNonce, AcmeOrder
from models.application import ApplicationProfile
from pki import sealing
from pki.acme import jws
from pki.acme.problem import AcmeProblem
from pki.errors import PkiError

logger = logging.getLogger(__name__)

# Largest JWS body accepted on any ACME POST.
MAX_BODY = 64 * 1024
NONCE_TTL = timedelta(hours=1)
# Expired nonces are purged once every this many new nonces (opportunistically, by whoever mints one).
NONCE_PURGE_EVERY = 256
MAX_CONTACTS = 10
_MAILTO = re.compile(r"^mailto:([A-Za-z0-9.!#$%&'*+/=^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$")

_minted = 0


@dataclass(frozen=True)
class PreloadedAccount:
    """The account row a `kid` names, read with the attachment (None: no such account in this directory)."""

    kid: str
    account: AcmeAccount | None


@dataclass(frozen=True)
class VerifiedRequest:
    """A POST whose JWS, nonce, url and signer were checked; handlers act on it."""

    attachment: ApplicationProfile  # application and profile (with ca, policy) loaded
    account: AcmeAccount | None  # None only where a jwk signed it (newAccount, revokeCert by cert key)
    jwk: dict[str, Any] | None  # the jwk when the request carried one instead of a kid
    payload: dict[str, Any] | None  # parsed JSON payload; None for POST-as-GET (empty payload)
    url: str
    protected: dict[str, Any]


# Attachment and URLs -----------------------------------------------------------------------------------


def _not_found() -> AcmeProblem:
    return AcmeProblem(
        "malformed", "no ACME directory here: ACME is not enabled for this profile", status=404
    )


async def load_acme_attachment(application_id: str, profile_id: str) -> ApplicationProfile:
    """The attachment with ACME enabled (application, profile, its CA and policy loaded), or a 404."""
    attachment, _ = await load_acme_request(application_id, profile_id)
    return attachment


async def load_acme_request(
    application_id: str, profile_id: str, *, kid: str | None = None
) -> tuple[ApplicationProfile, PreloadedAccount | None]:
    """The attachment (as load_acme_attachment) and, in the same query, the account a `kid` names.

    Every ACME request starts here: one joined query, so a request costs as few round trips as possible.
    The account comes back as a PreloadedAccount for verify_request, which still checks it in full.
    """
    try:
        app_uuid, profile_uuid = uuid.UUID(application_id), uuid.UUID(profile_id)
    except ValueError:
        raise _not_found() from None
    account_id = None if kid is None else _kid_account_id(app_uuid, profile_uuid, kid)
    attachment, account = await load_attachment_joined(
        app_uuid,
        profile_uuid,
        with_application=True,
        account_id=account_id,
        with_account=account_id is not None,
    )
    if attachment is None or not attachment.acme_enabled:
        raise _not_found()
    preloaded = None if kid is None else PreloadedAccount(kid, account if account_id is not None else None)
    return attachment, preloaded


def peek_kid(body: bytes) -> str | None:
    """The `kid` of a JWS body, unverified (only to load its account early), or None."""
    try:
        kid = jws.parse_jws(body).protected.get("kid")
    except Exception:  # noqa: BLE001 - verify_request reports a bad body in its proper order
        return None
    return kid if isinstance(kid, str) else None


def acme_url(attachment: ApplicationProfile, path: str = "") -> str:
    """Absolute URL of a resource of this attachment's directory ("directory" is the directory itself)."""
    base = runtime.settings().public_url.rstrip("/")
    return f"{base}/acme/applications/{attachment.application_id}/profiles/{attachment.profile_id}/{path}"


def account_url(attachment: ApplicationProfile, account: AcmeAccount) -> str:
    return acme_url(attachment, f"account/{account.id}")


def acme_actor(account: AcmeAccount, attachment: ApplicationProfile) -> Actor:
    """The system actor named after the account, so issuance and revocation are audited as that account."""
    return Actor.system(attachment.application.organization_id, f"acme:{account.id}")


def directory(attachment: ApplicationProfile) -> dict[str, Any]:
    """RFC 8555 §7.1.1 directory object."""
    meta: dict[str, Any] = {"externalAccountRequired": bool(attachment.acme_eab_required)}
    website = runtime.settings().public_url.rstrip("/")
    if website.startswith("https://"):
        meta["website"] = website
    return {
        "newNonce": acme_url(attachment, "new-nonce"),
        "newAccount": acme_url(attachment, "new-account"),
        "newOrder": acme_url(attachment, "new-order"),
        "revokeCert": acme_url(attachment, "revoke-cert"),
        "keyChange": acme_url(attachment, "key-change"),
        "meta": meta,
    }


# Nonces ------------------------------------------------------------------------------------------------


_nonce_sql: dict[tuple[str, str], str] = {}
# Per ACME request (reply_nonce_scope): the nonce its answer will carry, minted when its POST's nonce is used.
_reply_nonce: ContextVar[list[str] | None] = ContextVar("acme_reply_nonce", default=None)


def _nonce_query(kind: str, dialect: str) -> str:
    """Nonce statements in plain SQL, one per use: every ACME response mints one, every POST uses one."""
    key = (kind, dialect)
    if key not in _nonce_sql:
        p = ["?"] * 4 if dialect == "sqlite" else ["$1", "$2", "$3", "$4"]
        table = AcmeNonce._meta.db_table
        _nonce_sql[key] = {
            "insert": f'INSERT INTO "{table}" ("value", "expires_at") VALUES ({p[0]}, {p[1]})',
            "consume": f'DELETE FROM "{table}" WHERE "value" = {p[0]} AND "expires_at" > {p[1]} '
            'RETURNING "value"',
            # Uses one nonce and mints the next in the same row: the old value is gone once this commits.
            "replace": f'UPDATE "{table}" SET "value" = {p[0]}, "expires_at" = {p[1]} '
            f'WHERE "value" = {p[2]} AND "expires_at" > {p[3]} RETURNING "value"',
        }[kind]
    return _nonce_sql[key]


def _expiry_value(moment: datetime) -> Any:
    return AcmeNonce._meta.fields_map["expires_at"].to_db_value(moment, AcmeNonce)


@contextlib.contextmanager
def reply_nonce_scope() -> Iterator[None]:
    """One ACME request: its POST's nonce is replaced, in one statement, by the one its answer carries."""
    token = _reply_nonce.set([])
    try:
        yield
    finally:
        _reply_nonce.reset(token)


async def _minted_one(now: datetime) -> None:
    global _minted
    _minted += 1
    if _minted % NONCE_PURGE_EVERY == 0:
        await purge_expired_nonces(now)


async def new_nonce() -> str:
    """A fresh single-use nonce, stored so any replica can accept it."""
    reply = _reply_nonce.get()
    if reply:
        return reply.pop()  # minted when this request's nonce was used (consume_nonce)
    value = secrets.token_urlsafe(24)
    now = datetime.now(UTC)
    connection = AcmeNonce._meta.db
    await connection.execute_query(
        _nonce_query("insert", connection.capabilities.dialect), [value, _expiry_value(now + NONCE_TTL)]
    )
    await _minted_one(now)
    return value


async def purge_expired_nonces(now: datetime | None = None) -> int:
    return await AcmeNonce.filter(expires_at__lte=now or datetime.now(UTC)).delete()


async def consume_nonce(value: str) -> None:
    """Use the nonce up atomically, so only the first request with it finds it; a replay not.

    Within a reply_nonce_scope the row is rewritten to the answer's fresh nonce (one statement for both),
    elsewhere deleted.
    """
    if len(value) <= 64:
        connection = AcmeNonce._meta.db
        dialect = connection.capabilities.dialect
        now = datetime.now(UTC)
        reply = _reply_nonce.get()
        replacement = secrets.token_urlsafe(24) if reply is not None and not reply else None
        if replacement is None:
            changed, rows = await connection.execute_query(
                _nonce_query("consume", dialect), [value, _expiry_value(now)]
            )
        else:
            changed, rows = await connection.execute_query(
                _nonce_query("replace", dialect),
                [replacement, _expiry_value(now + NONCE_TTL), value, _expiry_value(now)],
            )
        # SQLite answers with the RETURNING row; asyncpg runs the statement for its status ("DELETE 1").
        if rows if dialect == "sqlite" else changed:
            if replacement is not None and reply is not None:
                reply.append(replacement)
                await _minted_one(now)
            return
    raise AcmeProblem("badNonce", "the nonce is unknown, expired or already used: retry with a fresh one")


# Request verification ----------------------------------------------------------------------------------


def _kid_account_id(application_id: uuid.UUID, profile_id: uuid.UUID, kid: str) -> uuid.UUID | None:
    """The account id a `kid` names when it is an account URL of this directory, else None."""
    base = runtime.settings().public_url.rstrip("/")
    prefix = f"{base}/acme/applications/{application_id}/profiles/{profile_id}/account/"
    if not kid.startswith(prefix):
        return None
    try:
        return uuid.UUID(kid[len(prefix) :])
    except ValueError:
        return None


async def _account_for_kid(
    attachment: ApplicationProfile, kid: str, preloaded: PreloadedAccount | None = None
) -> AcmeAccount:
    account: AcmeAccount | None
    if preloaded is not None and preloaded.kid == kid:
        account = preloaded.account  # read with the attachment: the same query as below, joined
    else:
        account_id = _kid_account_id(attachment.application_id, attachment.profile_id, kid)
        account = (
            None
            if account_id is None
            else await AcmeAccount.get_or_none(id=account_id, attachment_id=attachment.id)
        )
    if account is None or account.attachment_id != attachment.id:
        raise AcmeProblem("accountDoesNotExist", "no account with this 'kid' exists in this directory")
    if account.status != "valid":
        raise AcmeProblem("unauthorized", f"the account is {account.status}")
    return account


async def verify_request(
    *,
    attachment: ApplicationProfile,
    body: bytes,
    url: str,
    require_account: bool = True,
    preloaded: PreloadedAccount | None = None,
) -> VerifiedRequest:
    """Parse and verify a flattened JWS POST; raises AcmeProblem.

    `require_account`: the request must be signed by an account (kid); False also accepts a jwk.
    `preloaded`: the kid's account as load_acme_request read it (saves a query; checked all the same).
    """
    if len(body) > MAX_BODY:
        raise AcmeProblem("malformed", f"request body exceeds {MAX_BODY} bytes", status=413)
    parsed = jws.parse_jws(body)
    protected = parsed.protected
    jws.check_header(protected, nonce=True)
    if protected["url"] != url:
        raise AcmeProblem("unauthorized", f"JWS 'url' header must be the requested URL {url}")
    account: AcmeAccount | None = None
    jwk: dict[str, Any] | None = None
    if "kid" in protected:
        account = await _account_for_kid(attachment, protected["kid"], preloaded)
        key = jws.jwk_to_public_key(account.jwk)
    else:
        if require_account:
            raise AcmeProblem("malformed", "this request must be signed by an account key with a 'kid'")
        jwk = protected["jwk"]
        key = jws.jwk_to_public_key(jwk)
    jws.verify_signature(parsed, key)
    await consume_nonce(protected["nonce"])
    return VerifiedRequest(
        attachment=attachment,
        account=account,
        jwk=jwk,
        payload=parsed.payload_json(),
        url=url,
        protected=protected,
    )


# Accounts ----------------------------------------------------------------------------------------------


def account_object(attachment: ApplicationProfile, account: AcmeAccount) -> dict[str, Any]:
    """RFC 8555 §7.1.2 account object."""
    body: dict[str, Any] = {
        "status": account.status,
        "contact": list(account.contact or []),
        "orders": acme_url(attachment, f"account/{account.id}/orders"),
        "createdAt": account.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return body


def _contacts(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AcmeProblem("malformed", "'contact' must be an array of strings")
    if len(value) > MAX_CONTACTS:
        raise AcmeProblem("invalidContact", f"at most {MAX_CONTACTS} contacts")
    for item in value:
        if not item.startswith("mailto:"):
            raise AcmeProblem("unsupportedContact", f"contact {item!r} is not supported: use mailto:")
        if len(item) > 254 or not _MAILTO.match(item):
            raise AcmeProblem("invalidContact", f"contact {item!r} is not one mailto: address (no hfields)")
    return list(value)


def _eab_key(attachment: ApplicationProfile) -> bytes:
    assert attachment.acme_eab_hmac_encrypted is not None
    try:
        return sealing.unseal(
            kek=runtime.kek(),
            sealed=attachment.acme_eab_hmac_encrypted,
            context=f"eab:{attachment.id}".encode(),
        )
    except PkiError:
        logger.error("the EAB key of attachment %s does not unseal", attachment.id)
        raise AcmeProblem(
            "serverInternal", "the external account binding key is unusable", status=500
        ) from None


def _check_eab(attachment: ApplicationProfile, binding: Any, jwk: dict[str, Any]) -> str | None:
    """The EAB key id bound, None when no binding is needed or given; raises on a bad one."""
    configured = attachment.acme_eab_kid is not None and attachment.acme_eab_hmac_encrypted is not None
    if binding is None:
        if attachment.acme_eab_required:
            raise AcmeProblem(
                "externalAccountRequired",
                "this directory requires external account binding: get the key id and HMAC key from "
                "the application's Admin",
            )
        return None
    if not configured:
        if attachment.acme_eab_required:
            raise AcmeProblem("unauthorized", "externalAccountBinding key id is not known here")
        return None
    assert attachment.acme_eab_kid is not None
    jws.verify_eab(
        binding,
        expected_kid=attachment.acme_eab_kid,
        hmac_key=_eab_key(attachment),
        url=acme_url(attachment, "new-account"),
        account_jwk=jwk,
    )
    return attachment.acme_eab_kid


def _usable(account: AcmeAccount) -> AcmeAccount:
    if account.status != "valid":
        raise AcmeProblem("unauthorized", f"the account of this key is {account.status}")
    return account


async def new_account(verified: VerifiedRequest) -> tuple[AcmeAccount, bool]:
    """RFC 8555 §7.3: (account, created). onlyReturnExisting is answered without EAB (cert-manager)."""
    attachment, jwk, payload = verified.attachment, verified.jwk, verified.payload
    if jwk is None:
        raise AcmeProblem("malformed", "newAccount must be signed with a 'jwk', not a 'kid'")
    if payload is None:
        raise AcmeProblem("malformed", "newAccount needs a payload (an account object)")
    key_thumbprint = jws.thumbprint(jwk)
    existing = await AcmeAccount.get_or_none(attachment_id=attachment.id, key_thumbprint=key_thumbprint)
    if existing is not None:
        return _usable(existing), False
    if payload.get("onlyReturnExisting") is True:
        raise AcmeProblem("accountDoesNotExist", "no account exists for this key in this directory")
    contact = _contacts(payload.get("contact"))
    eab_kid = _check_eab(attachment, payload.get("externalAccountBinding"), jwk)
    new_id = uuid.uuid4()
    try:
        async with in_transaction() as conn:
            account = await AcmeAccount.create(
                id=new_id,
                attachment_id=attachment.id,
                key_thumbprint=key_thumbprint,
                jwk=jws.public_key_to_jwk(jws.jwk_to_public_key(jwk)),
                contact=contact,
                eab_kid=eab_kid,
                using_db=conn,
            )
            await audit.record(
                actor=acme_actor(account, attachment),
                action="acme_account.create",
                resource_type="acme_account",
                resource_id=account.id,
                application_id=attachment.application_id,
                details={
                    "profile_id": str(attachment.profile_id),
                    "key_thumbprint": key_thumbprint,
                    "contact": contact,
                    "external_account_binding": eab_kid is not None,
                },
                connection=conn,
            )
    except IntegrityError:
        # The same key registered concurrently: answer with that account.
        raced = await AcmeAccount.get_or_none(attachment_id=attachment.id, key_thumbprint=key_thumbprint)
        if raced is None:
            raise
        return _usable(raced), False
    return account, True


def _own_account(verified: VerifiedRequest, account_id: str) -> AcmeAccount:
    account = verified.account
    if account is None or str(account.id) != account_id:
        raise AcmeProblem("unauthorized", "an account can only be read or changed with its own key")
    return account


async def update_account(verified: VerifiedRequest, account_id: str) -> AcmeAccount:
    """RFC 8555 §7.3.2 / §7.3.6: POST-as-GET reads, `contact` updates, `status: deactivated` deactivates."""
    account = _own_account(verified, account_id)
    payload = verified.payload
    if not payload:
        return account
    attachment = verified.attachment
    status = payload.get("status")
    if status is not None and status not in ("valid", "deactivated"):
        raise AcmeProblem("malformed", "an account's status can only be changed to 'deactivated'")
    changes: dict[str, Any] = {}
    if "contact" in payload:
        contact = _contacts(payload["contact"])
        if contact != list(account.contact or []):
            changes["contact"] = contact
    deactivate = status == "deactivated"
    if not changes and not deactivate:
        return account
    async with in_transaction() as conn:
        fields = ["updated_at"]
        if "contact" in changes:
            account.contact = changes["contact"]
            fields.append("contact")
        if deactivate:
            account.status = "deactivated"
            fields.append("status")
        await account.save(using_db=conn, update_fields=fields)
        await audit.record(
            actor=acme_actor(account, attachment),
            action="acme_account.deactivate" if deactivate else "acme_account.update",
            resource_type="acme_account",
            resource_id=account.id,
            application_id=attachment.application_id,
            details={"profile_id": str(attachment.profile_id), **changes},
            connection=conn,
        )
    return account


async def account_orders(verified: VerifiedRequest, account_id: str) -> list[str]:
    """RFC 8555 §7.1.2.1: URLs of the account's orders (newest first, capped)."""
    account = _own_account(verified, account_id)
    ids = (
        await AcmeOrder.filter(account_id=account.id)
        .order_by("-created_at")
        .limit(1000)
        .values_list("id", flat=True)
    )
    return [acme_url(verified.attachment, f"order/{order_id}") for order_id in ids]


async def change_key(verified: VerifiedRequest) -> AcmeAccount:
    """RFC 8555 §7.3.5: the inner JWS, signed by the new key, names the account and its old key."""
    account, attachment = verified.account, verified.attachment
    if account is None:
        raise AcmeProblem("malformed", "keyChange must be signed by the account's current key with a 'kid'")
    if verified.payload is None:
        raise AcmeProblem("malformed", "keyChange needs a payload: the inner JWS signed by the new key")
    inner = jws.parse_jws(verified.payload)
    jws.check_header(inner.protected, nonce=False)
    if "jwk" not in inner.protected:
        raise AcmeProblem("malformed", "the inner keyChange JWS must carry the new key as 'jwk'")
    if inner.protected["url"] != verified.url:
        raise AcmeProblem("malformed", "the inner keyChange JWS must have the same 'url' as the outer one")
    new_jwk = inner.protected["jwk"]
    jws.verify_signature(inner, jws.jwk_to_public_key(new_jwk))
    body = inner.payload_json()
    if body is None:
        raise AcmeProblem("malformed", "the inner keyChange JWS needs a payload {account, oldKey}")
    if body.get("account") != verified.protected.get("kid"):
        raise AcmeProblem("unauthorized", "keyChange 'account' must be the URL of the signing account")
    old_key = body.get("oldKey")
    if not isinstance(old_key, dict) or jws.thumbprint(old_key) != account.key_thumbprint:
        raise AcmeProblem("unauthorized", "keyChange 'oldKey' is not the account's current key")
    new_thumbprint = jws.thumbprint(new_jwk)
    if new_thumbprint == account.key_thumbprint:
        raise AcmeProblem("malformed", "the new key is the account's current key")

    async def conflict() -> AcmeProblem:
        other = await AcmeAccount.get_or_none(attachment_id=attachment.id, key_thumbprint=new_thumbprint)
        location = account_url(attachment, other) if other is not None else None
        return AcmeProblem(
            "malformed",
            "another account already uses the new key",
            status=409,
            headers={"Location": location} if location else None,
        )

    if await AcmeAccount.exists(attachment_id=attachment.id, key_thumbprint=new_thumbprint):
        raise await conflict()
    old_thumbprint = account.key_thumbprint
    try:
        async with in_transaction() as conn:
            account.jwk = jws.public_key_to_jwk(jws.jwk_to_public_key(new_jwk))
            account.key_thumbprint = new_thumbprint
            await account.save(using_db=conn, update_fields=["jwk", "key_thumbprint", "updated_at"])
            await audit.record(
                actor=acme_actor(account, attachment),
                action="acme_account.key_change",
                resource_type="acme_account",
                resource_id=account.id,
                application_id=attachment.application_id,
                details={
                    "profile_id": str(attachment.profile_id),
                    "old_key_thumbprint": old_thumbprint,
                    "key_thumbprint": new_thumbprint,
                },
                connection=conn,
            )
    except IntegrityError:
        raise await conflict() from None
    return account
