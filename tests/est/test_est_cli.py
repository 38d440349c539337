"""EST end to end with the RFC's own tools: `keyward serve --tls-cert --tls-key --tls-client-ca` runs as a
subprocess; curl and openssl enroll with the passphrase, re-enroll with the issued certificate over TLS,
enroll with a bootstrap certificate, use the alias URL, cacerts, csrattrs and serverkeygen; refusals
(another CA, a changed subject, a wrong passphrase, a renewed certificate) issue nothing."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from conftest import OrgAdmin, tool_or_skip
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from est_support import (
    PASSPHRASE,
    USERNAME,
    curl,
    key_pem,
    keyward_serve,
    make_ca,
    make_csr,
    make_est_target,
    make_leaf,
    sh,
    write_server_tls,
)
from factories import cached_key

from models import AuditEvent, Certificate
from models.enums import CertificateStatus, EnrollmentMethod
from pki.certificate import certificate_pem, serial_hex
from pki.key import KeyAlgorithm

pytestmark = pytest.mark.live

PKCS10 = "Content-Type: application/pkcs10"


def print_certs(cwd: Path, response: str, out: str) -> str:
    return f"openssl base64 -d -in {response} | openssl pkcs7 -inform DER -print_certs -out {out}"


async def test_curl_and_openssl_enroll_reenroll_and_refusals_over_tls(
    org_admin: OrgAdmin, tmp_path: Path
) -> None:
    tool_or_skip("curl")
    tool_or_skip("openssl")
    bootstrap = make_ca("Factory Bootstrap CA")
    target = await make_est_target(
        org_admin.organization_id, client_ca_pem=certificate_pem(bootstrap[0]), with_other=True
    )
    assert target.other is not None
    tls = write_server_tls(tmp_path / "tls")
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_text(
        target.ca_pems()
        + certificate_pem(target.other.intermediate_certificate)
        + certificate_pem(target.other.root_certificate)
        + certificate_pem(bootstrap[0])
    )
    cwd = tmp_path / "work"
    cwd.mkdir()
    trust = ("--cacert", str(tls.ca))
    basic = ("-u", f"{USERNAME}:{PASSPHRASE}")

    async with keyward_serve(tmp_path / "server", tls=tls, client_ca=client_ca) as server:
        url = server.url + target.path("{op}")

        # cacerts: no authentication; the issuing CA and the root
        status, headers = await curl(cwd, url.format(op="cacerts"), *trust, output="cacerts.b64")
        assert status == 200, (cwd / "cacerts.b64").read_text()
        assert "application/pkcs7-mime" in headers.lower()
        assert "content-transfer-encoding: base64" in headers.lower()
        (await sh(print_certs(cwd, "cacerts.b64", "cacerts.pem"), cwd=cwd)).ok()
        cacerts = x509.load_pem_x509_certificates((cwd / "cacerts.pem").read_bytes())
        # PKCS#7 certificates are a SET OF: DER orders them by encoding, not by chain position
        assert set(cacerts) == {target.pki.intermediate_certificate, target.pki.root_certificate}

        # simpleenroll with the passphrase: openssl req makes the CSR, curl posts it
        await make_csr(cwd, "device", "/CN=device1.example.com", "DNS:device1.example.com")
        status, headers = await curl(
            cwd, url.format(op="simpleenroll"), *trust, *basic, "-H", PKCS10,
            "--data-binary", "@device.b64", output="device.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "device.resp").read_text()
        assert "smime-type=certs-only" in headers
        (await sh(print_certs(cwd, "device.resp", "device.pem"), cwd=cwd)).ok()
        (await sh("openssl verify -CAfile cacerts.pem device.pem", cwd=cwd)).ok()
        issued = x509.load_pem_x509_certificate((cwd / "device.pem").read_bytes())
        first = await Certificate.get(
            application_id=target.application.id, serial_hex=serial_hex(issued.serial_number)
        )
        assert first.enrollment_method == EnrollmentMethod.EST
        assert first.status == CertificateStatus.ACTIVE
        assert first.common_name == "device1.example.com"

        # a wrong passphrase, no credentials, a wrong content type: refused, nothing issued
        count = await Certificate.filter(application_id=target.application.id).count()
        status, headers = await curl(
            cwd, url.format(op="simpleenroll"), *trust, "-u", f"{USERNAME}:wrong-passphrase",
            "-H", PKCS10, "--data-binary", "@device.b64", output="wrong.resp",
        )  # fmt: skip
        assert status == 401
        assert 'www-authenticate: basic realm="' in headers.lower()
        status, _ = await curl(
            cwd, url.format(op="simpleenroll"), *trust, "-H", PKCS10, "--data-binary", "@device.b64",
            output="anonymous.resp",
        )  # fmt: skip
        assert status == 401
        status, _ = await curl(
            cwd, url.format(op="simpleenroll"), *trust, *basic, "-H", "Content-Type: text/plain",
            "--data-binary", "@device.b64", output="type.resp",
        )  # fmt: skip
        assert status == 415
        assert await Certificate.filter(application_id=target.application.id).count() == count

        # simplereenroll: the issued certificate authenticates over TLS; same subject and SANs, new key
        await make_csr(cwd, "renew", "/CN=device1.example.com", "DNS:device1.example.com")
        status, _ = await curl(
            cwd, url.format(op="simplereenroll"), *trust, "--cert", "device.pem", "--key", "device.key",
            "-H", PKCS10, "--data-binary", "@renew.b64", output="renew.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "renew.resp").read_text()
        (await sh(print_certs(cwd, "renew.resp", "renewed.pem"), cwd=cwd)).ok()
        renewed = x509.load_pem_x509_certificate((cwd / "renewed.pem").read_bytes())
        assert renewed.subject == issued.subject
        assert renewed.public_key() != issued.public_key()
        successor = await Certificate.get(
            application_id=target.application.id, serial_hex=serial_hex(renewed.serial_number)
        )
        assert successor.renewed_from_id == first.id
        assert successor.enrollment_method == EnrollmentMethod.EST
        await first.refresh_from_db()
        assert first.status == CertificateStatus.RENEWED

        count = await Certificate.filter(application_id=target.application.id).count()
        # the renewed certificate cannot re-enroll a second time
        status, _ = await curl(
            cwd, url.format(op="simplereenroll"), *trust, "--cert", "device.pem", "--key", "device.key",
            "-H", PKCS10, "--data-binary", "@renew.b64", output="again.resp",
        )  # fmt: skip
        assert status == 403, (cwd / "again.resp").read_text()
        assert "already renewed" in (cwd / "again.resp").read_text()
        # a changed subject is refused
        await make_csr(cwd, "changed", "/CN=other.example.com", "DNS:other.example.com", key="renew.key")
        status, _ = await curl(
            cwd, url.format(op="simplereenroll"), *trust, "--cert", "renewed.pem", "--key", "renew.key",
            "-H", PKCS10, "--data-binary", "@changed.b64", output="changed.resp",
        )  # fmt: skip
        assert status == 403
        assert "subject" in (cwd / "changed.resp").read_text()
        # a changed SAN too
        await make_csr(cwd, "sans", "/CN=device1.example.com", "DNS:extra.example.com", key="renew.key")
        status, _ = await curl(
            cwd, url.format(op="simplereenroll"), *trust, "--cert", "renewed.pem", "--key", "renew.key",
            "-H", PKCS10, "--data-binary", "@sans.b64", output="sans.resp",
        )  # fmt: skip
        assert status == 403
        # a certificate from another CA (trusted by the TLS layer, not by this profile) is refused
        foreign_cert, foreign_key = make_leaf(
            (target.other.intermediate_certificate, cached_key(KeyAlgorithm.EC_P384, "intermediate")),  # type: ignore[arg-type]
            "device1.example.com",
        )
        (cwd / "foreign.pem").write_text(certificate_pem(foreign_cert))
        (cwd / "foreign.key").write_bytes(key_pem(foreign_key))
        status, headers = await curl(
            cwd, url.format(op="simplereenroll"), *trust, "--cert", "foreign.pem", "--key", "foreign.key",
            "-H", PKCS10, "--data-binary", "@renew.b64", output="foreign.resp",
        )  # fmt: skip
        assert status == 401, (cwd / "foreign.resp").read_text()
        # re-enrollment without any client certificate
        status, _ = await curl(
            cwd, url.format(op="simplereenroll"), *trust, *basic, "-H", PKCS10,
            "--data-binary", "@renew.b64", output="nocert.resp",
        )  # fmt: skip
        assert status == 401
        assert await Certificate.filter(application_id=target.application.id).count() == count

        # simpleenroll with a bootstrap certificate (TLS client auth, no passphrase)
        boot_cert, boot_key = make_leaf(bootstrap, "device2.example.com")
        (cwd / "boot.pem").write_text(certificate_pem(boot_cert))
        (cwd / "boot.key").write_bytes(key_pem(boot_key))
        await make_csr(cwd, "device2", "/CN=device2.example.com", "DNS:device2.example.com")
        status, _ = await curl(
            cwd, url.format(op="simpleenroll"), *trust, "--cert", "boot.pem", "--key", "boot.key",
            "-H", PKCS10, "--data-binary", "@device2.b64", output="device2.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "device2.resp").read_text()

        # the single-label alias URL: {application}.{profile}
        await make_csr(cwd, "alias", "/CN=alias.example.com")
        alias = server.url + target.alias_path("simpleenroll")
        status, _ = await curl(
            cwd, alias, *trust, *basic, "-H", PKCS10, "--data-binary", "@alias.b64", output="alias.resp"
        )
        assert status == 200, (cwd / "alias.resp").read_text()
        (await sh(print_certs(cwd, "alias.resp", "alias.pem"), cwd=cwd)).ok()
        alias_cert = x509.load_pem_x509_certificate((cwd / "alias.pem").read_bytes())
        # a CSR with only a common name gets that name as its SAN too
        san = alias_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["alias.example.com"]

        # csrattrs: DER CsrAttrs naming the profile's key type and signature algorithm
        status, headers = await curl(cwd, url.format(op="csrattrs"), *trust, output="csrattrs.b64")
        assert status == 200
        assert "application/csrattrs" in headers
        parsed = (
            await sh("openssl base64 -d -in csrattrs.b64 | openssl asn1parse -inform DER", cwd=cwd)
        ).ok()
        assert "prime256v1" in parsed.stdout and "ecdsa-with-SHA256" in parsed.stdout

        # serverkeygen: a PKCS#8 key and its certificate in a multipart/mixed response
        await make_csr(cwd, "keygen", "/CN=keygen.example.com", "DNS:keygen.example.com")
        status, headers = await curl(
            cwd, url.format(op="serverkeygen"), *trust, *basic, "-H", PKCS10,
            "--data-binary", "@keygen.b64", output="keygen.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "keygen.resp").read_text()
        content_type = next(
            line.split(":", 1)[1].strip()
            for line in headers.splitlines()
            if line.lower().startswith("content-type")
        )
        assert content_type.startswith("multipart/mixed")
        message = email.message_from_bytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + (cwd / "keygen.resp").read_bytes(),
            policy=email.policy.default,
        )
        parts = {part.get_content_type(): part.get_payload(decode=True) for part in message.iter_parts()}
        assert set(parts) == {"application/pkcs8", "application/pkcs7-mime"}
        (cwd / "keygen.key.der").write_bytes(parts["application/pkcs8"])
        (cwd / "keygen.p7.der").write_bytes(parts["application/pkcs7-mime"])
        (await sh("openssl pkey -inform DER -in keygen.key.der -out keygen.key.pem", cwd=cwd)).ok()
        (await sh("openssl pkcs7 -inform DER -in keygen.p7.der -print_certs -out keygen.pem", cwd=cwd)).ok()
        keygen_cert = x509.load_pem_x509_certificate((cwd / "keygen.pem").read_bytes())
        keygen_key = serialization.load_pem_private_key((cwd / "keygen.key.pem").read_bytes(), None)
        assert keygen_cert.public_key() == keygen_key.public_key()
        keygen_row = await Certificate.get(serial_hex=serial_hex(keygen_cert.serial_number))
        assert keygen_row.encrypted_private_key is not None

    # inventory: every EST certificate with its method; audited as the EST client
    rows = await Certificate.filter(application_id=target.application.id).order_by("created_at")
    assert [row.enrollment_method for row in rows] == [EnrollmentMethod.EST] * 5
    actions = await AuditEvent.filter(
        application_id=target.application.id, resource_type="certificate"
    ).values_list("action", "actor_name")
    assert ("certificate.issue", f"est:{USERNAME}") in actions
    assert ("certificate.renew", f"est:tls:{first.serial_hex}") in actions
    assert sum(1 for action, _ in actions if action in {"certificate.issue", "certificate.renew"}) == 5
