"""pki.acme.ari: RFC 9773 certificate identifiers (as certbot's own acme library builds them) and windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from acme.client import _renewal_info_path_component
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pki.acme.ari import CertId, cert_id_of, parse_cert_id, suggested_window
from pki.acme.problem import AcmeProblem

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def _certificate(serial: int, *, with_aki: bool = True) -> x509.Certificate:
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ari.example.com")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=90))
    )
    if with_aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 0x8000, 0x1234_5678_9ABC, (1 << 159) - 1, 1 << 158])
def test_identifiers_match_what_certbot_asks_for(serial: int) -> None:
    """Serials whose top bit is set take a leading zero octet (a DER INTEGER is signed): both sides agree."""
    certificate = _certificate(serial)
    ours = cert_id_of(certificate)
    assert ours is not None
    assert str(ours) == _renewal_info_path_component(certificate)
    assert parse_cert_id(str(ours)) == ours == CertId(ours.key_identifier, serial)


def test_a_certificate_without_an_authority_key_identifier_has_none() -> None:
    assert cert_id_of(_certificate(42, with_aki=False)) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "onlyonepart",
        "a.b.c",
        ".AQ",  # no key identifier
        "AQ.",  # no serial
        "AQ==.AQ",  # padded
        "A+/.AQ",  # base64, not base64url
        "AQ.gA",  # 0x80 alone: a negative INTEGER
        "AQ.AA",  # zero
        "A." + "Q" * 600,  # absurdly long
    ],
)
def test_malformed_identifiers_are_malformed_problems(text: str) -> None:
    with pytest.raises(AcmeProblem) as caught:
        parse_cert_id(text)
    assert (caught.value.kind, caught.value.status) == ("malformed", 400)


def test_the_window_ends_when_the_certificate_is_due_and_spreads_over_a_thirtieth_of_its_life() -> None:
    not_before, not_after = NOW, NOW + timedelta(days=90)
    due = not_after - timedelta(days=30)
    start, end = suggested_window(
        not_before=not_before, not_after=not_after, renew_at=due, replace_now=False, now=NOW
    )
    assert (start, end) == (due - timedelta(days=3), due)
    # Never past the expiry, whatever the renewal point says.
    late = suggested_window(
        not_before=not_before,
        not_after=not_after,
        renew_at=not_after + timedelta(days=1),
        replace_now=False,
        now=NOW,
    )
    assert late[1] == not_after and late[0] < late[1]


def test_a_certificate_to_replace_now_gets_a_window_already_past() -> None:
    start, end = suggested_window(
        not_before=NOW, not_after=NOW + timedelta(days=90), renew_at=NOW, replace_now=True, now=NOW
    )
    assert start < end < NOW
