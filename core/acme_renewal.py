"""ACME Renewal Information (RFC 9773): when to renew a directory's certificates, and orders that replace one.

The renewal window ends when the certificate is due under its own renew-before days (the profile's policy,
as the worker applies it to server-held keys); a revoked certificate's window has already passed, so ARI
clients (certbot's `renew`, lego) replace it at once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from core.issuance import renewal_point
from models import AcmeAccount, AcmeOrder, Certificate, CertificateAuthority
from models.application import ApplicationProfile
from models.enums import CertificateStatus
from pki.acme.ari import CertId, cert_id_of, parse_cert_id, suggested_window
from pki.acme.problem import AcmeProblem
from pki.acme.timestamp import rfc3339
from pki.certificate import serial_hex
from pki.san import SubjectAltName, san_keys


async def find_certificate(attachment: ApplicationProfile, cert_id: CertId) -> Certificate | None:
    """The certificate of this directory (its application and profile) that `cert_id` names.

    Looked up by serial under each of the organization's CAs (the unique index on CA and serial), then
    matched on the issuer key identifier the certificate itself carries."""
    ca_ids = await CertificateAuthority.filter(
        organization_id=attachment.application.organization_id
    ).values_list("id", flat=True)
    candidates = await Certificate.filter(
        ca_id__in=list(ca_ids),
        serial_hex=serial_hex(cert_id.serial),
        application_id=attachment.application_id,
        profile_id=attachment.profile_id,
    )
    for candidate in candidates:
        if cert_id_of(x509.load_pem_x509_certificate(candidate.certificate_pem.encode())) == cert_id:
            return candidate
    return None


async def _named_certificate(attachment: ApplicationProfile, text: str) -> Certificate:
    """The certificate a client's identifier names; malformed, or not found (404), otherwise."""
    certificate = await find_certificate(attachment, parse_cert_id(text))
    if certificate is None:
        raise AcmeProblem("malformed", f"no certificate {text} was issued by this directory", status=404)
    return certificate


async def renewal_info(
    attachment: ApplicationProfile, text: str, now: datetime | None = None
) -> dict[str, Any]:
    """RFC 9773 §4.2 RenewalInfo object for the certificate `text` names."""
    certificate = await _named_certificate(attachment, text)
    start, end = suggested_window(
        not_before=certificate.not_before,
        not_after=certificate.not_after,
        renew_at=renewal_point(
            not_before=certificate.not_before,
            not_after=certificate.not_after,
            renew_before_days=certificate.renew_before_days,
        ),
        replace_now=certificate.status == CertificateStatus.REVOKED,
        now=now or datetime.now(UTC),
    )
    return {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}


async def replaced_certificate(
    *,
    attachment: ApplicationProfile,
    account: AcmeAccount,
    replaces: Any,
    sans: list[SubjectAltName],
) -> Certificate:
    """The certificate a new order's `replaces` names (RFC 9773 §5), checked: issued here to this account
    and sharing an identifier with the order. That no other live order replaces it is claim_replacement's
    check, in the transaction that stores the order."""
    if not isinstance(replaces, str):
        raise AcmeProblem("malformed", "`replaces` must be a certificate identifier string")
    certificate = await _named_certificate(attachment, replaces)
    if not await AcmeOrder.exists(certificate_id=certificate.id, account_id=account.id):
        raise AcmeProblem(
            "unauthorized", f"certificate {replaces} was not issued to this account", status=403
        )
    held = [SubjectAltName(item["type"], item["value"]) for item in certificate.sans]
    if not san_keys(sans) & san_keys(held):
        raise AcmeProblem("malformed", f"this order shares no identifier with certificate {replaces}")
    return certificate


async def claim_replacement(
    certificate_id: uuid.UUID, replaces: str, now: datetime, connection: BaseDBAsyncClient
) -> None:
    """In the transaction storing an order that replaces the certificate: refuse it when another live order
    already does. The certificate's row is locked first on PostgreSQL, so of two orders racing to replace
    it the second waits and then sees the first; SQLite's transactions (IMMEDIATE) run one at a time."""
    if connection.capabilities.dialect == "postgres":
        lock = f'SELECT 1 FROM "{Certificate._meta.db_table}" WHERE "id" = $1 FOR UPDATE'
        await connection.execute_query(lock, [certificate_id])
    live = Q(status="valid") | Q(status__in=["pending", "ready", "processing"], expires_at__gt=now)
    if await AcmeOrder.filter(live, replaces_certificate_id=certificate_id).using_db(connection).exists():
        raise AcmeProblem(
            "alreadyReplaced", f"another order already replaces certificate {replaces}", status=409
        )
