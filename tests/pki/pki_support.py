"""Helpers for pki tests: keys generated once per run (RSA-4096 is slow), CA hierarchies, pkilint."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkilint import loader
from pkilint.pkix import certificate as pkilint_certificate
from pkilint.pkix import extension as pkilint_extension
from pkilint.pkix import name as pkilint_name
from pkilint.validation import ValidationFindingSeverity

from pki.certificate import IssuerUrls, build_root_ca, sign_ca_certificate, sign_leaf_certificate
from pki.key import KeyAlgorithm, PrivateKey, generate_private_key
from pki.name import build_name
from pki.san import SubjectAltName

URLS = IssuerUrls(
    ca_issuers="http://pki.example.com/ca/test.crt",
    ocsp="http://pki.example.com/ocsp/test",
    crl="http://pki.example.com/crl/test.crl",
)
_KEYS: dict[tuple[KeyAlgorithm, str], PrivateKey] = {}


def cached_key(algorithm: KeyAlgorithm, role: str = "default") -> PrivateKey:
    """One key per (algorithm, role) for the whole run."""
    if (algorithm, role) not in _KEYS:
        _KEYS[(algorithm, role)] = generate_private_key(algorithm)
    return _KEYS[(algorithm, role)]


@dataclass
class Hierarchy:
    root: x509.Certificate
    root_key: PrivateKey
    intermediate: x509.Certificate
    intermediate_key: PrivateKey
    leaf: x509.Certificate
    leaf_key: PrivateKey


def build_hierarchy(algorithm: KeyAlgorithm, *, leaf_algorithm: KeyAlgorithm | None = None) -> Hierarchy:
    """Root → intermediate → leaf (DNS SANs, serverAuth), all keys of `algorithm` unless told otherwise."""
    now = datetime.now(UTC)
    root_key = cached_key(algorithm, "root")
    root = build_root_ca(
        key=root_key,
        subject=build_name([("C", "US"), ("O", "Keyward Test"), ("CN", f"Root {algorithm.value}")]),
        not_after=now + timedelta(days=3650),
        path_length=None,
    )
    intermediate_key = cached_key(algorithm, "intermediate")
    intermediate = sign_ca_certificate(
        issuer_cert=root,
        issuer_key=root_key,
        public_key=intermediate_key.public_key(),
        subject=build_name([("C", "US"), ("O", "Keyward Test"), ("CN", f"Intermediate {algorithm.value}")]),
        not_after=now + timedelta(days=1825),
        path_length=0,
        urls=URLS,
    )
    leaf_key = cached_key(leaf_algorithm or algorithm, "leaf")
    leaf = sign_leaf_certificate(
        issuer_cert=intermediate,
        issuer_key=intermediate_key,
        public_key=leaf_key.public_key(),
        subject=build_name([("CN", "www.example.com")]),
        sans=[SubjectAltName("DNS", "www.example.com"), SubjectAltName("DNS", "api.example.com")],
        key_usages=frozenset(),
        extended_key_usages=frozenset({"serverAuth"}),
        not_after=now + timedelta(days=90),
        urls=URLS,
    )
    return Hierarchy(root, root_key, intermediate, intermediate_key, leaf, leaf_key)


_VALIDATOR = pkilint_certificate.create_pkix_certificate_validator_container(
    pkilint_certificate.create_decoding_validators(
        pkilint_name.ATTRIBUTE_TYPE_MAPPINGS, pkilint_extension.EXTENSION_MAPPINGS
    ),
    [
        pkilint_certificate.create_issuer_validator_container([]),
        pkilint_certificate.create_validity_validator_container(),
        pkilint_certificate.create_subject_validator_container([]),
        pkilint_certificate.create_extensions_validator_container([]),
        pkilint_certificate.create_spki_validator_container([]),
    ],
)


def lint_certificate(cert: x509.Certificate) -> list[tuple[str, str, str | None]]:
    """pkilint RFC 5280 findings as (severity, code, message), the same validators as `lint_pkix_cert`."""
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(
        cert.public_bytes(serialization.Encoding.DER), "certificate"
    )
    findings: list[tuple[str, str, str | None]] = []
    for result in _VALIDATOR.validate(document.root):
        for description in result.finding_descriptions:
            finding = description.finding
            findings.append((finding.severity.name, finding.code, description.message))
    return findings


BLOCKING_SEVERITIES = {ValidationFindingSeverity.FATAL.name, ValidationFindingSeverity.ERROR.name}
