"""ACME accounts (RFC 8555 §7.3): nonces, request verification, the directory, accounts and key changes."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import acme_sql, audit, runtime
from core.authz import Actor
from core.issuance import GENERATION_COLUMN, attachment_from_row, attachment_statement
from core.legacy.endpoints import is_legacy_attachment
from core.nonce_ledger import NonceLedger
from core.sqlite_inline import nonce_ledger_of
from models import attachment_generation
from models.acme import AcmeAccount, AcmeNonce, AcmeOrder
from models.application import ApplicationProfile
from pki import sealing
from pki.acme import jws
from pki.acme.problem import AcmeProblem
from pki.acme.timestamp import rfc3339
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
class UsedNonce:
    """A POST's nonce, used up (or found unusable) with the attachment's query; verify_request reports it."""

    value: str
    used: bool


@dataclass(frozen=True)
class VerifiedRequest:
    """A POST whose JWS, nonce, url and signer were checked; handlers act on it."""

    attachment: ApplicationProfile  # application and profile (with ca, policy) loaded
    account: AcmeAccount | None  # None only where a jwk signed it (newAccount, revokeCert by cert key)
    jwk: dict[str, Any] | None  # the jwk when the request carried one instead of a kid
    payload: dict[str, Any] | None  # parsed JSON payload; None for POST-as-GET (empty payload)
    url: str
    protected: dict[str, Any]
    # The handler's first reads, made with the request's own query (load_acme_post), or None.
    prefetched: acme_sql.Prefetch | None = None


# Attachment and URLs -----------------------------------------------------------------------------------


def _not_found() -> AcmeProblem:
    return AcmeProblem(
        "malformed", "no ACME directory here: ACME is not enabled for this profile", status=404
    )


async def load_acme_attachment(application_id: str | None, profile_id: str) -> ApplicationProfile:
    """The attachment with ACME enabled (application, profile, its CA and policy loaded), or a 404.

    `application_id` None: the legacy URL form, `/acme/profiles/{profileId}/...` (core.legacy.endpoints).
    """
    attachment, _ = await load_acme_request(application_id, profile_id)
    return attachment


async def load_acme_request(
    application_id: str | None, profile_id: str, *, kid: str | None = None
) -> tuple[ApplicationProfile, PreloadedAccount | None]:
    """The attachment (as load_acme_attachment) and, in the same query, the account a `kid` names.

    The account comes back as a PreloadedAccount for verify_request, which still checks it in full.
    A legacy container answers only on the legacy form, an Application only on the application form.
    """
    attachment, preloaded, _, _ = await load_acme_post(application_id, profile_id, kid=kid)
    return attachment, preloaded


async def load_acme_post(
    application_id: str | None,
    profile_id: str,
    *,
    kid: str | None = None,
    nonce: str | None = None,
    prefetch: Callable[[uuid.UUID], acme_sql.Prefetch | None] | None = None,
) -> tuple[ApplicationProfile, PreloadedAccount | None, UsedNonce | None, acme_sql.Prefetch | None]:
    """As load_acme_request, and the POST's `nonce` used up (replaced by its answer's) in the same trip.

    Every ACME POST starts here. The nonce, as the body's protected header gives it before anything is
    verified, is used whatever comes next: a request that fails verification has spent its nonce, as a
    replayed one would, and its problem document carries the fresh one. verify_request reports an unusable
    nonce where it always did, after the signature. `prefetch(account id)` (for a kid naming an account of
    this directory) gives the handler's first reads, which run in the same trip too.
    """
    legacy = application_id is None
    try:
        app_uuid = None if application_id is None else uuid.UUID(application_id)
        profile_uuid = uuid.UUID(profile_id)
    except ValueError:
        raise _not_found() from None
    account_id = None if kid is None else _kid_account_id(_directory_base(app_uuid, profile_uuid), kid)
    connection = ApplicationProfile._meta.db
    dialect = connection.capabilities.dialect
    remembering = dialect == "sqlite"
    row_key = (legacy, app_uuid, profile_uuid, account_id)
    remembered = _attachment_rows.get(row_key) if remembering else None
    query, values = attachment_statement(
        dialect,
        app_uuid,
        profile_uuid,
        with_application=True,
        account_id=account_id,
        with_account=account_id is not None,
        legacy=legacy,
        with_generation=remembering,
    )
    steps: list[acme_sql.Step] = []
    used: UsedNonce | None = None
    replacement = None
    ledger = nonce_ledger_of(connection)
    if ledger is not None:
        used = _replace_in_ledger(ledger, nonce)
    else:
        replacement = _replace_nonce_step(nonce, dialect)
    if replacement is not None:
        steps.append(replacement[0])
    # A row read before needs only the generation, to know it is still the database's (see _current_row).
    steps.append(("rows", attachment_generation.READ_SQL, []) if remembered else ("rows", query, values))
    prefetched = prefetch(account_id) if prefetch is not None and account_id is not None else None
    if prefetched is not None:
        steps += prefetched.steps
    results = await acme_sql.run_steps(steps)
    if replacement is not None and nonce is not None:
        used = UsedNonce(nonce, bool(results[0]))
        if used.used:
            await _replaced(replacement[1])
    rows = results[1 if replacement is not None else 0]
    if prefetched is not None:
        prefetched.settle(results[len(results) - len(prefetched.steps) :])
    row = await _current_row(rows, remembered, (query, values), row_key if remembering else None)
    if row is None:
        raise _not_found()
    attachment, account = attachment_from_row(row, with_account=account_id is not None)
    if not attachment.acme_enabled or bool(attachment.application.legacy) != legacy:
        raise _not_found()
    preloaded = None if kid is None else PreloadedAccount(kid, account if account_id is not None else None)
    return attachment, preloaded, used, prefetched


# SQLite: attachment rows (with the account a kid names) as this process last read them, by (legacy,
# application, profile, account), with the attachment generation they belong to. Another process's
# commit empties SQLite's page cache, so the join's pages cost a read each, on every POST; while the
# generation stands, the counter is all there is to read (models.attachment_generation).
_attachment_rows: dict[
    tuple[bool, uuid.UUID | None, uuid.UUID, uuid.UUID | None], tuple[int, dict[str, Any]]
] = {}
_ATTACHMENT_ROWS_LIMIT = 1024


async def _current_row(
    found: list[dict[str, Any]],
    remembered: tuple[int, dict[str, Any]] | None,
    statement: tuple[str, list[Any]],
    key: tuple[bool, uuid.UUID | None, uuid.UUID, uuid.UUID | None] | None,
) -> dict[str, Any] | None:
    """The attachment row of this request, or None when there is none.

    `found` is what the trip read: the generation alone when a row was `remembered`, which stands while
    the generation is still its own, else the statement's row. A moved generation reads the statement
    again. With a `key` (SQLite), a row read is remembered under the generation it was read with."""
    if remembered is not None:
        if found and found[0]["value"] == remembered[0]:
            return remembered[1]
        (found,) = await acme_sql.run_steps([("rows", *statement)])
    if not found:
        if key is not None:
            _attachment_rows.pop(key, None)
        return None
    row = found[0]
    if key is not None:
        if len(_attachment_rows) >= _ATTACHMENT_ROWS_LIMIT:
            _attachment_rows.clear()
        _attachment_rows[key] = (row[GENERATION_COLUMN], row)
    return row


def peek_kid(body: bytes) -> str | None:
    """The `kid` of a JWS body, unverified (only to load its account early), or None."""
    return peek(body)[1]


def peek(body: bytes) -> tuple[jws.Jws | None, str | None]:
    """The body parsed as a JWS (None when it does not parse) and its `kid`, both unverified.

    The parsed JWS goes on to verify_request, so a body is parsed once; a body that does not parse is
    parsed again there, which reports why in its proper order.
    """
    try:
        parsed = jws.parse_jws(body)
    except Exception:  # noqa: BLE001 - verify_request reports a bad body in its proper order
        return None, None
    kid = parsed.protected.get("kid")
    return parsed, kid if isinstance(kid, str) else None


_directory_bases: dict[tuple[str, uuid.UUID | None, uuid.UUID], str] = {}


def _directory_base(application_id: uuid.UUID | None, profile_id: uuid.UUID) -> str:
    """The URL every resource of a directory starts with (application form, or legacy form without one)."""
    public_url = runtime.settings().public_url
    key = (public_url, application_id, profile_id)
    found = _directory_bases.get(key)
    if found is not None:
        return found
    base = public_url.rstrip("/")
    if application_id is None:
        found = f"{base}/acme/profiles/{profile_id}/"
    else:
        found = f"{base}/acme/applications/{application_id}/profiles/{profile_id}/"
    if len(_directory_bases) >= 4096:
        _directory_bases.clear()
    _directory_bases[key] = found
    return found


def acme_url(attachment: ApplicationProfile, path: str = "") -> str:
    """Absolute URL of a resource of this attachment's directory ("directory" is the directory itself).

    A legacy container's attachment gets the legacy form, so clients stay on the URLs they came in on.
    """
    application_id = None if is_legacy_attachment(attachment) else attachment.application_id
    return _directory_base(application_id, attachment.profile_id) + path


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
        "renewalInfo": acme_url(attachment, "renewal-info"),  # RFC 9773
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
    now = datetime.now(UTC)
    ledger = nonce_ledger_of(AcmeNonce._meta.db)
    if ledger is not None:
        return ledger.issue(_epoch(now + NONCE_TTL))
    value = secrets.token_urlsafe(24)
    dialect = AcmeNonce._meta.db.capabilities.dialect
    await acme_sql.run_steps(
        [("count", _nonce_query("insert", dialect), [value, _expiry_value(now + NONCE_TTL)])]
    )
    await _minted_one(now)
    return value


async def purge_expired_nonces(now: datetime | None = None) -> int:
    return await AcmeNonce.filter(expires_at__lte=now or datetime.now(UTC)).delete()


def _reply_awaiting(value: str | None) -> list[str] | None:
    """The answer's nonces, when `value` is to be replaced by a fresh one there; None when there is nothing
    to use (no nonce, an implausible one), no reply_nonce_scope, or the answer has its nonce already."""
    reply = _reply_nonce.get()
    if value is None or len(value) > 64 or reply is None or reply:
        return None
    return reply


def _replace_nonce_step(value: str | None, dialect: str) -> tuple[acme_sql.Step, str] | None:
    """The statement using `value` up and storing the answer's nonce in its place, and that new nonce;
    None as _reply_awaiting says."""
    if _reply_awaiting(value) is None:
        return None
    now = datetime.now(UTC)
    fresh = secrets.token_urlsafe(24)
    values = [fresh, _expiry_value(now + NONCE_TTL), value, _expiry_value(now)]
    return ("count", _nonce_query("replace", dialect), values), fresh


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _replace_in_ledger(ledger: NonceLedger, value: str | None) -> UsedNonce | None:
    """As _replace_nonce_step, on a SQLite file's nonce ledger: used up at once, the answer's nonce kept."""
    reply = _reply_awaiting(value)
    if reply is None or value is None:
        return None
    now = datetime.now(UTC)
    used, fresh = ledger.replace(value, _epoch(now), _epoch(now + NONCE_TTL))
    reply.append(fresh)
    return UsedNonce(value, used)


async def _replaced(fresh: str) -> None:
    """`fresh` replaced this request's nonce: its answer carries it."""
    reply = _reply_nonce.get()
    if reply is not None:
        reply.append(fresh)
    await _minted_one(datetime.now(UTC))


async def consume_nonce(value: str) -> None:
    """Use the nonce up atomically, so only the first request with it finds it; a replay not.

    Within a reply_nonce_scope the answer's fresh nonce takes its place (one statement for both, or one
    critical section of a SQLite file's ledger), elsewhere it is only used up.
    """
    ledger = nonce_ledger_of(AcmeNonce._meta.db)
    if ledger is not None:
        used = _replace_in_ledger(ledger, value)
        if used is None:  # no answer waiting for a fresh nonce: only used up
            used = UsedNonce(value, len(value) <= 64 and ledger.use(value, _epoch(datetime.now(UTC))))
        if used.used:
            return
    elif len(value) <= 64:
        connection = AcmeNonce._meta.db
        dialect = connection.capabilities.dialect
        now = datetime.now(UTC)
        reply = _reply_nonce.get()
        replacement = secrets.token_urlsafe(24) if reply is not None and not reply else None
        if replacement is None:
            step: acme_sql.Step = ("count", _nonce_query("consume", dialect), [value, _expiry_value(now)])
        else:
            values = [replacement, _expiry_value(now + NONCE_TTL), value, _expiry_value(now)]
            step = ("count", _nonce_query("replace", dialect), values)
        if (await acme_sql.run_steps([step]))[0]:
            if replacement is not None and reply is not None:
                reply.append(replacement)
                await _minted_one(now)
            return
    raise AcmeProblem("badNonce", "the nonce is unknown, expired or already used: retry with a fresh one")


# Request verification ----------------------------------------------------------------------------------


# Parsed account keys by (account id, key thumbprint): a key change gives a new thumbprint, so a stale
# entry is never used; the account row itself (status included) is still read on every request.
_account_keys: dict[tuple[uuid.UUID, str], Any] = {}
_ACCOUNT_KEYS_LIMIT = 4096


def _account_key(account: AcmeAccount) -> Any:
    cache_key = (account.id, account.key_thumbprint)
    key = _account_keys.get(cache_key)
    if key is None:
        key = jws.jwk_to_public_key(account.jwk)
        if len(_account_keys) >= _ACCOUNT_KEYS_LIMIT:
            _account_keys.clear()
        _account_keys[cache_key] = key
    return key


def _kid_account_id(directory_base: str, kid: str) -> uuid.UUID | None:
    """The account id a `kid` names when it is an account URL of this directory, else None."""
    prefix = f"{directory_base}account/"
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
        account_id = _kid_account_id(acme_url(attachment), kid)
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
    parsed: jws.Jws | None = None,
    used_nonce: UsedNonce | None = None,
    prefetched: acme_sql.Prefetch | None = None,
) -> VerifiedRequest:
    """Parse and verify a flattened JWS POST; raises AcmeProblem.

    `require_account`: the request must be signed by an account (kid); False also accepts a jwk.
    `preloaded`: the kid's account as load_acme_request read it (saves a query; checked all the same).
    `parsed`: `body` as peek() parsed it (saves parsing it again).
    `used_nonce`: the nonce load_acme_post already used up (or found unusable) for this request.
    """
    if len(body) > MAX_BODY:
        raise AcmeProblem("malformed", f"request body exceeds {MAX_BODY} bytes", status=413)
    if parsed is None:
        parsed = jws.parse_jws(body)
    protected = parsed.protected
    jws.check_header(protected, nonce=True)
    if protected["url"] != url:
        raise AcmeProblem("unauthorized", f"JWS 'url' header must be the requested URL {url}")
    account: AcmeAccount | None = None
    jwk: dict[str, Any] | None = None
    if "kid" in protected:
        account = await _account_for_kid(attachment, protected["kid"], preloaded)
        key = _account_key(account)
    else:
        if require_account:
            raise AcmeProblem("malformed", "this request must be signed by an account key with a 'kid'")
        jwk = protected["jwk"]
        key = jws.jwk_to_public_key(jwk)
    jws.verify_signature(parsed, key)
    if used_nonce is not None and used_nonce.value == protected["nonce"]:
        if not used_nonce.used:
            raise AcmeProblem(
                "badNonce", "the nonce is unknown, expired or already used: retry with a fresh one"
            )
    else:
        await consume_nonce(protected["nonce"])
    return VerifiedRequest(
        attachment=attachment,
        account=account,
        jwk=jwk,
        payload=parsed.payload_json(),
        url=url,
        protected=protected,
        prefetched=prefetched,
    )


# Accounts ----------------------------------------------------------------------------------------------


def account_object(attachment: ApplicationProfile, account: AcmeAccount) -> dict[str, Any]:
    """RFC 8555 §7.1.2 account object."""
    body: dict[str, Any] = {
        "status": account.status,
        "contact": list(account.contact or []),
        "orders": acme_url(attachment, f"account/{account.id}/orders"),
        "createdAt": rfc3339(account.created_at),
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
