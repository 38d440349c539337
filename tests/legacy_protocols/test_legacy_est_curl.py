"""curl and openssl enroll and re-enroll over a legacy profile's EST URL (`/.well-known/est/{profileId}/{op}`)
against `keyward serve` over TLS, with the username and passphrase of the imported export; a wrong
passphrase and a profile id that is no legacy profile's get EST's refusals."""

from __future__ import annotations

import legacy_protocols_support  # noqa: F401  # isort: skip - puts tests/acme, est, scep on sys.path
import uuid
from pathlib import Path

import pytest
from conftest import OrgAdmin, tool_or_skip
from cryptography import x509
from est_support import curl, keyward_serve, make_csr, make_est_target, sh, write_server_tls
from legacy_protocols_support import assert_in_legacy_inventory, legacy_scene

from models import Certificate
from models.enums import CertificateStatus, EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live

PKCS10 = "Content-Type: application/pkcs10"


def print_certs(response: str, out: str) -> str:
    return f"openssl base64 -d -in {response} | openssl pkcs7 -inform DER -print_certs -out {out}"


async def test_curl_and_openssl_enroll_and_reenroll_over_legacy_est(
    org_admin: OrgAdmin, tmp_path: Path
) -> None:
    tool_or_skip("curl")
    tool_or_skip("openssl")
    scene = await legacy_scene(org_admin.organization_id)
    # An Application's EST profile beside it: its id is no legacy profile's.
    application = await make_est_target(org_admin.organization_id)
    tls = write_server_tls(tmp_path / "tls")
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_text(await scene.ca_chain_pem("est"))
    cwd = tmp_path / "work"
    cwd.mkdir()
    trust = ("--cacert", str(tls.ca))
    basic = ("-u", f"{scene.est_username}:{scene.est_passphrase}")

    async with keyward_serve(tmp_path / "server", tls=tls, client_ca=client_ca) as server:

        def url(op: str) -> str:
            return scene.est_url(op, server.url)

        status, _ = await curl(cwd, url("cacerts"), *trust, output="cacerts.b64")
        assert status == 200, (cwd / "cacerts.b64").read_text()
        (await sh(print_certs("cacerts.b64", "cacerts.pem"), cwd=cwd)).ok()

        # simpleenroll with the imported passphrase
        await make_csr(
            cwd, "device", "/CN=terminal1.payments.example.com", "DNS:terminal1.payments.example.com"
        )
        status, headers = await curl(
            cwd, url("simpleenroll"), *trust, *basic, "-H", PKCS10, "--data-binary", "@device.b64",
            output="device.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "device.resp").read_text()
        assert "smime-type=certs-only" in headers
        (await sh(print_certs("device.resp", "device.pem"), cwd=cwd)).ok()
        (await sh("openssl verify -CAfile cacerts.pem device.pem", cwd=cwd)).ok()
        issued = x509.load_pem_x509_certificate((cwd / "device.pem").read_bytes())
        first = await assert_in_legacy_inventory(
            scene, serial_hex(issued.serial_number), EnrollmentMethod.EST
        )
        assert first.profile_id == scene.profile_ids["est"]

        # simplereenroll: the issued certificate authenticates over TLS; a new key, the same names
        await make_csr(
            cwd, "renew", "/CN=terminal1.payments.example.com", "DNS:terminal1.payments.example.com"
        )
        status, _ = await curl(
            cwd, url("simplereenroll"), *trust, "--cert", "device.pem", "--key", "device.key",
            "-H", PKCS10, "--data-binary", "@renew.b64", output="renew.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "renew.resp").read_text()
        (await sh(print_certs("renew.resp", "renewed.pem"), cwd=cwd)).ok()
        renewed = x509.load_pem_x509_certificate((cwd / "renewed.pem").read_bytes())
        assert renewed.subject == issued.subject and renewed.public_key() != issued.public_key()
        successor = await assert_in_legacy_inventory(
            scene, serial_hex(renewed.serial_number), EnrollmentMethod.EST
        )
        assert successor.renewed_from_id == first.id
        await first.refresh_from_db()
        assert first.status == CertificateStatus.RENEWED

        # refusals: a wrong passphrase (401), an unknown profile id and an Application's profile id (404)
        count = await Certificate.all().count()
        status, headers = await curl(
            cwd, url("simpleenroll"), *trust, "-u", f"{scene.est_username}:wrong-passphrase",
            "-H", PKCS10, "--data-binary", "@device.b64", output="wrong.resp",
        )  # fmt: skip
        assert status == 401, (cwd / "wrong.resp").read_text()
        assert 'www-authenticate: basic realm="' in headers.lower()
        for profile_id in (uuid.uuid4(), application.pki.profile.id):
            status, _ = await curl(
                cwd, f"{server.url}/.well-known/est/{profile_id}/simpleenroll", *trust, *basic,
                "-H", PKCS10, "--data-binary", "@device.b64", output="missing.resp",
            )  # fmt: skip
            assert status == 404, (cwd / "missing.resp").read_text()
            assert "no EST service here" in (cwd / "missing.resp").read_text()
        assert await Certificate.all().count() == count
