"""Behind a TLS-terminating proxy: the client certificate arrives in KEYWARD_EST_CLIENT_CERT_HEADER
(URL-encoded PEM, as nginx's $ssl_client_escaped_cert) and HTTPS in X-Forwarded-Proto. `keyward serve`
believes them only from KEYWARD_TRUSTED_PROXIES; from any other address (even one claiming to be a proxy
through X-Forwarded-For) the header is ignored and HTTP Basic over plain HTTP is refused."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import OrgAdmin, tool_or_skip
from est_support import PASSPHRASE, USERNAME, curl, keyward_serve, make_csr, make_est_target, sh

from models import Certificate
from models.enums import CertificateStatus

pytestmark = pytest.mark.live

PKCS10 = "Content-Type: application/pkcs10"
HEADER = "X-SSL-Client-Cert"


async def _enroll(cwd: Path, url: str) -> str:
    """simpleenroll with the passphrase through the 'proxy' (X-Forwarded-Proto: https); the PEM issued."""
    await make_csr(cwd, "device", "/CN=proxied.example.com", "DNS:proxied.example.com")
    status, _ = await curl(
        cwd, url.format(op="simpleenroll"), "-u", f"{USERNAME}:{PASSPHRASE}", "-H", PKCS10,
        "-H", "X-Forwarded-Proto: https", "--data-binary", "@device.b64", output="device.resp",
    )  # fmt: skip
    assert status == 200, (cwd / "device.resp").read_text()
    result = await sh(
        "openssl base64 -d -in device.resp | openssl pkcs7 -inform DER -print_certs -out device.pem", cwd=cwd
    )
    result.ok()
    return (cwd / "device.pem").read_text()


async def test_client_certificate_header_from_a_trusted_proxy(org_admin: OrgAdmin, tmp_path: Path) -> None:
    tool_or_skip("curl")
    tool_or_skip("openssl")
    target = await make_est_target(org_admin.organization_id)
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {"KEYWARD_TRUSTED_PROXIES": "127.0.0.1", "KEYWARD_EST_CLIENT_CERT_HEADER": HEADER}
    async with keyward_serve(tmp_path / "server", env=env) as server:
        url = server.url + target.path("{op}")
        # HTTP Basic over plain HTTP without the proxy's word that the client used HTTPS: refused
        await make_csr(cwd, "plain", "/CN=plain.example.com")
        status, _ = await curl(
            cwd, url.format(op="simpleenroll"), "-u", f"{USERNAME}:{PASSPHRASE}", "-H", PKCS10,
            "--data-binary", "@plain.b64", output="plain.resp",
        )  # fmt: skip
        assert status == 403
        assert "HTTPS" in (cwd / "plain.resp").read_text()

        pem = await _enroll(cwd, url)
        await make_csr(cwd, "renew", "/CN=proxied.example.com", "DNS:proxied.example.com")
        status, _ = await curl(
            cwd, url.format(op="simplereenroll"), "-H", PKCS10, "-H", f"{HEADER}: {quote(pem)}",
            "--data-binary", "@renew.b64", output="renew.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "renew.resp").read_text()
    statuses = (
        await Certificate.filter(application_id=target.application.id)
        .order_by("created_at")
        .values_list("status", flat=True)
    )
    assert statuses == [CertificateStatus.RENEWED, CertificateStatus.ACTIVE]


async def test_client_certificate_header_from_an_untrusted_address_is_ignored(
    org_admin: OrgAdmin, tmp_path: Path
) -> None:
    tool_or_skip("curl")
    tool_or_skip("openssl")
    target = await make_est_target(org_admin.organization_id)
    cwd = tmp_path / "work"
    cwd.mkdir()
    # First a certificate, through a server that trusts this address as its proxy.
    trusted = {"KEYWARD_TRUSTED_PROXIES": "127.0.0.1", "KEYWARD_EST_CLIENT_CERT_HEADER": HEADER}
    async with keyward_serve(tmp_path / "trusted", env=trusted) as server:
        pem = await _enroll(cwd, server.url + target.path("{op}"))
    # Then a server whose only trusted proxy is 10.1.2.3: we (127.0.0.1) are not it.
    untrusted = {"KEYWARD_TRUSTED_PROXIES": "10.1.2.3", "KEYWARD_EST_CLIENT_CERT_HEADER": HEADER}
    async with keyward_serve(tmp_path / "untrusted", env=untrusted) as server:
        url = server.url + target.path("{op}")
        await make_csr(cwd, "renew", "/CN=proxied.example.com", "DNS:proxied.example.com")
        for spoof in ([], ["-H", "X-Forwarded-For: 10.1.2.3"]):
            status, _ = await curl(
                cwd, url.format(op="simplereenroll"), "-H", PKCS10, "-H", f"{HEADER}: {quote(pem)}",
                "-H", "X-Forwarded-Proto: https", *spoof, "--data-binary", "@renew.b64", output="renew.resp",
            )  # fmt: skip
            assert status == 401, (cwd / "renew.resp").read_text()
        # nor is its X-Forwarded-Proto believed: the passphrase may not travel over plain HTTP
        status, _ = await curl(
            cwd, url.format(op="simpleenroll"), "-u", f"{USERNAME}:{PASSPHRASE}", "-H", PKCS10,
            "-H", "X-Forwarded-Proto: https", "-H", "X-Forwarded-For: 10.1.2.3",
            "--data-binary", "@renew.b64", output="basic.resp",
        )  # fmt: skip
        assert status == 403, (cwd / "basic.resp").read_text()
    statuses = await Certificate.filter(application_id=target.application.id).values_list("status", flat=True)
    assert statuses == [CertificateStatus.ACTIVE]
