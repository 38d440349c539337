"""Bad input at pkiclient.exe: thousands of mutated PKIOperation requests (byte flips, truncations,
insertions of a real scepclient pkiMessage), garbage, bad base64, wrong operations and unknown
endpoints, fed in-process. Never a 5xx, nothing issued, and the server keeps serving."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import httpx
import pytest
from conftest import GraphQL, OrgAdmin
from scep_support import CaptureProxy, scep_scene, scepclient

from models import Certificate, ScepTransaction
from pki.scep import FailInfo, PkiStatus

pytestmark = pytest.mark.live

MUTANTS = 2500


def mutate(seed: bytes, rng: random.Random) -> bytes:
    data = bytearray(seed)
    kind = rng.randrange(6)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # insert garbage
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == 3:  # overwrite a run of bytes
        at = rng.randrange(len(data))
        data[at : at + 8] = rng.randbytes(8)
    elif kind == 4:  # change a length octet
        at = rng.randrange(len(data))
        data[at] = rng.choice([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF])
    else:  # pure garbage, sometimes DER-looking
        data = bytearray(rng.choice([b"", b"\x30", b"\x30\x80"]) + rng.randbytes(rng.randint(0, 300)))
    return bytes(data)


def cert_rep_status(body: bytes) -> tuple[str, str | None]:
    """(pkiStatus, failInfo) of a CertRep, read without verification (the tests trust their own server)."""
    from asn1crypto import cms, core

    signed = cms.ContentInfo.load(body)["content"]
    attributes = {
        attribute["type"].dotted: core.Asn1Value.load(attribute["values"][0].dump()).native
        for attribute in signed["signer_infos"][0]["signed_attrs"]
    }
    return attributes["2.16.840.1.113733.1.9.3"], attributes.get("2.16.840.1.113733.1.9.4")


async def test_mutated_requests_never_get_a_5xx_nor_a_certificate(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin)
    # A real scepclient pkiMessage with a wrong challenge: even a mutant that keeps its meaning (a flip in
    # an unsigned field) is refused, so nothing may be issued.
    with CaptureProxy(scene.url) as proxy:
        await scepclient(tmp_path, proxy.url, challenge="wrong-but-well-formed", cn="fuzz.example.com")
    seed = proxy.messages[0]
    path = scene.url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    path = "/" + path

    seed_reply = await client.post(f"{path}?operation=PKIOperation", content=seed)
    assert seed_reply.status_code == 200
    assert cert_rep_status(seed_reply.content) == (PkiStatus.FAILURE.value, FailInfo.BAD_REQUEST.value)

    rng = random.Random(8894)
    statuses: dict[int, int] = {}
    replies = 0
    for index in range(MUTANTS):
        body = mutate(seed, rng)
        if index % 3 == 0:
            encoded = base64.b64encode(body).decode()
            response = await client.get(path, params={"operation": "PKIOperation", "message": encoded})
        else:
            response = await client.post(f"{path}?operation=PKIOperation", content=body)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (index, response.status_code, response.text[:200])
        if response.status_code == 200:
            replies += 1
            status, _ = cert_rep_status(response.content)
            assert status == PkiStatus.FAILURE.value, index
    assert statuses.get(400, 0) > 0 and replies > 0, statuses

    odd_requests = [
        client.get(path, params={"operation": "PKIOperation", "message": "%%%not base64"}),
        client.get(path, params={"operation": "PKIOperation"}),
        client.get(path, params={"operation": "GetNextCACert"}),
        client.get(path),
        client.post(f"{path}?operation=PKIOperation", content=b""),
        client.post(f"{path}?operation=PKIOperation", content=b"\xff" * 200_000),
        client.get(path.replace(str(scene.pki.profile.id), "not-a-uuid"), params={"operation": "GetCACaps"}),
        client.get(
            path.replace(str(scene.application.id), "00000000-0000-0000-0000-000000000000"),
            params={"operation": "GetCACert"},
        ),
    ]
    for request in odd_requests:
        response = await request
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])

    assert await Certificate.all().count() == 0
    assert await ScepTransaction.all().count() == 0
    # Still serving: capabilities, CA certificates, and the seed answered as before.
    assert (await client.get(path, params={"operation": "GetCACaps"})).text.startswith("POSTPKIOperation")
    cacert = await client.get(path, params={"operation": "GetCACert"})
    assert cacert.status_code == 200 and cacert.headers["content-type"] == "application/x-x509-ca-ra-cert"
    again = await client.post(f"{path}?operation=PKIOperation", content=seed)
    assert cert_rep_status(again.content) == (PkiStatus.FAILURE.value, FailInfo.BAD_REQUEST.value)
