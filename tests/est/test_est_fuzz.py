"""A few thousand mutated EST requests (byte flips and truncations of a valid base64 CSR, bad signatures,
wrong content types, garbage, odd methods and paths) in-process: never a 5xx, nothing issued for an invalid
one, every certificate accounted for, and the service still enrolls afterwards."""

from __future__ import annotations

import base64
import random
from typing import Any

import httpx
from conftest import OrgAdmin
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from est_support import PASSPHRASE, USERNAME, make_est_target
from factories import make_csr_pem

from models import Certificate
from pki import est as pki_est
from pki.csr import parse_csr
from pki.errors import PkiError

REQUESTS = 3000
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USERNAME}:{PASSPHRASE}".encode()).decode()}
CONTENT_TYPES = ["application/pkcs10", "application/pkcs10; charset=binary", "APPLICATION/PKCS10"]
WRONG_TYPES = ["text/plain", "application/octet-stream", "application/pkcs7-mime", "", "application/pkcs10x"]


def _usable(body: bytes, content_type: str) -> bool:
    """Whether the server must accept the request: the right type and a CSR that parses and verifies."""
    if content_type.split(";", 1)[0].strip().lower() != "application/pkcs10":
        return False
    try:
        parse_csr(pki_est.decode_pkcs10(body))
    except (PkiError, ValueError):
        return False
    return True


def _mutate(rng: random.Random, valid: bytes, der: bytes) -> tuple[bytes, str]:
    kind = rng.random()
    content_type = rng.choice(CONTENT_TYPES)
    if kind < 0.45:  # byte flips in the base64 text
        body = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        return bytes(body), content_type
    if kind < 0.6:  # truncation
        return valid[: rng.randrange(len(valid))], content_type
    if kind < 0.7:  # a DER-level flip, re-encoded: bad signatures and broken structures
        flipped = bytearray(der)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return pki_est.base64_lines(bytes(flipped)), content_type
    if kind < 0.8:  # the right body with a wrong content type
        return valid, rng.choice(WRONG_TYPES)
    if kind < 0.9:  # garbage
        return rng.randbytes(rng.randrange(0, 3000)), content_type
    # whitespace games and raw DER: a valid request the server must still accept
    return rng.choice(
        [valid.replace(b"\r\n", b"\n"), b"  " + valid.replace(b"\r\n", b" ") + b"\n", der]
    ), content_type


async def test_mutated_requests_never_fail_the_server_nor_issue(org_admin: OrgAdmin, app: Any) -> None:
    target = await make_est_target(org_admin.organization_id)
    csr_pem, _ = make_csr_pem(common_name="fuzz.example.com", sans=["DNS:fuzz.example.com"])
    der = x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    valid = pki_est.base64_lines(der)
    rng = random.Random(20250705)
    issued = 0
    statuses: dict[int, int] = {}
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        for _ in range(REQUESTS):
            choice = rng.random()
            if choice < 0.9:
                op = rng.choice(["simpleenroll", "simpleenroll", "simplereenroll", "serverkeygen"])
                path = target.path(op) if rng.random() < 0.85 else target.alias_path(op)
                body, content_type = _mutate(rng, valid, der)
                headers = {**AUTH, "Content-Type": content_type} if content_type else dict(AUTH)
                if rng.random() < 0.05:
                    headers["Authorization"] = "Basic " + base64.b64encode(rng.randbytes(12)).decode()
                response = await http.post(path, content=body, headers=headers)
                usable = _usable(body, content_type) and headers["Authorization"] == AUTH["Authorization"]
                if response.status_code == 200:
                    issued += 1
                    assert usable and op != "simplereenroll", (op, body[:80], response.text)
                elif usable and op != "simplereenroll":
                    raise AssertionError(
                        f"a usable request was refused: {response.status_code} {response.text}"
                    )
            else:
                method = rng.choice(["GET", "PUT", "DELETE", "POST", "PATCH"])
                op = rng.choice(["cacerts", "csrattrs", "simpleenroll", "nope", "", "..", "%00"])
                path = rng.choice(
                    [
                        target.path(op),
                        target.alias_path(op),
                        f"/.well-known/est/{rng.randbytes(4).hex()}/{op}",
                    ]
                )
                response = await http.request(method, path, content=rng.randbytes(rng.randrange(64)))
            assert response.status_code < 500, (response.status_code, response.text)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        assert await Certificate.filter(application_id=target.application.id).count() == issued
        assert issued > 0 and statuses.get(400, 0) > 1000 and statuses.get(415, 0) > 100, statuses
        # and it still serves
        assert (await http.get(target.path("cacerts"))).status_code == 200
        response = await http.post(
            target.path("simpleenroll"), content=valid, headers={**AUTH, "Content-Type": "application/pkcs10"}
        )
        assert response.status_code == 200
