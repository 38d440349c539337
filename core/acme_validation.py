"""ACME challenge validation (RFC 8555 §8, RFC 8737, RFC 8738), run outside the request.

Responding to a challenge marks it `processing` and starts a background task that tries a few times, a short
while apart, before the challenge (and its authorization) becomes `invalid` with the reason in `error`. Each
attempt is claimed by a conditional update of the attempt counter and leases the challenge through
`next_attempt_at`, so the worker job `acme.validate` finishes what a restarted server or another replica left
behind, and two validators never run the same attempt.

Validation reaches the real host: names are resolved through KEYWARD_ACME_DNS_RESOLVER (else the system's
resolver), loopback and private addresses are refused unless KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS is on,
and the connection goes to the resolved address (no second lookup an attacker could rebind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx
from tortoise.transactions import in_transaction

from core import acme_fetch, acme_sql, dns_stub, runtime
from core.acme_order import VALID_AUTHORIZATION_LIFETIME, authorization_status
from models import AcmeAccount, AcmeAuthorization, AcmeChallenge
from models.application import ApplicationProfile
from pki.acme.challenge import (
    ACME_TLS_ALPN_PROTOCOL,
    DNS_01,
    HTTP_01,
    HTTP_01_PATH,
    TLS_ALPN_01,
    check_tls_alpn01_certificate,
    dns01_record_name,
    dns01_txt_value,
    http01_body_matches,
    key_authorization,
    tls_alpn01_server_name,
)
from pki.acme.problem import AcmeProblem, problem_dict

log = logging.getLogger("keyward.acme")

MAX_ATTEMPTS = 3
# Seconds between attempts of one challenge (tests shorten it).
ATTEMPT_SPACING = 2.0
# How long a claimed attempt keeps other validators off the challenge; a crashed one's lease runs out.
ATTEMPT_LEASE = timedelta(seconds=60)
# Clock slack when claiming a due attempt (the background task sleeps on the monotonic clock).
CLAIM_TOLERANCE = timedelta(seconds=0.5)
HTTP_TIMEOUT = 10.0
TLS_TIMEOUT = 10.0
DNS_TIMEOUT = 5.0
MAX_HTTP_BODY = 8 * 1024
MAX_REDIRECTS = 3
MAX_ERROR_DETAIL = 500

# Background validations of this process: referenced here so the event loop does not collect them.
_tasks: set[asyncio.Task[None]] = set()
# Authorizations whose first attempt this process is running: done once that attempt has its outcome.
_first_attempts: dict[uuid.UUID, asyncio.Future[None]] = {}
# How long a poll of an order or authorization waits for a first attempt this process is running.
SETTLE_WAIT = 2.0
# How long the answer to a challenge's POST waits for the first attempt it started. Shorter than a poll's
# wait: a client that answers an order's challenges one after the other waits this long for each.
CHALLENGE_SETTLE_WAIT = 1.0


class ValidationFailure(Exception):
    """Why one attempt failed: `kind` is the ACME error type (connection, dns, incorrectResponse, tls)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail[:MAX_ERROR_DETAIL]


@dataclass
class ChallengeView:
    challenge: AcmeChallenge
    authorization: AcmeAuthorization


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- responding


def prefetch_challenge(challenge_id: str) -> acme_sql.Prefetch | None:
    """The challenge with its authorization and account, read with the request."""
    try:
        parsed = uuid.UUID(str(challenge_id))
    except ValueError:
        return None
    return acme_sql.Prefetch(
        "challenge",
        parsed,
        [acme_sql.challenge_step(parsed)],
        lambda results: acme_sql.challenge_from_rows(results[0]),
    )


async def respond_challenge(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount,
    challenge_id: str,
    trigger: bool = True,
    prefetched: acme_sql.Prefetch | None = None,
) -> ChallengeView:
    """The account's own challenge; with `trigger` (payload {}) a pending one starts validating.

    The answer waits (CHALLENGE_SETTLE_WAIT at most) for the first attempt it started, so it shows the
    outcome when that comes soon: a client that reads it, as lego does, goes on without polling when it
    is `valid`; a failed attempt shows its error (and `invalid` when no attempt is left)."""
    try:
        parsed = uuid.UUID(str(challenge_id))
    except ValueError:
        raise AcmeProblem("malformed", f"challenge {challenge_id} not found", status=404) from None
    hit, loaded = acme_sql.take(prefetched, "challenge", parsed)
    if not hit:
        loaded = await acme_sql.challenge_with_authorization(parsed)
    if loaded is None:
        raise AcmeProblem("malformed", f"challenge {challenge_id} not found", status=404)
    challenge, authorization, owner = loaded
    if authorization.account_id != account.id:
        raise AcmeProblem("unauthorized", "this challenge belongs to another account", status=403)
    now = _now()
    if trigger and challenge.status == "pending":
        status = authorization_status(authorization, now)
        if status != "pending":
            raise AcmeProblem(
                "malformed", f"the authorization is {status}; its challenges can no longer start"
            )
        # Started and its first attempt claimed (leased to this process) in one statement, so the
        # background task goes straight to the check; should this process stop, the lease runs out and
        # the worker job runs the next attempt.
        started = await acme_sql.update_challenge(
            challenge.id,
            where={"status": "pending"},
            status="processing",
            attempts=1,
            next_attempt_at=now + ATTEMPT_LEASE,
            updated_at=now,
        )
        if started:
            challenge.status, challenge.attempts = "processing", 1
            challenge.next_attempt_at = now + ATTEMPT_LEASE
            settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            _first_attempts[authorization.id] = settled
            task = _start(_first_attempt(challenge, authorization, owner, settled), challenge.id)
            task.add_done_callback(lambda _: _settled(authorization.id, settled))
            # The attempt writes its outcome into `challenge` too (_finish, _run_attempt).
            await settle([authorization.id], CHALLENGE_SETTLE_WAIT)
        else:
            await challenge.refresh_from_db()
    return ChallengeView(challenge, authorization)


def _start(work: Coroutine[Any, Any, None], challenge_id: uuid.UUID) -> asyncio.Task[None]:
    task = asyncio.create_task(work, name=f"acme-validate-{challenge_id}")
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def schedule_validation(challenge_id: uuid.UUID) -> asyncio.Task[None]:
    return _start(_validate_in_background(challenge_id), challenge_id)


async def _first_attempt(
    challenge: AcmeChallenge,
    authorization: AcmeAuthorization,
    account: AcmeAccount,
    settled: asyncio.Future[None],
) -> None:
    """The attempt respond_challenge claimed, then the later ones as the background task runs them."""
    try:
        wait = await _run_attempt(challenge, authorization, account, attempt=1, now=_now())
    except Exception:  # a bug or an outage: the lease runs out and the worker job retries the attempt
        log.exception("validation of ACME challenge %s failed unexpectedly", challenge.id)
        return
    finally:
        _settled(authorization.id, settled)
    if wait is not None:
        await asyncio.sleep(wait)
        await _validate_in_background(challenge.id)


def _settled(authorization_id: uuid.UUID, settled: asyncio.Future[None]) -> None:
    if _first_attempts.get(authorization_id) is settled:
        del _first_attempts[authorization_id]
    if not settled.done():
        settled.set_result(None)


async def settle(authorization_ids: Iterable[uuid.UUID], seconds: float = SETTLE_WAIT) -> bool:
    """Wait (at most `seconds`) for the first attempts this process is running on these authorizations;
    whether there were any. A poll that would answer `pending` a moment before the outcome is known
    answers with the outcome instead, and the client does not wait a polling interval for nothing."""
    running = [_first_attempts[value] for value in authorization_ids if value in _first_attempts]
    if not running:
        return False
    await asyncio.wait(running, timeout=seconds)
    return True


async def wait_for_validations() -> None:
    """Let this process's background validations finish (tests, orderly shutdown)."""
    while _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)


async def _validate_in_background(challenge_id: uuid.UUID) -> None:
    try:
        while True:
            wait = await attempt_validation(challenge_id)
            if wait is None:
                return
            await asyncio.sleep(wait)
    except Exception:  # a bug or an outage: the lease runs out and the worker job retries the attempt
        log.exception("validation of ACME challenge %s failed unexpectedly", challenge_id)


# ---------------------------------------------------------------- one attempt


async def attempt_validation(challenge_id: uuid.UUID) -> float | None:
    """Claim and run one attempt; seconds until the next one, or None when finished (or not ours)."""
    # The authorization and its account in the same read (one query, not three).
    loaded = await acme_sql.challenge_with_authorization(challenge_id)
    if loaded is None or loaded[0].status != "processing":
        return None
    challenge, authorization, account = loaded
    now = _now()
    attempt = challenge.attempts + 1
    # Claimed only when due and still at the attempt read: another validator that ran it meanwhile moved
    # the counter and the next attempt time, so an attempt never runs twice or early.
    claimed = await acme_sql.update_challenge(
        challenge.id,
        where={
            "status": "processing",
            "attempts": challenge.attempts,
            "next_attempt_at__lte": now + CLAIM_TOLERANCE,
        },
        attempts=attempt,
        next_attempt_at=now + ATTEMPT_LEASE,
        updated_at=now,
    )
    if not claimed:
        return None
    challenge.attempts = attempt
    return await _run_attempt(challenge, authorization, account, attempt=attempt, now=now)


async def _run_attempt(
    challenge: AcmeChallenge,
    authorization: AcmeAuthorization,
    account: AcmeAccount,
    *,
    attempt: int,
    now: datetime,
) -> float | None:
    """Run attempt `attempt`, already claimed; seconds until the next one, or None when finished."""
    status = authorization_status(authorization, now)
    if status != "pending":
        await _finish(
            challenge, authorization, error=problem_dict("malformed", f"the authorization is {status}")
        )
        return None
    key_authz = key_authorization(challenge.token, account.key_thumbprint)
    try:
        await check_challenge(
            challenge.type,
            identifier_type=authorization.identifier_type,
            identifier_value=authorization.identifier_value,
            token=challenge.token,
            key_authorization_text=key_authz,
        )
    except ValidationFailure as failure:
        error = problem_dict(failure.kind, failure.detail, identifier=_identifier(authorization))
        if attempt >= MAX_ATTEMPTS:
            await _finish(challenge, authorization, error=error)
            return None
        now = _now()
        changes = {
            "error": error,
            "next_attempt_at": now + timedelta(seconds=ATTEMPT_SPACING),
            "updated_at": now,
        }
        if await acme_sql.update_challenge(
            challenge.id, where={"status": "processing", "attempts": attempt}, **changes
        ):
            _assign(challenge, changes)
        return ATTEMPT_SPACING
    await _finish(challenge, authorization, error=None)
    return None


def _identifier(authorization: AcmeAuthorization) -> dict[str, Any]:
    return {"type": authorization.identifier_type, "value": authorization.identifier_value}


async def _finish(
    challenge: AcmeChallenge, authorization: AcmeAuthorization, *, error: dict[str, Any] | None
) -> None:
    """Valid (the authorization too, for 30 days) or invalid with the reason; one transaction."""
    now = _now()
    changes: dict[str, Any] = {"error": error, "next_attempt_at": None, "updated_at": now}
    if error is None:
        changes.update(status="valid", validated_at=now)
        authorization_changes = {"status": "valid", "expires_at": now + VALID_AUTHORIZATION_LIFETIME}
    else:
        changes.update(status="invalid")
        authorization_changes = {"status": "invalid"}
    steps = [
        acme_sql.update_challenge_step(challenge.id, where={"status": "processing"}, **changes),
        acme_sql.update_authorization_step(
            authorization.id, expected_status="pending", **authorization_changes, updated_at=now
        ),
    ]
    changed, _ = await acme_sql.run_steps(steps, transaction=True)
    if changed:
        _assign(challenge, changes)
    log.info(
        "ACME %s challenge for %s: %s",
        challenge.type,
        authorization.identifier_value,
        "valid" if error is None else f"invalid ({error.get('detail')})",
    )


def _assign(challenge: AcmeChallenge, changes: dict[str, Any]) -> None:
    """What an update wrote, onto the instance it was made from (the answer of respond_challenge)."""
    for field, value in changes.items():
        setattr(challenge, field, value)


async def validate_due(*, now: datetime | None = None, batch_size: int = 50) -> int:
    """Run one attempt of every processing challenge whose next attempt is due; the worker's job."""
    now = now or _now()
    async with in_transaction() as conn:
        rows = await (
            AcmeChallenge.filter(status="processing", next_attempt_at__lte=now)
            .select_for_update(skip_locked=True)
            .using_db(conn)
            .order_by("next_attempt_at")
            .limit(batch_size)
            .only("id")
        )
        ids = [row.id for row in rows]
    results = await asyncio.gather(*(attempt_validation(i) for i in ids), return_exceptions=True)
    for challenge_id, result in zip(ids, results, strict=True):
        if isinstance(result, BaseException):
            log.error("validation of ACME challenge %s failed unexpectedly: %r", challenge_id, result)
    return len(ids)


# ---------------------------------------------------------------- the checks


async def check_challenge(
    challenge_type: str,
    *,
    identifier_type: str,
    identifier_value: str,
    token: str,
    key_authorization_text: str,
) -> None:
    """Raise ValidationFailure unless the host proves control of the identifier."""
    if challenge_type == HTTP_01:
        await check_http01(identifier_type, identifier_value, token, key_authorization_text)
    elif challenge_type == DNS_01:
        await check_dns01(identifier_value, key_authorization_text)
    elif challenge_type == TLS_ALPN_01:
        await check_tls_alpn01(identifier_type, identifier_value, key_authorization_text)
    else:
        raise ValidationFailure("malformed", f"unknown challenge type {challenge_type}")


# One resolver per configured server, reused by every validation.
_resolvers: dict[tuple[str, int] | None, dns.asyncresolver.Resolver] = {}


def _resolver() -> dns.asyncresolver.Resolver:
    configured = runtime.settings().acme_dns_resolver
    resolver = _resolvers.get(configured)
    if resolver is not None:
        return resolver
    if configured is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [configured[0]]
        resolver.port = configured[1]
    resolver.lifetime = DNS_TIMEOUT
    resolver.timeout = DNS_TIMEOUT
    _resolvers[configured] = resolver
    return resolver


def _allowed(address: str) -> bool:
    return runtime.settings().acme_allow_private_identifiers or ipaddress.ip_address(address).is_global


async def resolve_addresses(host: str) -> list[str]:
    """A/AAAA of `host` (an IP literal stands for itself), loopback/private ones refused unless allowed."""
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = await _lookup(host)
    allowed = [address for address in addresses if _allowed(address)]
    if not allowed:
        raise ValidationFailure(
            "dns",
            f"{host} resolves only to loopback, private or reserved addresses ({', '.join(addresses)}), "
            "which are not validated here",
        )
    return allowed


async def _lookup(host: str) -> list[str]:
    configured = runtime.settings().acme_dns_resolver
    if configured is None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ValidationFailure("dns", f"no address found for {host}: {exc}") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
    # Both queries at once (core/dns_stub.py): a validation waits for one round trip, not two.
    try:
        answer = await dns_stub.lookup_addresses(host, configured, DNS_TIMEOUT)
    except dns_stub.NxDomain:
        raise ValidationFailure("dns", f"{host} does not exist (NXDOMAIN)") from None
    except dns_stub.InvalidName as exc:
        raise ValidationFailure("dns", f"no A or AAAA record found for {host} ({exc})") from None
    if answer.addresses:
        # IPv4 first: most validation targets that publish both still answer on IPv4.
        return answer.addresses
    # A failing or unreachable server adds no detail, as with dnspython (NoNameservers); a timeout does.
    errors = [
        f"{record_type}: {failure.__class__.__name__}"
        for record_type in ("AAAA", "A")
        if (failure := answer.failures.get(record_type)) is not None
        and not isinstance(failure, dns_stub.ServerFailure)
    ]
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise ValidationFailure("dns", f"no A or AAAA record found for {host}{detail}")


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def check_http01(identifier_type: str, identifier_value: str, token: str, key_authz: str) -> None:
    """GET http://{identifier}:{port}/.well-known/acme-challenge/{token}: the body is the key authz."""
    port = runtime.settings().acme_http01_port
    host = identifier_value if identifier_type == "dns" else str(ipaddress.ip_address(identifier_value))
    url = f"http://{_url_host(host)}:{port}{HTTP_01_PATH}{token}"
    body = await _http_get(url)
    if not http01_body_matches(body, key_authz):
        shown = body[:100].decode("utf-8", "replace")
        raise ValidationFailure(
            "incorrectResponse",
            f"the key authorization served at {url} is wrong: expected {key_authz!r}, got {shown!r}",
        )


async def _http_get(url: str) -> bytes:
    """Follow at most MAX_REDIRECTS redirects, connecting to the addresses resolved here."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationFailure("connection", f"cannot follow a redirect to {url}")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        addresses = await resolve_addresses(host)
        default_port = port == (443 if parts.scheme == "https" else 80)
        host_header = _url_host(host) + ("" if default_port else f":{port}")
        response_status, location, body = await _get_from_any(
            parts.scheme, addresses, port, path, host, host_header, url
        )
        if response_status in (301, 302, 303, 307, 308) and location:
            url = str(httpx.URL(url).join(location))
            continue
        if response_status != 200:
            raise ValidationFailure(
                "incorrectResponse",
                f"{url} answered HTTP {response_status}, not 200 with the key authorization",
            )
        return body
    raise ValidationFailure("connection", f"more than {MAX_REDIRECTS} redirects, last to {url}")


async def _get_from_any(
    scheme: str,
    addresses: list[str],
    port: int,
    path: str,
    host: str,
    host_header: str,
    url: str,
) -> tuple[int, str | None, bytes]:
    last: ValidationFailure | None = None
    for address in addresses:
        try:
            answer = await acme_fetch.fetch(
                scheme=scheme,
                address=address,
                port=port,
                path=path,
                host_header=host_header,
                server_name=host,
                seconds=HTTP_TIMEOUT,
                limit=MAX_HTTP_BODY,
            )
            return answer.status, answer.location, answer.body
        except TimeoutError:
            last = ValidationFailure("connection", f"timeout fetching {url} from {address}:{port}")
        except acme_fetch.FetchError as exc:
            if exc.too_large:
                raise ValidationFailure(
                    "incorrectResponse", f"{url} answered more than {MAX_HTTP_BODY} bytes"
                ) from None
            last = ValidationFailure("connection", f"cannot connect to {address}:{port} for {url}: {exc}")
    assert last is not None
    raise last


def _reason(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0] if text else exc.__class__.__name__


async def check_dns01(identifier_value: str, key_authz: str) -> None:
    """A TXT record at _acme-challenge.{name} holding base64url(SHA-256(key authorization))."""
    name = dns01_record_name(identifier_value)
    expected = dns01_txt_value(key_authz)
    try:
        answer = await _resolver().resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        raise ValidationFailure("dns", f"{name} does not exist (NXDOMAIN)") from None
    except dns.resolver.NoAnswer:
        raise ValidationFailure("incorrectResponse", f"no TXT record found at {name}") from None
    except dns.exception.DNSException as exc:
        raise ValidationFailure("dns", f"DNS lookup of TXT {name} failed: {exc.__class__.__name__}") from None
    values = [b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer]
    if expected not in values:
        raise ValidationFailure(
            "incorrectResponse",
            f"no TXT record at {name} holds the expected value {expected!r} ({len(values)} found)",
        )


async def check_tls_alpn01(identifier_type: str, identifier_value: str, key_authz: str) -> None:
    """TLS with ALPN acme-tls/1 and SNI; the certificate must carry the RFC 8737 acmeIdentifier."""
    port = runtime.settings().acme_tlsalpn01_port
    server_name = tls_alpn01_server_name(identifier_type, identifier_value)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # RFC 8737: a self-signed validation certificate, no chain
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
    last: ValidationFailure | None = None
    for address in await resolve_addresses(identifier_value):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port, ssl=context, server_hostname=server_name),
                timeout=TLS_TIMEOUT,
            )
        except ssl.SSLError as exc:
            last = ValidationFailure("tls", f"TLS handshake with {address}:{port} failed: {_reason(exc)}")
            continue
        except (OSError, TimeoutError) as exc:
            last = ValidationFailure("connection", f"cannot connect to {address}:{port}: {_reason(exc)}")
            continue
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            protocol = ssl_object.selected_alpn_protocol() if ssl_object else None
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), timeout=2)
            except (OSError, TimeoutError, ssl.SSLError):
                pass
        del reader
        if protocol != ACME_TLS_ALPN_PROTOCOL:
            raise ValidationFailure(
                "tls", f"{address}:{port} did not negotiate ALPN {ACME_TLS_ALPN_PROTOCOL} (got {protocol})"
            )
        if not der:
            raise ValidationFailure("tls", f"{address}:{port} presented no certificate")
        problem = check_tls_alpn01_certificate(
            der,
            identifier_type=identifier_type,
            identifier_value=identifier_value,
            key_authorization_text=key_authz,
        )
        if problem is not None:
            raise ValidationFailure("incorrectResponse", problem)
        return
    assert last is not None
    raise last
