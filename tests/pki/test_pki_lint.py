"""Every certificate we build passes pkilint's RFC 5280 linter without ERROR or FATAL findings."""

from collections.abc import Callable

import pytest
from pki_support import BLOCKING_SEVERITIES, URLS, Hierarchy, cached_key, lint_certificate

from pki.certificate import sign_leaf_certificate
from pki.key import KeyAlgorithm
from pki.name import build_name
from pki.san import SubjectAltName

RSA = (KeyAlgorithm.RSA_2048, KeyAlgorithm.RSA_3072, KeyAlgorithm.RSA_4096)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_pkilint_hierarchy(
    algorithm: KeyAlgorithm, hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]
) -> None:
    h = hierarchy_for(algorithm)
    blocking = []
    for role, cert in (("root", h.root), ("intermediate", h.intermediate), ("leaf", h.leaf)):
        for severity, code, message in lint_certificate(cert):
            print(f"{algorithm.value} {role}: {severity} {code} {message or ''}")
            if severity in BLOCKING_SEVERITIES:
                blocking.append((role, code, message))
    assert blocking == []


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048, KeyAlgorithm.ED25519])
def test_pkilint_empty_subject_leaf(
    algorithm: KeyAlgorithm, hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]
) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P384)
    leaf = sign_leaf_certificate(
        issuer_cert=h.intermediate,
        issuer_key=h.intermediate_key,
        public_key=cached_key(algorithm, "leaf").public_key(),
        subject=build_name([]),
        sans=[
            SubjectAltName("DNS", "a.example.com"),
            SubjectAltName("IP", "10.0.0.1"),
            SubjectAltName("EMAIL", "x@example.com"),
            SubjectAltName("URI", "https://example.com/web"),
        ],
        key_usages=frozenset(),
        extended_key_usages=frozenset({"serverAuth", "clientAuth"}),
        not_after=h.intermediate.not_valid_after_utc,
        urls=URLS,
    )
    findings = lint_certificate(leaf)
    for finding in findings:
        print(algorithm.value, "empty-subject leaf:", *finding)
    assert [f for f in findings if f[0] in BLOCKING_SEVERITIES] == []


def test_pkilint_wildcard_leaf_only_flags_the_wildcard(
    hierarchy_for: Callable[[KeyAlgorithm], Hierarchy],
) -> None:
    """RFC 5280 preferred name syntax has no wildcards: pkilint flags the `*.` name and nothing else."""
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    leaf = sign_leaf_certificate(
        issuer_cert=h.intermediate,
        issuer_key=h.intermediate_key,
        public_key=cached_key(KeyAlgorithm.EC_P256, "leaf").public_key(),
        subject=build_name([("CN", "*.api.example.com")]),
        sans=[SubjectAltName("DNS", "*.api.example.com"), SubjectAltName("DNS", "api.example.com")],
        key_usages=frozenset(),
        extended_key_usages=frozenset({"serverAuth"}),
        not_after=h.intermediate.not_valid_after_utc,
        urls=URLS,
    )
    blocking = [f for f in lint_certificate(leaf) if f[0] in BLOCKING_SEVERITIES]
    assert blocking == [
        ("ERROR", "pkix.invalid_domain_name_syntax", 'Invalid domain name syntax: "*.api.example.com"')
    ]
