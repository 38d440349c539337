from datetime import timedelta
from typing import Any

import pytest

from pki.errors import InvalidPolicy
from pki.key import KeyAlgorithm
from pki.policy import CertificateRequest, PolicyRules, Violation, evaluate_policy
from pki.san import SubjectAltName


def make_request(**overrides: Any) -> CertificateRequest:
    values: dict[str, Any] = {
        "subject": [("CN", "www.example.com"), ("O", "Acme")],
        "sans": [SubjectAltName("DNS", "www.example.com"), SubjectAltName("IP", "10.1.2.3")],
        "key_usages": frozenset({"digitalSignature"}),
        "extended_key_usages": frozenset({"serverAuth"}),
        "key_algorithm": KeyAlgorithm.EC_P256,
        "signature_algorithm": "ECDSA_WITH_SHA256",
        "validity": timedelta(days=90),
    }
    values.update(overrides)
    return CertificateRequest(**values)


def evaluate(rules: dict[str, Any], **overrides: Any) -> list[Violation]:
    return evaluate_policy(PolicyRules.from_dict(rules), make_request(**overrides))


def test_unset_allows_anything() -> None:
    assert evaluate({}) == []
    assert evaluate({"subject": None, "sans": None, "keyUsages": None, "keyAlgorithms": None}) == []
    assert PolicyRules.from_dict(None) == PolicyRules()


def test_empty_forbids() -> None:
    violations = evaluate({"sans": []})
    assert {v.value for v in violations} == {"www.example.com", "10.1.2.3"}
    assert all(v.field.startswith("sans.") for v in violations)
    assert evaluate({"sans": []}, sans=[]) == []
    assert len(evaluate({"subject": []})) == 2
    assert [v.field for v in evaluate({"keyAlgorithms": []})] == ["keyAlgorithm"]
    assert [v.field for v in evaluate({"keyUsages": {"allowed": []}})] == ["keyUsages"]
    assert [v.field for v in evaluate({"extendedKeyUsages": {"allowed": []}})] == ["extendedKeyUsages"]


def test_allowlist_of_types() -> None:
    rules = {"subject": [{"type": "CN"}], "sans": [{"type": "DNS", "allowed": ["**.example.com"]}]}
    violations = evaluate(rules)
    assert [(v.field, v.value) for v in violations] == [("subject.O", "Acme"), ("sans.IP", "10.1.2.3")]
    assert "not allowed" in violations[0].message


def test_allowed_patterns_and_message() -> None:
    rules = {"sans": [{"type": "DNS", "allowed": ["**.example.com"]}, {"type": "IP", "allowed": None}]}
    violations = evaluate(
        rules, sans=[SubjectAltName("DNS", "evil.com"), SubjectAltName("DNS", "a.b.example.com")]
    )
    assert violations == [
        Violation("sans.DNS", "evil.com", "DNS name 'evil.com' is not allowed (allowed: **.example.com)")
    ]


def test_single_label_wildcard_pattern() -> None:
    rules = {"sans": [{"type": "DNS", "allowed": ["*.example.com"]}]}
    assert evaluate(rules, sans=[SubjectAltName("DNS", "a.example.com")]) == []
    assert evaluate(rules, sans=[SubjectAltName("DNS", "*.example.com")]) == []
    assert len(evaluate(rules, sans=[SubjectAltName("DNS", "a.b.example.com")])) == 1
    assert len(evaluate(rules, sans=[SubjectAltName("DNS", "*.b.example.com")])) == 1


def test_required_and_denied() -> None:
    rules = {
        "subject": [
            {"type": "CN", "allowed": None, "required": ["*.example.com"], "denied": ["admin.**"]},
            {"type": "O", "allowed": ["Acme"], "required": ["Acme"]},
        ]
    }
    assert evaluate(rules) == []
    violations = evaluate(rules, subject=[("CN", "admin.example.com")])
    assert [(v.field, v.value) for v in violations] == [
        ("subject.CN", "admin.example.com"),
        ("subject.O", None),
    ]
    assert "denied" in violations[0].message and "admin.**" in violations[0].message
    assert violations[1].message == "a subject O matching 'Acme' is required"
    missing = evaluate(rules, subject=[("O", "Acme")])
    assert [(v.field, v.value) for v in missing] == [("subject.CN", None)]


def test_every_violation_is_reported() -> None:
    rules = {
        "subject": [{"type": "CN", "allowed": ["*.example.com"]}],
        "sans": [{"type": "DNS", "allowed": ["*.example.com"], "denied": ["bad.example.com"]}],
        "keyUsages": {
            "allowed": ["digitalSignature"],
            "required": ["digitalSignature"],
            "denied": ["keyEncipherment"],
        },
        "extendedKeyUsages": {"allowed": ["serverAuth"], "required": ["serverAuth"]},
        "keyAlgorithms": ["EC_P256", "EC_P384"],
        "signatureAlgorithms": ["ECDSA_WITH_SHA256"],
        "maxValidity": "90d",
        "allowCa": False,
    }
    request = {
        "subject": [("CN", "evil.com"), ("OU", "x")],
        "sans": [SubjectAltName("DNS", "bad.example.com"), SubjectAltName("DNS", "a.b.example.com")],
        "key_usages": frozenset({"keyEncipherment"}),
        "extended_key_usages": frozenset({"clientAuth"}),
        "key_algorithm": KeyAlgorithm.RSA_2048,
        "signature_algorithm": "SHA256_WITH_RSA",
        "validity": timedelta(days=91),
        "is_ca": True,
    }
    violations = evaluate(rules, **request)
    fields = [v.field for v in violations]
    for expected in (
        "subject.OU",
        "subject.CN",
        "sans.DNS",
        "keyUsages",
        "extendedKeyUsages",
        "keyAlgorithm",
        "signatureAlgorithm",
        "validity",
        "isCa",
    ):
        assert expected in fields, expected
    assert fields.count("sans.DNS") == 2
    assert fields.count("keyUsages") == 3  # keyEncipherment not allowed and denied; digitalSignature missing
    messages = [v.message for v in violations]
    assert "validity of 91d exceeds the maximum of 90d" in messages
    assert "key algorithm RSA_2048 is not allowed (allowed: EC_P256, EC_P384)" in messages
    assert "this policy does not allow CA certificates" in messages


def test_ip_cidr_rules() -> None:
    rules = {
        "sans": [
            {"type": "DNS"},
            {"type": "IP", "allowed": ["10.0.0.0/8", "192.168.1.1"], "denied": ["10.9.0.0/16"]},
        ]
    }
    assert evaluate(rules, sans=[SubjectAltName("IP", "10.1.2.3"), SubjectAltName("IP", "192.168.1.1")]) == []
    violations = evaluate(rules, sans=[SubjectAltName("IP", "172.16.0.1"), SubjectAltName("IP", "10.9.1.1")])
    assert [v.value for v in violations] == ["172.16.0.1", "10.9.1.1"]
    assert (
        violations[0].message == "IP address '172.16.0.1' is not allowed (allowed: 10.0.0.0/8, 192.168.1.1)"
    )


def test_email_and_uri_rules() -> None:
    rules = {
        "sans": [
            {"type": "EMAIL", "allowed": ["*@example.com"]},
            {"type": "URI", "allowed": ["spiffe://example.com/*"]},
        ]
    }
    ok = [SubjectAltName("EMAIL", "a@example.com"), SubjectAltName("URI", "spiffe://example.com/web")]
    assert evaluate(rules, sans=ok) == []
    bad = [SubjectAltName("EMAIL", "a@evil.com"), SubjectAltName("URI", "spiffe://example.com/web/x")]
    assert len(evaluate(rules, sans=bad)) == 2


def test_max_validity_and_key_algorithm() -> None:
    assert evaluate({"maxValidity": "90d"}, validity=timedelta(days=90)) == []
    assert evaluate({"maxValidity": "1y"}, validity=timedelta(days=365)) == []
    assert len(evaluate({"maxValidity": "24h"}, validity=timedelta(hours=25))) == 1
    assert evaluate({"keyAlgorithms": ["EC_P256"]}) == []
    assert evaluate({"keyAlgorithms": ["ec_p256"]}) == []
    assert [v.value for v in evaluate({"keyAlgorithms": ["ED25519"]})] == ["EC_P256"]


def test_ca_and_path_length() -> None:
    assert evaluate({"allowCa": True}, is_ca=True) == []
    assert evaluate({"allowCa": True, "maxPathLength": 1}, is_ca=True, path_length=1) == []
    too_long = evaluate({"allowCa": True, "maxPathLength": 1}, is_ca=True, path_length=2)
    assert [v.field for v in too_long] == ["pathLength"]
    unlimited = evaluate({"allowCa": True, "maxPathLength": 0}, is_ca=True, path_length=None)
    assert [v.field for v in unlimited] == ["pathLength"]
    assert [v.field for v in evaluate({}, is_ca=True)] == ["isCa"]


def test_eku_oids_and_names_are_equivalent() -> None:
    assert evaluate({"extendedKeyUsages": {"allowed": ["1.3.6.1.5.5.7.3.1"]}}) == []
    assert (
        evaluate(
            {"extendedKeyUsages": {"allowed": ["serverAuth", "1.2.3.4"]}},
            extended_key_usages=frozenset({"1.2.3.4"}),
        )
        == []
    )


def test_to_dict_round_trip() -> None:
    rules = {
        "subject": [{"type": "cn", "allowed": ["*.example.com"], "required": [], "denied": []}],
        "sans": [{"type": "IP", "allowed": ["10.0.0.0/8"]}],
        "keyUsages": {"allowed": ["digitalSignature"], "required": [], "denied": []},
        "extendedKeyUsages": None,
        "keyAlgorithms": ["EC_P256"],
        "signatureAlgorithms": None,
        "maxValidity": "12m",
        "allowCa": True,
        "maxPathLength": 0,
    }
    parsed = PolicyRules.from_dict(rules)
    assert parsed.max_validity == timedelta(days=360)
    dumped = parsed.to_dict()
    assert dumped["subject"][0]["type"] == "CN"
    assert dumped["sans"][0] == {"type": "IP", "allowed": ["10.0.0.0/8"], "required": [], "denied": []}
    assert dumped["maxValidity"] == "12m"
    assert PolicyRules.from_dict(dumped) == parsed


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "must be a JSON object"),
        ({"foo": 1}, "unknown key 'foo'"),
        ({"sans": [{"type": "FOO"}]}, "sans[0].type: unknown SAN type 'FOO'"),
        ({"sans": [{"type": "DNS"}, {"type": "dns"}]}, "sans[1].type: a second rule for DNS"),
        ({"sans": [{"type": "DNS", "allowed": "x"}]}, "sans[0].allowed: must be a list"),
        ({"sans": [{"type": "IP", "allowed": ["10.0.0.0/40"]}]}, "sans[0].allowed[0]:"),
        ({"sans": [{"type": "DNS", "denied": ["***.x"]}]}, "sans[0].denied[0]:"),
        ({"sans": [{"type": "DNS", "extra": 1}]}, "sans[0]: unknown key 'extra'"),
        ({"subject": [{"type": "emailAddress"}]}, "subject[0].type: unknown subject attribute type"),
        ({"subject": [{"allowed": []}]}, "subject[0].type: required string"),
        ({"subject": {"type": "CN"}}, "subject: must be null or a list"),
        ({"keyUsages": {"allowed": ["signEverything"]}}, "keyUsages.allowed[0]: unknown key usage"),
        ({"keyUsages": ["digitalSignature"]}, "keyUsages: must be null or an object"),
        (
            {"extendedKeyUsages": {"required": ["fooAuth"]}},
            "extendedKeyUsages.required[0]: unknown extended key usage",
        ),
        ({"keyAlgorithms": ["RSA_1024"]}, "keyAlgorithms[0]: unknown key algorithm 'RSA_1024'"),
        ({"signatureAlgorithms": ["MD5_WITH_RSA"]}, "signatureAlgorithms[0]: unknown signature algorithm"),
        ({"maxValidity": "3 weeks"}, "maxValidity: invalid duration"),
        ({"maxValidity": 90}, "maxValidity: must be null or a string"),
        ({"allowCa": "yes"}, "allowCa: must be true or false"),
        ({"maxPathLength": -1}, "maxPathLength: must be null or a non-negative integer"),
        ({"maxPathLength": True}, "maxPathLength:"),
    ],
)
def test_from_dict_rejects(rules: Any, message: str) -> None:
    with pytest.raises(InvalidPolicy) as excinfo:
        PolicyRules.from_dict(rules)
    assert message in excinfo.value.message
