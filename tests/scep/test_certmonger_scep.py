"""certmonger's `scep-submit` (OpenSSL PKCS7_verify with full chain checks: a strict SCEP peer) gets its
certificate from Keyward, and verifies a FAILURE CertRep for a wrong challenge.

scep-submit sends a pkiMessage but does not build one on its own (the certmonger daemon does): the
PKCSReq comes from a real `scepclient` run whose PKIOperation a loopback proxy keeps instead of forwarding.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
from conftest import GraphQL, OrgAdmin, tool_or_skip
from scep_support import (
    STATIC_CHALLENGE,
    CaptureProxy,
    ScepScene,
    inventory,
    refusals,
    run,
    scep_scene,
    scep_submit_or_skip,
    scepclient,
)

from models import Certificate
from pki.certificate import certificate_pem

pytestmark = pytest.mark.live


def pem(label: str, der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


async def captured_request(scene: ScepScene, workdir: Path, challenge: str, cn: str) -> bytes:
    """A PKCSReq built by scepclient for Keyward's RA, kept by the proxy (never sent to Keyward)."""
    with CaptureProxy(scene.url) as proxy:
        result = await scepclient(workdir, proxy.url, challenge=challenge, cn=cn)
    assert proxy.messages, result.output
    return proxy.messages[0]


async def scep_submit(scene: ScepScene, workdir: Path, message: bytes) -> tuple[int, str]:
    binary = scep_submit_or_skip()
    (workdir / "ra.pem").write_text(scene.ra_certificate_pem)
    # The root as the trust anchor of the RA's chain (-N; -R only serves TLS): the issuing CA between them
    # comes from the CertRep itself, which must carry it.
    (workdir / "root.pem").write_text(certificate_pem(scene.pki.root_certificate))
    (workdir / "request.pem").write_text(pem("PKCS7", message))
    result = await run(
        binary,
        "-u",
        scene.url,
        "-p",
        "-r",
        str(workdir / "ra.pem"),
        "-R",
        str(workdir / "root.pem"),
        "-N",
        str(workdir / "root.pem"),
        str(workdir / "request.pem"),
    )
    return result.returncode, result.output


async def test_certmonger_scep_submit_enrolls(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin)
    message = await captured_request(scene, tmp_path, STATIC_CHALLENGE, "cm1.example.com")
    assert await Certificate.all().count() == 0
    code, output = await scep_submit(scene, tmp_path, message)
    assert code == 0, (output, await refusals())  # CM_SUBMIT_STATUS_ISSUED: signature and chain verified
    assert "-----BEGIN PKCS7-----" in output
    # What scep-submit hands to the daemon is the envelope for the client: open it with the client's key.
    (tmp_path / "envelope.pem").write_text(output[output.index("-----BEGIN PKCS7-----") :])
    openssl = tool_or_skip("openssl")
    decrypted = await run(
        openssl,
        "cms",
        "-decrypt",
        "-inform",
        "PEM",
        "-in",
        str(tmp_path / "envelope.pem"),
        "-recip",
        str(tmp_path / "self.pem"),
        "-inkey",
        str(tmp_path / "key.pem"),
        "-out",
        str(tmp_path / "certs.p7b"),
        "-binary",
    )
    assert decrypted.returncode == 0, decrypted.output
    printed = await run(
        openssl, "pkcs7", "-inform", "DER", "-in", str(tmp_path / "certs.p7b"), "-print_certs"
    )
    assert "CN = cm1.example.com" in printed.output, printed.output
    rows = await inventory(gql, scene)
    assert [row["enrollmentMethod"] for row in rows.values()] == ["SCEP"]


async def test_certmonger_scep_submit_verifies_a_failure_reply(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin)
    message = await captured_request(scene, tmp_path, "wrong-challenge", "cm2.example.com")
    code, output = await scep_submit(scene, tmp_path, message)
    assert code == 2, output  # CM_SUBMIT_STATUS_REJECTED: a verified CertRep FAILURE
    assert "not permitted" in output  # certmonger's text for failInfo badRequest
    assert await Certificate.all().count() == 0
