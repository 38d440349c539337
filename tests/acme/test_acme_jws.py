"""The JWS layer of ACME (RFC 7515, 7638, 8555 §6.2, §7.3.4): every algorithm, every refusal as a problem."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pki.acme import jws
from pki.acme.problem import AcmeProblem

URL = "https://keyward.test/acme/applications/a/profiles/p/new-account"


def _keys() -> dict[str, Any]:
    return {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


KEYS = _keys()


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _problem(excinfo: pytest.ExceptionInfo[AcmeProblem]) -> str:
    return excinfo.value.kind


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_each_algorithm_signs_and_verifies(alg: str) -> None:
    key = KEYS[alg]
    signed = jws.sign(key, {"termsOfServiceAgreed": True}, url=URL, nonce="n1")
    parsed = jws.parse_jws(json.dumps(signed).encode())
    assert parsed.protected["alg"] == alg
    jws.check_header(parsed.protected)
    public = jws.jwk_to_public_key(parsed.protected["jwk"])
    jws.verify_signature(parsed, public)
    assert parsed.payload_json() == {"termsOfServiceAgreed": True}


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_tampered_signature_is_refused(alg: str) -> None:
    signed = jws.sign(KEYS[alg], {"a": 1}, url=URL, nonce="n1")
    signature = bytearray(jws.b64u_decode(signed["signature"], "signature"))
    signature[-1] ^= 0x01
    signed["signature"] = jws.b64u_encode(bytes(signature))
    parsed = jws.parse_jws(json.dumps(signed))
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_signature(parsed, jws.jwk_to_public_key(parsed.protected["jwk"]))
    assert _problem(excinfo) == "malformed"


def test_tampered_payload_is_refused() -> None:
    signed = jws.sign(KEYS["ES256"], {"contact": ["mailto:a@example.com"]}, url=URL, nonce="n1")
    signed["payload"] = _b64({"contact": ["mailto:evil@example.com"]})
    parsed = jws.parse_jws(json.dumps(signed))
    with pytest.raises(AcmeProblem):
        jws.verify_signature(parsed, jws.jwk_to_public_key(parsed.protected["jwk"]))


def test_signature_by_another_key_is_refused() -> None:
    signed = jws.sign(KEYS["ES256"], {}, url=URL, nonce="n1")
    parsed = jws.parse_jws(json.dumps(signed))
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_signature(parsed, other)
    assert _problem(excinfo) == "malformed"


def test_alg_must_suit_the_key() -> None:
    signed = jws.sign(KEYS["ES256"], {}, url=URL, nonce="n1")
    parsed = jws.parse_jws(json.dumps(signed))
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_signature(parsed, KEYS["ES384"].public_key())
    assert _problem(excinfo) == "badSignatureAlgorithm"
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_signature(parsed, KEYS["RS256"].public_key())
    assert _problem(excinfo) == "badSignatureAlgorithm"


def test_der_ecdsa_signature_is_refused() -> None:
    """JWA wants raw r || s; a DER signature has the wrong length."""
    signed = jws.sign(KEYS["ES256"], {}, url=URL, nonce="n1")
    signed["signature"] = jws.b64u_encode(b"\x30" + b"\x01" * 70)
    parsed = jws.parse_jws(json.dumps(signed))
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_signature(parsed, KEYS["ES256"].public_key())
    assert _problem(excinfo) == "malformed"


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "PS256", "ES512"])
def test_unsupported_algorithms(alg: str) -> None:
    protected = {"alg": alg, "nonce": "n", "url": URL, "jwk": jws.public_key_to_jwk(KEYS["ES256"])}
    with pytest.raises(AcmeProblem) as excinfo:
        jws.check_header(protected)
    assert _problem(excinfo) == "badSignatureAlgorithm"
    assert excinfo.value.to_dict()["algorithms"] == ["RS256", "ES256", "ES384", "EdDSA"]


def test_header_needs_exactly_one_of_jwk_and_kid() -> None:
    jwk = jws.public_key_to_jwk(KEYS["ES256"])
    with pytest.raises(AcmeProblem, match="exactly one"):
        jws.check_header({"alg": "ES256", "nonce": "n", "url": URL, "jwk": jwk, "kid": URL})
    with pytest.raises(AcmeProblem, match="exactly one"):
        jws.check_header({"alg": "ES256", "nonce": "n", "url": URL})
    with pytest.raises(AcmeProblem) as excinfo:
        jws.check_header({"alg": "ES256", "url": URL, "jwk": jwk})
    assert _problem(excinfo) == "badNonce"
    with pytest.raises(AcmeProblem, match="url"):
        jws.check_header({"alg": "ES256", "nonce": "n", "jwk": jwk})
    with pytest.raises(AcmeProblem, match="nonce"):
        jws.check_header({"alg": "ES256", "nonce": "n", "url": URL, "jwk": jwk}, nonce=False)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        json.dumps({"protected": "e30", "payload": ""}).encode(),
        json.dumps({"protected": "e30", "payload": "", "signature": "", "header": {}}).encode(),
        json.dumps({"signatures": [], "payload": ""}).encode(),
        json.dumps({"protected": "e30=", "payload": "", "signature": ""}).encode(),  # padding
        json.dumps({"protected": "e3+/", "payload": "", "signature": ""}).encode(),  # not url-safe
        json.dumps({"protected": _b64(b"[1]"), "payload": "", "signature": ""}).encode(),
        json.dumps({"protected": "e30", "payload": "", "signature": "", "extra": 1}).encode(),
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(AcmeProblem) as excinfo:
        jws.parse_jws(body)
    assert _problem(excinfo) == "malformed"


def test_post_as_get_payload_is_none_and_empty_object_is_not() -> None:
    get = jws.parse_jws(json.dumps(jws.sign(KEYS["EdDSA"], None, url=URL, nonce="n")))
    assert get.payload_json() is None
    empty = jws.parse_jws(json.dumps(jws.sign(KEYS["EdDSA"], {}, url=URL, nonce="n")))
    assert empty.payload_json() == {}
    array = jws.parse_jws(json.dumps(jws.sign(KEYS["EdDSA"], b"[1]", url=URL, nonce="n")))
    with pytest.raises(AcmeProblem, match="JSON object"):
        array.payload_json()


def test_rfc7638_thumbprint_example() -> None:
    """The example of RFC 7638 §3.1; members other than the required ones do not count."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4"
        "n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0"
        "zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-c"
        "sFCur-kEgU8awapJzKnqDKgw"
    )
    jwk = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jws.thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_jwk_round_trip(alg: str) -> None:
    jwk = jws.public_key_to_jwk(KEYS[alg])
    assert jws.public_key_to_jwk(jws.jwk_to_public_key(jwk)) == jwk
    assert "d" not in jwk


def test_bad_public_keys() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(AcmeProblem) as excinfo:
        jws.jwk_to_public_key(jws.public_key_to_jwk(small))
    assert _problem(excinfo) == "badPublicKey"
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key().public_numbers()
    with pytest.raises(AcmeProblem) as excinfo:
        jws.jwk_to_public_key({"kty": "EC", "crv": "P-521", "x": jws.b64u_encode(p521.x.to_bytes(66, "big"))})
    assert _problem(excinfo) == "badPublicKey"
    jwk = jws.public_key_to_jwk(KEYS["ES256"])
    with pytest.raises(AcmeProblem) as excinfo:
        jws.jwk_to_public_key({**jwk, "y": jwk["x"][:-4] + "AAAA"})  # not on the curve
    assert _problem(excinfo) == "badPublicKey"
    with pytest.raises(AcmeProblem) as excinfo:
        jws.jwk_to_public_key({**jwk, "d": "AAAA"})
    assert _problem(excinfo) == "badPublicKey"
    with pytest.raises(AcmeProblem) as excinfo:
        jws.jwk_to_public_key({"kty": "oct", "k": "AAAA"})
    assert _problem(excinfo) == "badPublicKey"


# External account binding ------------------------------------------------------------------------------

HMAC_KEY = b"k" * 32


def test_eab_verifies() -> None:
    account = KEYS["ES256"]
    binding = jws.sign_eab(kid="kid-1", hmac_key=HMAC_KEY, url=URL, account_key=account)
    jws.verify_eab(
        binding, expected_kid="kid-1", hmac_key=HMAC_KEY, url=URL, account_jwk=jws.public_key_to_jwk(account)
    )


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"hmac_key": b"x" * 32}, "unauthorized"),
        ({"expected_kid": "kid-2"}, "unauthorized"),
        ({"url": URL + "x"}, "unauthorized"),
        ({"account_jwk": jws.public_key_to_jwk(KEYS["EdDSA"])}, "unauthorized"),
    ],
)
def test_eab_refusals(change: dict[str, Any], kind: str) -> None:
    account = KEYS["ES256"]
    binding = jws.sign_eab(kid="kid-1", hmac_key=HMAC_KEY, url=URL, account_key=account)
    arguments: dict[str, Any] = {
        "expected_kid": "kid-1",
        "hmac_key": HMAC_KEY,
        "url": URL,
        "account_jwk": jws.public_key_to_jwk(account),
    }
    arguments.update(change)
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_eab(binding, **arguments)
    assert _problem(excinfo) == kind


def test_eab_must_be_hmac() -> None:
    account = KEYS["ES256"]
    signed = jws.sign(account, jws.public_key_to_jwk(account), url=URL, kid="kid-1")
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_eab(
            signed,
            expected_kid="kid-1",
            hmac_key=HMAC_KEY,
            url=URL,
            account_jwk=jws.public_key_to_jwk(account),
        )
    assert _problem(excinfo) == "badSignatureAlgorithm"
    with pytest.raises(AcmeProblem) as excinfo:
        jws.verify_eab("x", expected_kid="kid-1", hmac_key=HMAC_KEY, url=URL, account_jwk={})
    assert _problem(excinfo) == "malformed"
