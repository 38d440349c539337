"""Flattened JWS JSON for ACME (RFC 7515, RFC 8555 §6.2): parse, verify, sign, JWK and RFC 7638 thumbprints.

Every failure is an AcmeProblem, so the protocol layer can answer it as it stands.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from pki.acme.problem import AcmeProblem

SIGNATURE_ALGORITHMS = ("RS256", "ES256", "ES384", "EdDSA")
EAB_ALGORITHMS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_CURVES: dict[str, tuple[ec.EllipticCurve, int, str, hashes.HashAlgorithm]] = {
    # crv: (curve, coordinate length, the JWS alg using it, hash)
    "P-256": (ec.SECP256R1(), 32, "ES256", hashes.SHA256()),
    "P-384": (ec.SECP384R1(), 48, "ES384", hashes.SHA384()),
}
_FLATTENED_MEMBERS = {"protected", "payload", "signature"}


def _malformed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail)


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: Any, what: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); anything else is malformed."""
    if not isinstance(text, str) or not _B64URL.match(text) or len(text) % 4 == 1:
        raise _malformed(f"{what} is not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _malformed(f"{what} is not base64url without padding") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise _malformed(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _malformed(f"{what} must be a JSON object")
    return value


# JWK ---------------------------------------------------------------------------------------------------


def _int_member(jwk: dict[str, Any], name: str) -> int:
    raw = b64u_decode(jwk.get(name), f"jwk member {name!r}")
    if not raw:
        raise AcmeProblem("badPublicKey", f"jwk member {name!r} is empty")
    return int.from_bytes(raw, "big")


def jwk_to_public_key(jwk: Any) -> PublicKey:
    """The public key a JWK describes: RSA ≥ 2048 bits, EC P-256/P-384, or Ed25519."""
    if not isinstance(jwk, dict):
        raise _malformed("jwk must be a JSON object")
    if "d" in jwk or "p" in jwk or "k" in jwk:
        raise AcmeProblem("badPublicKey", "jwk carries private key material: send the public key only")
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            n, e = _int_member(jwk, "n"), _int_member(jwk, "e")
            if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
                raise AcmeProblem(
                    "badPublicKey",
                    f"RSA key of {n.bit_length()} bits: use {MIN_RSA_BITS} to {MAX_RSA_BITS} bits",
                )
            if e < 3 or e % 2 == 0:
                raise AcmeProblem("badPublicKey", "RSA public exponent is invalid")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kty == "EC":
            crv = jwk.get("crv")
            if crv not in _CURVES:
                raise AcmeProblem("badPublicKey", f"EC curve {crv!r} is not supported: use P-256 or P-384")
            curve, size, _, _ = _CURVES[crv]
            x = b64u_decode(jwk.get("x"), "jwk member 'x'")
            y = b64u_decode(jwk.get("y"), "jwk member 'y'")
            if len(x) != size or len(y) != size:
                raise AcmeProblem("badPublicKey", f"{crv} coordinates must be {size} bytes each")
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()
        if kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise AcmeProblem(
                    "badPublicKey", f"OKP curve {jwk.get('crv')!r} is not supported: use Ed25519"
                )
            x = b64u_decode(jwk.get("x"), "jwk member 'x'")
            if len(x) != 32:
                raise AcmeProblem("badPublicKey", "Ed25519 key must be 32 bytes")
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
    except AcmeProblem as problem:
        if problem.kind == "malformed":
            raise AcmeProblem("badPublicKey", problem.detail) from None
        raise
    except ValueError as error:
        raise AcmeProblem("badPublicKey", f"jwk is not a valid public key: {error}") from None
    raise AcmeProblem("badPublicKey", f"key type {kty!r} is not supported: use RSA, EC or OKP (Ed25519)")


def _fixed(value: int, size: int) -> str:
    return b64u_encode(value.to_bytes(size, "big"))


def public_key_to_jwk(key: PublicKey | PrivateKey) -> dict[str, str]:
    """The JWK of a public key (of the public half of a private key): required members only."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {
            "kty": "RSA",
            "n": _fixed(numbers.n, (numbers.n.bit_length() + 7) // 8),
            "e": _fixed(numbers.e, (numbers.e.bit_length() + 7) // 8),
        }
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name)
        if crv is None:
            raise AcmeProblem("badPublicKey", f"EC curve {key.curve.name} is not supported")
        size = _CURVES[crv][1]
        point = key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": _fixed(point.x, size), "y": _fixed(point.y, size)}
    if isinstance(key, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64u_encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)),
        }
    raise AcmeProblem("badPublicKey", f"key type {type(key).__name__} is not supported")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) over the required members in lexicographic order."""
    canonical = public_key_to_jwk(jwk_to_public_key(jwk))
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return b64u_encode(hashlib.sha256(encoded).digest())


def key_authorization(token: str, jwk: dict[str, Any]) -> str:
    """RFC 8555 §8.1: token "." thumbprint of the account key."""
    return f"{token}.{thumbprint(jwk)}"


# Parsing and verifying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jws:
    """A parsed flattened JWS; `payload` is the decoded bytes (b"" for POST-as-GET)."""

    protected: dict[str, Any]
    protected_b64: str
    payload_b64: str
    payload: bytes
    signature: bytes

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")

    def payload_json(self) -> dict[str, Any] | None:
        """The payload as a JSON object, or None when it is empty (POST-as-GET)."""
        if self.payload_b64 == "":
            return None
        return _json_object(self.payload, "JWS payload")


def parse_jws(data: bytes | str | dict[str, Any]) -> Jws:
    """A flattened JWS JSON serialization; unprotected headers and the general serialization are refused."""
    if isinstance(data, dict):
        document = data
    else:
        if isinstance(data, str):
            data = data.encode()
        if not data:
            raise _malformed("request body is empty: send a flattened JWS (application/jose+json)")
        document = _json_object(data, "request body")
    if "signatures" in document:
        raise _malformed("general JWS serialization is not supported: send a flattened JWS")
    if "header" in document:
        raise _malformed("unprotected JWS headers are not allowed (RFC 8555 §6.2)")
    missing = _FLATTENED_MEMBERS - document.keys()
    if missing:
        raise _malformed(f"JWS lacks {', '.join(sorted(missing))}")
    extra = document.keys() - _FLATTENED_MEMBERS
    if extra:
        raise _malformed(f"JWS has unexpected members {', '.join(sorted(extra))}")
    protected_b64 = document["protected"]
    payload_b64 = document["payload"]
    protected = _json_object(b64u_decode(protected_b64, "JWS protected header"), "JWS protected header")
    payload = b64u_decode(payload_b64, "JWS payload")
    signature = b64u_decode(document["signature"], "JWS signature")
    return Jws(protected, protected_b64, payload_b64, payload, signature)


def check_header(protected: dict[str, Any], *, nonce: bool = True) -> None:
    """RFC 8555 §6.2: alg (asymmetric), url, nonce (unless told otherwise) and exactly one of jwk / kid."""
    alg = protected.get("alg")
    if not isinstance(alg, str):
        raise _malformed("JWS protected header lacks 'alg'")
    if alg not in SIGNATURE_ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"JWS algorithm {alg!r} is not supported: use one of {', '.join(SIGNATURE_ALGORITHMS)}",
            extra={"algorithms": list(SIGNATURE_ALGORITHMS)},
        )
    if "crit" in protected:
        raise _malformed("JWS 'crit' header parameters are not supported")
    if not isinstance(protected.get("url"), str):
        raise _malformed("JWS protected header lacks 'url'")
    if nonce:
        if not isinstance(protected.get("nonce"), str) or not protected["nonce"]:
            raise AcmeProblem("badNonce", "JWS protected header lacks 'nonce': get one from newNonce")
    elif "nonce" in protected:
        raise _malformed("this inner JWS must not carry a 'nonce'")
    has_jwk, has_kid = "jwk" in protected, "kid" in protected
    if has_jwk == has_kid:
        raise _malformed("JWS protected header must carry exactly one of 'jwk' and 'kid'")
    if has_kid and not isinstance(protected["kid"], str):
        raise _malformed("JWS 'kid' must be a string (the account URL)")


def verify_signature(jws: Jws, key: PublicKey) -> None:
    """Check the signature with `key` under the header's alg; the key must suit the alg."""
    alg = jws.protected.get("alg")
    data, signature = jws.signing_input, jws.signature
    try:
        if alg == "RS256":
            if not isinstance(key, rsa.RSAPublicKey):
                raise AcmeProblem("badSignatureAlgorithm", "RS256 needs an RSA key")
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            return
        if alg in ("ES256", "ES384"):
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise AcmeProblem("badSignatureAlgorithm", f"{alg} needs an EC key")
            crv = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name)
            if crv is None or _CURVES[crv][2] != alg:
                raise AcmeProblem("badSignatureAlgorithm", f"{alg} does not match the key's curve")
            size, digest = _CURVES[crv][1], _CURVES[crv][3]
            if len(signature) != 2 * size:
                raise _malformed(f"{alg} signature must be {2 * size} bytes (r || s)")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
            return
        if alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise AcmeProblem("badSignatureAlgorithm", "EdDSA needs an Ed25519 key")
            key.verify(signature, data)
            return
    except InvalidSignature:
        raise _malformed("JWS signature does not verify") from None
    raise AcmeProblem("badSignatureAlgorithm", f"JWS algorithm {alg!r} is not supported")


def verify_eab(
    binding: Any, *, expected_kid: str, hmac_key: bytes, url: str, account_jwk: dict[str, Any]
) -> None:
    """RFC 8555 §7.3.4: an HMAC-signed JWS by the EAB key id over the account jwk, for the newAccount url."""
    if not isinstance(binding, dict):
        raise _malformed("externalAccountBinding must be a flattened JWS object")
    jws = parse_jws(binding)
    alg = jws.protected.get("alg")
    if alg not in EAB_ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"externalAccountBinding algorithm {alg!r} is not supported: use HS256",
            extra={"algorithms": sorted(EAB_ALGORITHMS)},
        )
    if "nonce" in jws.protected:
        raise _malformed("externalAccountBinding must not carry a 'nonce'")
    if jws.protected.get("url") != url:
        raise AcmeProblem("unauthorized", "externalAccountBinding 'url' must be the newAccount URL")
    kid = jws.protected.get("kid")
    if not isinstance(kid, str) or not hmac.compare_digest(kid.encode(), expected_kid.encode()):
        raise AcmeProblem("unauthorized", "externalAccountBinding key id is not known here")
    mac = hmac.new(hmac_key, jws.signing_input, EAB_ALGORITHMS[alg]).digest()
    if not hmac.compare_digest(mac, jws.signature):
        raise AcmeProblem("unauthorized", "externalAccountBinding MAC does not verify with this key id's key")
    bound = _json_object(jws.payload, "externalAccountBinding payload")
    if thumbprint(bound) != thumbprint(account_jwk):
        raise AcmeProblem("unauthorized", "externalAccountBinding binds another key than the account's")


# Signing (clients, tests, benchmarks) ------------------------------------------------------------------


def alg_for_key(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name)
        if crv is None:
            raise ValueError(f"EC curve {key.curve.name} is not supported")
        return _CURVES[crv][2]
    return "EdDSA"


def _sign_bytes(key: PrivateKey, alg: str, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size, digest = (32, hashes.SHA256()) if alg == "ES256" else (48, hashes.SHA384())
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(data)


def _encode_payload(payload: dict[str, Any] | bytes | None) -> str:
    if payload is None:
        return ""
    if isinstance(payload, bytes):
        return b64u_encode(payload)
    return b64u_encode(json.dumps(payload).encode())


def sign(
    key: PrivateKey,
    payload: dict[str, Any] | bytes | None,
    *,
    url: str,
    nonce: str | None = None,
    kid: str | None = None,
    alg: str | None = None,
) -> dict[str, str]:
    """A flattened JWS by `key`: with `kid` if given, else with its jwk; payload None = POST-as-GET."""
    alg = alg or alg_for_key(key)
    protected: dict[str, Any] = {"alg": alg, "url": url}
    if nonce is not None:
        protected["nonce"] = nonce
    if kid is not None:
        protected["kid"] = kid
    else:
        protected["jwk"] = public_key_to_jwk(key)
    protected_b64 = b64u_encode(json.dumps(protected).encode())
    payload_b64 = _encode_payload(payload)
    signature = _sign_bytes(key, alg, f"{protected_b64}.{payload_b64}".encode("ascii"))
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64u_encode(signature)}


def sign_eab(*, kid: str, hmac_key: bytes, url: str, account_key: PrivateKey) -> dict[str, str]:
    """The externalAccountBinding member of a newAccount payload (HS256)."""
    protected_b64 = b64u_encode(json.dumps({"alg": "HS256", "kid": kid, "url": url}).encode())
    payload_b64 = b64u_encode(json.dumps(public_key_to_jwk(account_key)).encode())
    mac = hmac.new(hmac_key, f"{protected_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64u_encode(mac)}
