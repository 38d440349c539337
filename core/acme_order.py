"""ACME orders (RFC 8555 §7.4–§7.6): identifiers, authorizations (reused while valid), finalize through the
one issuance path, certificate download and revocation. Every refusal is an AcmeProblem."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from core import acme_renewal, acme_sql, runtime
from core import certificate as certificate_service
from core.acme_account import acme_actor
from core.approval import ApprovalPending
from core.authz import Actor
from core.errors import (
    InvalidCsr,
    InvalidInput,
    InvalidState,
    KeywardError,
    NotFound,
    PolicyViolation,
)
from core.issuance import issue_certificate, policy_rules
from models import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeOrder,
    Application,
    Certificate,
    CertificateAuthority,
)
from models.application import ApplicationProfile
from models.enums import CaKind, CertificateStatus, EnrollmentMethod
from pki import csr as pki_csr
from pki import errors as pki_errors
from pki.acme.challenge import CHALLENGE_TYPES, challenge_types_for, jwk_matches_public_key, new_token
from pki.acme.problem import ERROR_NAMESPACE, AcmeProblem
from pki.key import KeyAlgorithm
from pki.policy import CertificateRequest, evaluate_policy
from pki.san import SubjectAltName, make_san

ORDER_LIFETIME = timedelta(days=7)
PENDING_AUTHORIZATION_LIFETIME = timedelta(days=7)
VALID_AUTHORIZATION_LIFETIME = timedelta(days=30)
# A valid authorization is reused only while it has at least this long left.
REUSE_MARGIN = timedelta(days=1)
MAX_IDENTIFIERS = 100
# Seconds a client should wait before polling a processing order or a pending authorization again.
RETRY_AFTER_SECONDS = 1
# RFC 5280 reason codes a subscriber may give (RFC 8555 §7.6); the CA-side ones are refused.
REVOCATION_REASON_CODES = {
    0: "unspecified",
    1: "keyCompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
}
_FINAL_AUTHZ = frozenset({"invalid", "deactivated", "expired", "revoked"})


@dataclass(frozen=True)
class Identifier:
    type: str  # dns | ip
    value: str  # as ordered: "*.example.com" for a wildcard

    @property
    def wildcard(self) -> bool:
        return self.type == "dns" and self.value.startswith("*.")

    @property
    def base(self) -> str:
        """What is validated: the name without its wildcard label."""
        return self.value[2:] if self.wildcard else self.value

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}

    def san(self) -> SubjectAltName:
        return SubjectAltName("DNS" if self.type == "dns" else "IP", self.value)


@dataclass
class AuthorizationView:
    authorization: AcmeAuthorization
    challenges: list[AcmeChallenge]
    status: str


@dataclass
class OrderView:
    order: AcmeOrder
    authorizations: list[AcmeAuthorization] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.order.status

    @property
    def identifiers(self) -> list[dict[str, str]]:
        return list(self.order.identifiers)


def _now() -> datetime:
    return datetime.now(UTC)


def _not_found(noun: str, value: object) -> AcmeProblem:
    return AcmeProblem("malformed", f"{noun} {value} not found", status=404)


def _unauthorized(noun: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", f"this {noun} belongs to another account", status=403)


def _parse_uuid(value: str, noun: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise _not_found(noun, value) from None


def _subproblem(kind: str, detail: str, identifier: dict[str, Any]) -> dict[str, Any]:
    return {"type": ERROR_NAMESPACE + kind, "detail": detail, "identifier": identifier}


def authorization_expiry_is_reusable(authorization: AcmeAuthorization, now: datetime) -> bool:
    return authorization.status == "valid" and authorization.expires_at > now + REUSE_MARGIN


# ---------------------------------------------------------------- identifiers


def _ip_is_private(value: str) -> bool:
    address = ipaddress.ip_address(value)
    return not address.is_global


def parse_identifiers(raw: Any) -> tuple[list[Identifier], list[dict[str, Any]]]:
    """Identifiers normalized (lower-case names, canonical IPs) and deduplicated; subproblems for bad ones."""
    if not isinstance(raw, list) or not raw:
        raise AcmeProblem("malformed", "the order needs a non-empty `identifiers` array")
    if len(raw) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"an order holds at most {MAX_IDENTIFIERS} identifiers")
    identifiers: list[Identifier] = []
    problems: list[dict[str, Any]] = []
    allow_private = runtime.settings().acme_allow_private_identifiers
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise AcmeProblem("malformed", "each identifier is an object with a `type` and a `value` string")
        kind, value = item["type"], item.get("value")
        shown = {"type": kind, "value": value if isinstance(value, str) else str(value)}
        if kind not in ("dns", "ip"):
            problems.append(
                _subproblem(
                    "unsupportedIdentifier",
                    f"identifier type {kind!r} is not supported (use dns or ip)",
                    shown,
                )
            )
            continue
        if not isinstance(value, str) or not value:
            raise AcmeProblem("malformed", f"identifier of type {kind!r} needs a `value` string")
        try:
            san = make_san(san_type="DNS" if kind == "dns" else "IP", value=value)
        except pki_errors.PkiError as exc:
            problems.append(_subproblem("rejectedIdentifier", exc.message, shown))
            continue
        if kind == "ip" and not allow_private and _ip_is_private(san.value):
            problems.append(
                _subproblem(
                    "rejectedIdentifier",
                    f"{san.value} is a loopback, private or reserved address; it cannot be validated here",
                    shown,
                )
            )
            continue
        identifier = Identifier(kind, san.value)
        if identifier not in identifiers:
            identifiers.append(identifier)
    return identifiers, problems


def _policy_problems(attachment: ApplicationProfile, identifiers: list[Identifier]) -> list[dict[str, Any]]:
    """Identifiers the profile's policy can never allow, whatever the CSR: denied or outside the allowlist."""
    try:
        rules = policy_rules(attachment.profile.policy)
    except InvalidState as exc:
        raise AcmeProblem("serverInternal", exc.message, status=500) from None
    request = CertificateRequest(
        subject=[],
        sans=[identifier.san() for identifier in identifiers],
        key_usages=frozenset(),
        extended_key_usages=frozenset(),
        key_algorithm=KeyAlgorithm.EC_P256,
        signature_algorithm="",
        validity=timedelta(0),
    )
    by_value = {identifier.value: identifier for identifier in identifiers}
    problems: list[dict[str, Any]] = []
    for violation in evaluate_policy(rules, request):
        if not violation.field.startswith("sans.") or violation.value not in by_value:
            continue
        problems.append(
            _subproblem("rejectedIdentifier", violation.message, by_value[violation.value].to_dict())
        )
    return problems


def _parse_time(payload: dict[str, Any], key: str) -> datetime | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AcmeProblem("malformed", f"`{key}` must be an RFC 3339 date-time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise AcmeProblem("malformed", f"`{key}` {value!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise AcmeProblem("malformed", f"`{key}` {value!r} needs a time zone (e.g. Z)")
    return moment.astimezone(UTC)


def _check_validity_window(
    attachment: ApplicationProfile, not_before: datetime | None, not_after: datetime | None, now: datetime
) -> None:
    if not_before is not None and not_before > now + timedelta(minutes=5):
        raise AcmeProblem("malformed", "a notBefore in the future is not supported; leave it out")
    if not_after is None:
        return
    if not_after <= now or (not_before is not None and not_after <= not_before):
        raise AcmeProblem("malformed", "notAfter must be in the future and after notBefore")
    rules = policy_rules(attachment.profile.policy)
    if rules.max_validity is not None and not_after - now > rules.max_validity + timedelta(minutes=5):
        maximum = rules.max_validity_text or str(rules.max_validity)
        raise AcmeProblem("malformed", f"notAfter is beyond the policy's maximum validity of {maximum}")


# ---------------------------------------------------------------- orders


def _reuse_values(identifiers: list[Identifier]) -> list[str]:
    return sorted({identifier.base for identifier in identifiers})


def prefetch_new_order(account_id: uuid.UUID, payload: Any) -> acme_sql.Prefetch | None:
    """The reusable authorizations new_order will look for, read with the request (from its unverified
    payload: new_order uses them only when the verified payload names the same identifiers)."""
    if not isinstance(payload, dict):
        return None
    try:
        identifiers, problems = parse_identifiers(payload.get("identifiers"))
    except AcmeProblem:
        return None
    if problems or not identifiers:
        return None
    values = _reuse_values(identifiers)
    return acme_sql.Prefetch(
        "reusable",
        (account_id, tuple(values)),
        [acme_sql.reusable_step(account_id, values, _now() + REUSE_MARGIN)],
        lambda results: acme_sql.reusable_from_rows(results[0]),
    )


def prefetch_order(order_id: str) -> acme_sql.Prefetch | None:
    """The order and its authorizations, read with the request. Only read: refresh_order stores a pending
    order as ready once, on the poll that first finds its authorizations valid; a promoting statement here
    was a write on every poll and finalize (on SQLite, a turn at the writer's lock each time)."""
    try:
        parsed = uuid.UUID(str(order_id))
    except ValueError:
        return None
    return acme_sql.Prefetch(
        "order",
        parsed,
        [acme_sql.order_step(parsed)],
        lambda results: acme_sql.order_from_rows(results[0]),
    )


def prefetch_authorization(authz_id: str) -> acme_sql.Prefetch | None:
    try:
        parsed = uuid.UUID(str(authz_id))
    except ValueError:
        return None
    return acme_sql.Prefetch(
        "authorization",
        parsed,
        [acme_sql.authorization_step(parsed)],
        lambda results: acme_sql.authorization_from_rows(results[0]),
    )


def prefetch_certificate(account_id: uuid.UUID, certificate_id: str) -> acme_sql.Prefetch | None:
    try:
        parsed = uuid.UUID(str(certificate_id))
    except ValueError:
        return None
    return acme_sql.Prefetch(
        "certificate",
        (account_id, parsed),
        [acme_sql.certificate_step(parsed, account_id)],
        lambda results: acme_sql.certificate_from_rows(results[0]),
    )


async def new_order(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount,
    payload: Any,
    prefetched: acme_sql.Prefetch | None = None,
) -> OrderView:
    """A pending order: this account's valid authorizations are reused, the others created with challenges."""
    if not isinstance(payload, dict):
        raise AcmeProblem("malformed", "newOrder needs a JSON object payload with `identifiers`")
    identifiers, problems = parse_identifiers(payload.get("identifiers"))
    if identifiers:
        problems += _policy_problems(attachment, identifiers)
    if problems:
        kinds = {problem["type"].removeprefix(ERROR_NAMESPACE) for problem in problems}
        kind = kinds.pop() if len(kinds) == 1 else "rejectedIdentifier"
        details = "; ".join(f"{p['identifier']['value']}: {p['detail']}" for p in problems)
        raise AcmeProblem(kind, f"the order cannot be accepted: {details}", subproblems=problems)
    now = _now()
    not_before, not_after = _parse_time(payload, "notBefore"), _parse_time(payload, "notAfter")
    _check_validity_window(attachment, not_before, not_after, now)
    replaced = None
    if payload.get("replaces") is not None:
        replaced = await acme_renewal.replaced_certificate(
            attachment=attachment,
            account=account,
            replaces=payload["replaces"],
            sans=[identifier.san() for identifier in identifiers],
        )

    reusable: dict[tuple[str, str, bool], AcmeAuthorization] = {}
    values = _reuse_values(identifiers)
    hit, candidates = acme_sql.take(prefetched, "reusable", (account.id, tuple(values)))
    if not hit:
        candidates = await acme_sql.reusable_authorizations(account.id, values, now + REUSE_MARGIN)
    for candidate in candidates:  # the latest expiry wins
        if not authorization_expiry_is_reusable(candidate, now):
            continue
        reusable[(candidate.identifier_type, candidate.identifier_value, candidate.wildcard)] = candidate

    authorizations: list[AcmeAuthorization] = []
    fresh: list[AcmeAuthorization] = []
    challenges: list[AcmeChallenge] = []
    for identifier in identifiers:
        found = reusable.get((identifier.type, identifier.base, identifier.wildcard))
        if found is not None:
            authorizations.append(found)
            continue
        authorization = AcmeAuthorization(
            id=uuid.uuid4(),
            account_id=account.id,
            identifier_type=identifier.type,
            identifier_value=identifier.base,
            wildcard=identifier.wildcard,
            status="pending",
            expires_at=now + PENDING_AUTHORIZATION_LIFETIME,
        )
        authorizations.append(authorization)
        fresh.append(authorization)
        for challenge_type in challenge_types_for(identifier.type, wildcard=identifier.wildcard):
            challenges.append(
                AcmeChallenge(
                    id=uuid.uuid4(),
                    authorization_id=authorization.id,
                    type=challenge_type,
                    token=new_token(),
                    status="pending",
                )
            )
    all_valid = all(authorization.status == "valid" for authorization in authorizations)
    order = AcmeOrder(
        id=uuid.uuid4(),
        account_id=account.id,
        status="ready" if all_valid else "pending",
        identifiers=[identifier.to_dict() for identifier in identifiers],
        authorization_ids=[str(authorization.id) for authorization in authorizations],
        not_before=not_before,
        not_after=not_after,
        expires_at=now + ORDER_LIFETIME,
        replaces=payload["replaces"] if replaced is not None else None,
        replaces_certificate_id=replaced.id if replaced is not None else None,
    )
    # One statement per table (authorizations, challenges, the order), all or nothing, in one trip.
    rows: list[list[Any]] = [fresh, challenges, [order]]
    inserts = [acme_sql.insert_step(part) for part in rows if part]
    if replaced is None:
        await acme_sql.run_steps(inserts, transaction=True)
    else:
        async with in_transaction() as connection:
            await acme_renewal.claim_replacement(replaced.id, payload["replaces"], now, connection)
            await acme_sql.run_steps(inserts)
    for part in rows:
        acme_sql.saved(part)
    return OrderView(order, authorizations)


def authorization_status(authorization: AcmeAuthorization, now: datetime) -> str:
    """The stored status, or `expired` once a pending or valid authorization passed its expiry."""
    if authorization.status in ("pending", "valid") and authorization.expires_at <= now:
        return "expired"
    return authorization.status


async def _expire_authorizations(authorizations: list[AcmeAuthorization], now: datetime) -> None:
    expired = [
        a for a in authorizations if a.status != "expired" and authorization_status(a, now) == "expired"
    ]
    if not expired:
        return
    await AcmeAuthorization.filter(id__in=[a.id for a in expired], status__in=["pending", "valid"]).update(
        status="expired", updated_at=now
    )
    for authorization in expired:
        authorization.status = "expired"


async def refresh_order(view: OrderView, now: datetime | None = None) -> OrderView:
    """Derive the order's status from its authorizations and expiry (RFC 8555 §7.1.6) and store it."""
    now = now or _now()
    order = view.order
    if order.status not in ("pending", "ready"):
        return view
    await _expire_authorizations(view.authorizations, now)
    error: dict[str, Any] | None = None
    if order.expires_at <= now:
        status = "invalid"
        error = AcmeProblem("malformed", "the order expired before it was finalized").to_dict()
    else:
        statuses = [authorization_status(a, now) for a in view.authorizations]
        failed = [s for s in statuses if s in _FINAL_AUTHZ]
        if failed or not statuses:
            status = "invalid"
            error = AcmeProblem(
                "unauthorized", f"an authorization of the order is {failed[0] if failed else 'missing'}"
            ).to_dict()
        elif all(s == "valid" for s in statuses):
            status = "ready"
        else:
            status = "pending"
    if status != order.status:
        await acme_sql.update_order(
            order.id, expected_status=order.status, status=status, error=error, updated_at=now
        )
        order.status, order.error = status, error
    return view


async def get_order(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount,
    order_id: str,
    prefetched: acme_sql.Prefetch | None = None,
) -> OrderView:
    """The account's own order with its current status; another account's order is `unauthorized`."""
    # The order and its authorizations in one query (a pending or ready order needs both).
    parsed = _parse_uuid(order_id, "order")
    hit, result = acme_sql.take(prefetched, "order", parsed)
    order, authorizations = result if hit else await acme_sql.order_with_authorizations(parsed)
    if order is None:
        raise _not_found("order", order_id)
    if order.account_id != account.id:
        raise _unauthorized("order")
    if order.status not in ("pending", "ready"):
        return OrderView(order)  # final or processing: its status no longer depends on the authorizations
    return await refresh_order(OrderView(order, authorizations))


# ---------------------------------------------------------------- authorizations


def _challenge_rank(challenge: AcmeChallenge) -> int:
    return (
        CHALLENGE_TYPES.index(challenge.type) if challenge.type in CHALLENGE_TYPES else len(CHALLENGE_TYPES)
    )


async def get_authorization(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount,
    authz_id: str,
    payload: Any = None,
    prefetched: acme_sql.Prefetch | None = None,
) -> AuthorizationView:
    """The account's own authorization; {"status": "deactivated"} deactivates it (RFC 8555 §7.5.2)."""
    parsed = _parse_uuid(authz_id, "authorization")
    # One query for the authorization and its challenges.
    hit, result = acme_sql.take(prefetched, "authorization", parsed)
    authorization, challenges = result if hit else await acme_sql.authorization_with_challenges(parsed)
    if authorization is None:
        raise _not_found("authorization", authz_id)
    if authorization.account_id != account.id:
        raise _unauthorized("authorization")
    now = _now()
    if payload:
        if not isinstance(payload, dict) or payload.get("status") != "deactivated" or len(payload) != 1:
            raise AcmeProblem("malformed", 'an authorization update may only be {"status": "deactivated"}')
        if authorization_status(authorization, now) not in ("pending", "valid"):
            raise AcmeProblem(
                "malformed", f"the authorization is {authorization_status(authorization, now)}; it stays so"
            )
        await AcmeAuthorization.filter(id=authorization.id, status__in=["pending", "valid"]).update(
            status="deactivated", updated_at=now
        )
        authorization.status = "deactivated"
    await _expire_authorizations([authorization], now)
    return AuthorizationView(authorization, sorted(challenges, key=_challenge_rank), authorization.status)


# ---------------------------------------------------------------- finalize


def _decode_b64url(value: Any, what: str, kind: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise AcmeProblem("malformed", f"`{what}` must be a base64url string")
    text = value.strip()
    if "=" in text.rstrip("=") or any(char in text for char in "+/ \n"):
        raise AcmeProblem(kind, f"`{what}` is not base64url (RFC 4648 §5, no padding)")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise AcmeProblem(kind, f"`{what}` is not base64url") from None


def _identifier_of(san: SubjectAltName) -> Identifier | None:
    if san.type == "DNS":
        return Identifier("dns", san.value)
    if san.type == "IP":
        return Identifier("ip", san.value)
    return None


def check_csr_names(csr_info: pki_csr.CsrInfo, identifiers: list[Identifier]) -> None:
    """The CSR's SANs are exactly the order's identifiers; a CN, if any, is one of them (RFC 8555 §7.4)."""
    expected = set(identifiers)
    requested: set[Identifier] = set()
    for san in csr_info.sans:
        identifier = _identifier_of(san)
        if identifier is None:
            raise AcmeProblem("badCSR", f"the CSR asks for a {san.type} name ({san.value}); only DNS and IP")
        requested.add(identifier)
    common_names = [value for attribute_type, value in csr_info.subject if attribute_type == "CN"]
    if len(common_names) > 1:
        raise AcmeProblem("badCSR", "the CSR has more than one common name")
    cn_identifier: Identifier | None = None
    if common_names:
        try:
            cn_san = make_san(san_type="IP", value=common_names[0])
        except pki_errors.PkiError:
            try:
                cn_san = make_san(san_type="DNS", value=common_names[0])
            except pki_errors.PkiError:
                raise AcmeProblem(
                    "badCSR",
                    f"the CSR's common name {common_names[0]!r} is not one of the order's identifiers",
                ) from None
        cn_identifier = _identifier_of(cn_san)
        if cn_identifier not in expected:
            raise AcmeProblem(
                "badCSR", f"the CSR's common name {common_names[0]!r} is not one of the order's identifiers"
            )
    if not requested and cn_identifier is not None:
        requested = {cn_identifier}  # a CSR without SANs: its CN becomes the one SAN (issuance does so)
    if requested != expected:
        missing = sorted(i.value for i in expected - requested)
        extra = sorted(i.value for i in requested - expected)
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"not in the order: {', '.join(extra)}")
        raise AcmeProblem("badCSR", f"the CSR must name exactly the order's identifiers ({'; '.join(parts)})")


def _issuance_problem(error: KeywardError) -> AcmeProblem:
    if isinstance(error, PolicyViolation):
        violations = error.details.get("violations") or []
        names = [v for v in violations if str(v.get("field", "")).startswith(("sans.", "subject.CN"))]
        if names:
            subproblems = [
                _subproblem(
                    "rejectedIdentifier",
                    str(v.get("message")),
                    {"type": "ip" if v.get("field") == "sans.IP" else "dns", "value": str(v.get("value"))},
                )
                for v in names
                if v.get("value")
            ]
            return AcmeProblem("rejectedIdentifier", error.message, subproblems=subproblems or None)
        return AcmeProblem("badCSR", error.message)
    if isinstance(error, InvalidCsr | InvalidInput):
        return AcmeProblem("badCSR", error.message)
    if isinstance(error, InvalidState | NotFound):
        return AcmeProblem("unauthorized", error.message, status=403)
    return AcmeProblem("serverInternal", error.message, status=500)


async def _application_of(attachment: ApplicationProfile) -> Application:
    loaded = getattr(attachment, "_application", None)  # set when the application was fetched with it
    if isinstance(loaded, Application):
        return loaded
    return await Application.get(id=attachment.application_id)


async def finalize_order(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount,
    order_id: str,
    payload: Any,
    prefetched: acme_sql.Prefetch | None = None,
) -> OrderView:
    """Issue the order's certificate from the client's CSR through core.issuance; refusals issue nothing."""
    view = await get_order(attachment=attachment, account=account, order_id=order_id, prefetched=prefetched)
    order = view.order
    if order.status != "ready":
        raise AcmeProblem(
            "orderNotReady",
            f"the order is {order.status}; it can be finalized once every authorization is valid (ready)",
            status=403,
        )
    if not isinstance(payload, dict):
        raise AcmeProblem("malformed", "finalize needs a JSON object payload with `csr`")
    der = _decode_b64url(payload.get("csr"), "csr", "badCSR")
    try:
        csr_info = pki_csr.parse_csr(der)
    except pki_errors.PkiError as exc:
        raise AcmeProblem("badCSR", f"the CSR cannot be used: {exc.message}") from None
    identifiers = [Identifier(item["type"], item["value"]) for item in order.identifiers]
    check_csr_names(csr_info, identifiers)
    validity: timedelta | None = None
    now = _now()
    if order.not_after is not None:
        validity = order.not_after - now
        if validity <= timedelta(0):
            raise AcmeProblem("malformed", "the order's notAfter has passed; place a new order")
    # Ready -> processing exactly once: of two concurrent finalizes, one issues.
    claimed = await acme_sql.update_order(
        order.id, expected_status="ready", status="processing", updated_at=now
    )
    if claimed == 0:
        raise AcmeProblem("orderNotReady", "the order is already being finalized", status=403)
    order.status = "processing"

    async def mark_valid(certificate: Certificate, conn: BaseDBAsyncClient) -> None:
        # In the issuing transaction: the order is valid exactly when its certificate exists.
        await acme_sql.update_order(
            order.id,
            expected_status="processing",
            using=conn,
            status="valid",
            certificate_id=certificate.id,
            updated_at=_now(),
        )

    try:
        application = await _application_of(attachment)
        certificate = await issue_certificate(
            actor=acme_actor(account, attachment),
            application_id=attachment.application_id,
            profile_id=attachment.profile_id,
            csr=der,
            validity=validity,
            enrollment_method=EnrollmentMethod.ACME,
            application=application,
            after_insert=mark_valid,
            attachment=attachment,
            approval_correlation=str(order.id),
            parsed_csr=csr_info,
            replaces_certificate_id=order.replaces_certificate_id,  # RFC 9773: it renews that one
        )
    except ApprovalPending:
        # Held by an approval policy: the order stays processing until core.approval decides it.
        return view
    except BaseException as exc:
        await AcmeOrder.filter(id=order.id, status="processing").update(status="ready", updated_at=_now())
        order.status = "ready"
        if isinstance(exc, KeywardError):
            raise _issuance_problem(exc) from None
        raise
    order.status, order.certificate_id = "valid", certificate.id
    return view


# ---------------------------------------------------------------- certificates


async def _ordered_certificate(
    account: AcmeAccount, certificate_id: str, prefetched: acme_sql.Prefetch | None = None
) -> Certificate:
    parsed = _parse_uuid(certificate_id, "certificate")
    # The usual case in one query: the certificate with an order of this account.
    hit, owned = acme_sql.take(prefetched, "certificate", (account.id, parsed))
    if not hit:
        owned = await acme_sql.ordered_certificate(parsed, account.id)
    if owned is not None:
        return owned
    if not await AcmeOrder.filter(account_id=account.id, certificate_id=parsed).exists():
        if await AcmeOrder.filter(certificate_id=parsed).exists():
            raise _unauthorized("certificate")
        raise _not_found("certificate", certificate_id)
    certificate = await Certificate.get_or_none(id=parsed)
    if certificate is None:
        raise _not_found("certificate", certificate_id)
    return certificate


async def _issuing_root_pem(attachment: ApplicationProfile, certificate: Certificate) -> str:
    """The root CA that signed a certificate itself, PEM (certbot wants at least one issuer in the chain)."""
    profile = attachment.profile
    ca = getattr(profile, "_ca", None) if profile.ca_id == certificate.ca_id else None
    if not isinstance(ca, CertificateAuthority):
        ca = await CertificateAuthority.get_or_none(id=certificate.ca_id)
    if ca is None or not ca.certificate_pem or CaKind(ca.kind) != CaKind.ROOT:
        return ""
    return ca.certificate_pem if ca.certificate_pem.endswith("\n") else ca.certificate_pem + "\n"


async def certificate_chain(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount,
    certificate_id: str,
    prefetched: acme_sql.Prefetch | None = None,
) -> str:
    """PEM of the leaf then its issuers up to, not including, the root (RFC 8555 §7.4.2); a leaf that a
    root signed itself comes with that root, the one issuer there is (legacy projects often have no
    intermediate)."""
    certificate = await _ordered_certificate(account, certificate_id, prefetched)
    chain = certificate.chain_pem or ""
    if not chain.strip():
        chain = await _issuing_root_pem(attachment, certificate)
    leaf = (
        certificate.certificate_pem
        if certificate.certificate_pem.endswith("\n")
        else certificate.certificate_pem + "\n"
    )
    return leaf + chain


async def revoke_certificate(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount | None,
    jwk: dict[str, Any] | None,
    payload: Any,
) -> Certificate:
    """Revoke for the account that ordered it or the holder of its key, through the one revocation path."""
    if not isinstance(payload, dict):
        raise AcmeProblem("malformed", "revokeCert needs a JSON object payload with `certificate`")
    der = _decode_b64url(payload.get("certificate"), "certificate", "malformed")
    reason_code = payload.get("reason", 0)
    if isinstance(reason_code, bool) or not isinstance(reason_code, int):
        raise AcmeProblem("badRevocationReason", "`reason` must be an RFC 5280 reason code (an integer)")
    if reason_code not in REVOCATION_REASON_CODES:
        allowed = ", ".join(f"{code} ({name})" for code, name in REVOCATION_REASON_CODES.items())
        raise AcmeProblem("badRevocationReason", f"reason code {reason_code} is not accepted; use {allowed}")
    try:
        presented = x509.load_der_x509_certificate(der)
    except ValueError:
        raise AcmeProblem("malformed", "`certificate` is not a DER X.509 certificate") from None
    fingerprint = hashlib.sha256(der).hexdigest()
    row = await Certificate.get_or_none(
        application_id=attachment.application_id, fingerprint_sha256=fingerprint
    )
    if row is None:
        raise AcmeProblem("malformed", "this certificate was not issued by this directory", status=404)
    application = await _application_of(attachment)
    actor: Actor
    if account is not None:
        if not await AcmeOrder.filter(account_id=account.id, certificate_id=row.id).exists():
            raise AcmeProblem(
                "unauthorized",
                "this account did not order the certificate; sign with the account that did or with its key",
                status=403,
            )
        actor = acme_actor(account, attachment)
    elif jwk is not None:
        if not jwk_matches_public_key(jwk, presented.public_key()):
            raise AcmeProblem(
                "unauthorized",
                "the request is signed neither by an account nor by the certificate's key",
                status=403,
            )
        actor = Actor.system(application.organization_id, f"acme:certificate-key:{row.serial_hex}")
    else:
        raise AcmeProblem(
            "malformed", "revokeCert must be signed by an account (kid) or the certificate's key"
        )
    if CertificateStatus(row.status) == CertificateStatus.REVOKED:
        raise AcmeProblem("alreadyRevoked", f"certificate {row.serial_hex} is already revoked")
    try:
        return await certificate_service.revoke_certificate(
            actor=actor, certificate_id=row.id, reason=REVOCATION_REASON_CODES[reason_code]
        )
    except InvalidState:
        raise AcmeProblem("alreadyRevoked", f"certificate {row.serial_hex} is already revoked") from None
    except KeywardError as exc:
        raise AcmeProblem("unauthorized", exc.message, status=403) from None
