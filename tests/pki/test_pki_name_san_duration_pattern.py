from datetime import timedelta

import pytest
from cryptography import x509

from pki.duration import format_duration, parse_duration
from pki.errors import InvalidDuration, InvalidPolicy, PkiError
from pki.name import build_name, format_name, name_pairs, parse_dn
from pki.pattern import match_ip, match_pattern, match_uri_pattern
from pki.san import SubjectAltName, classify_name, from_extension, parse_san, to_general_names


def test_build_name_round_trip() -> None:
    pairs = [("C", "US"), ("ST", "CA"), ("L", "SF"), ("O", "Acme, Inc."), ("OU", "Ops"), ("CN", "host")]
    name = build_name(pairs)
    assert name_pairs(name) == pairs
    assert format_name(name) == "CN=host,OU=Ops,O=Acme\\, Inc.,L=SF,ST=CA,C=US"
    assert parse_dn(format_name(name)) == pairs
    assert parse_dn("/C=US/ST=CA/L=SF/O=Acme, Inc./OU=Ops/CN=host") == pairs


@pytest.mark.parametrize(
    "pairs",
    [[("C", "USA")], [("C", "1A")], [("emailAddress", "x@y")], [("CN", "")], [("CN", "x" * 65)]],
)
def test_build_name_rejects(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(PkiError):
        build_name(pairs)


def test_parse_dn_errors() -> None:
    assert parse_dn("") == []
    assert parse_dn("cn=x, o=y") == [("O", "y"), ("CN", "x")]
    for bad in ("CN", "CN=x,,O=y", "FOO=bar", "C=Germany"):
        with pytest.raises(PkiError):
            parse_dn(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DNS:A.Example.com", SubjectAltName("DNS", "a.example.com")),
        ("dns:*.example.com", SubjectAltName("DNS", "*.example.com")),
        ("IP:10.0.0.1", SubjectAltName("IP", "10.0.0.1")),
        ("IP:2001:DB8::1", SubjectAltName("IP", "2001:db8::1")),
        ("EMAIL:x@Example.com", SubjectAltName("EMAIL", "x@example.com")),
        ("URI:https://example.com/a:b", SubjectAltName("URI", "https://example.com/a:b")),
        ("10.1.2.3", SubjectAltName("IP", "10.1.2.3")),
        ("::1", SubjectAltName("IP", "::1")),
        ("host.example.com", SubjectAltName("DNS", "host.example.com")),
        ("localhost", SubjectAltName("DNS", "localhost")),
    ],
)
def test_parse_san(text: str, expected: SubjectAltName) -> None:
    assert parse_san(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        "a.*.example.com",
        "*a.example.com",
        "**.example.com",
        "*",
        "a..example.com",
        ".example.com",
        "a_b.example.com",
        "-a.example.com",
        "exa mple.com",
        "ex\u00e4mple.com",
        "10.0.0.256",
        "a" * 64 + ".com",
    ],
)
def test_classify_name_rejects_bad_dns(value: str) -> None:
    with pytest.raises(PkiError):
        classify_name(value)


def test_ip_never_goes_in_dns() -> None:
    assert classify_name("192.168.1.1").type == "IP"
    with pytest.raises(PkiError, match="IP SAN"):
        parse_san("DNS:192.168.1.1")


def test_general_names_round_trip() -> None:
    sans = [parse_san(s) for s in ("DNS:a.example.com", "IP:10.0.0.1", "EMAIL:x@y.com", "URI:spiffe://x/y")]
    names = to_general_names(sans + sans[:1])
    assert len(names) == 4
    assert isinstance(names[1], x509.IPAddress)
    ext = x509.SubjectAlternativeName(names)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(ext, critical=True)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    assert from_extension(csr) == sans


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12m", timedelta(days=360)),
        ("1y", timedelta(days=365)),
        ("24h", timedelta(hours=24)),
        (" 2Y ", timedelta(days=730)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "d", "0d", "1.5d", "-1d", "30s", "1w", "1 d", "P90D", "90days"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidDuration, match="24h, 90d, 12m, 1y"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(days=365)) == "1y"
    assert format_duration(timedelta(days=90)) == "90d"
    assert format_duration(timedelta(hours=36)) == "36h"
    assert parse_duration(format_duration(timedelta(days=360))) == timedelta(days=360)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "A.EXAMPLE.COM", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("*.example.com", "*.example.com", True),
        ("*.example.com", "*.b.example.com", False),
        ("*.example.com", "aexample.com", False),
        ("*.example.com", "a.example.com.evil.com", False),
        ("**.example.com", "a.example.com", True),
        ("**.example.com", "a.b.c.example.com", True),
        ("**.example.com", "*.b.example.com", True),
        ("**.example.com", "example.com", False),
        ("**.example.com", "badexample.com", False),
        ("example.com", "example.com", True),
        ("example.com", "exampleXcom", False),
        ("web-*.example.com", "web-01.example.com", True),
        ("web*", "web", True),
        ("*@example.com", "alice@example.com", True),
        ("*@example.com", "alice@sub.example.com", False),
        ("*@**.example.com", "alice@sub.example.com", True),
        ("Acme *", "Acme Corp", True),
    ],
)
def test_match_pattern(pattern: str, value: str, expected: bool) -> None:
    assert match_pattern(pattern, value) is expected


def test_match_uri_pattern() -> None:
    assert match_uri_pattern("spiffe://example.com/*", "spiffe://example.com/web")
    assert not match_uri_pattern("spiffe://example.com/*", "spiffe://example.com/web/x")
    assert match_uri_pattern("spiffe://example.com/**", "spiffe://example.com/web/x")


def test_match_ip() -> None:
    assert match_ip("10.0.0.0/8", "10.20.30.40")
    assert not match_ip("10.0.0.0/8", "11.0.0.1")
    assert match_ip("192.168.1.1", "192.168.1.1")
    assert not match_ip("192.168.1.1", "192.168.1.2")
    assert match_ip("2001:db8::/32", "2001:db8::1")
    assert not match_ip("0.0.0.0/0", "::1")
    assert not match_ip("10.0.0.0/8", "not-an-ip")
    with pytest.raises(InvalidPolicy):
        match_ip("10.0.0.0/33", "10.0.0.1")
    with pytest.raises(InvalidPolicy):
        match_pattern("***.example.com", "a.example.com")
