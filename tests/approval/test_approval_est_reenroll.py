"""EST simplereenroll under an approval policy, over TLS with curl and openssl against `keyward serve`: the
re-enrollment answers 202 with Retry-After, its retry waits (no second request), and after the approval the
retry with the same TLS certificate and CSR gets the successor; the predecessor is renewed once."""

from __future__ import annotations

from pathlib import Path

from approval_support import APPROVE
from conftest import GraphQL, OrgAdmin, tool_or_skip
from cryptography import x509
from est_support import (
    PASSPHRASE,
    USERNAME,
    curl,
    keyward_serve,
    make_csr,
    make_est_target,
    sh,
    write_server_tls,
)
from factories import make_member

from core import approval
from core.authz import Actor
from models import ApprovalRequest, Certificate
from models.enums import ApplicationRole, CertificateStatus
from pki.certificate import serial_hex

PKCS10 = "Content-Type: application/pkcs10"


def _print_certs(response: str, out: str) -> str:
    return f"openssl base64 -d -in {response} | openssl pkcs7 -inform DER -print_certs -out {out}"


async def test_est_reenrollment_waits_for_approval_then_the_retry_gets_the_successor(
    gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    tool_or_skip("curl")
    tool_or_skip("openssl")
    target = await make_est_target(org_admin.organization_id)
    tls = write_server_tls(tmp_path / "tls")
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_text(target.ca_pems())
    cwd = tmp_path / "work"
    cwd.mkdir()
    trust = ("--cacert", str(tls.ca))
    approver = await make_member(target.org, applications={target.application: ApplicationRole.OPERATOR})

    async with keyward_serve(tmp_path / "server", tls=tls, client_ca=client_ca) as server:
        url = server.url + target.path("{op}")
        # Enrolled before the policy exists.
        await make_csr(cwd, "device", "/CN=device1.example.com", "DNS:device1.example.com")
        status, _ = await curl(
            cwd, url.format(op="simpleenroll"), *trust, "-u", f"{USERNAME}:{PASSPHRASE}", "-H", PKCS10,
            "--data-binary", "@device.b64", output="device.resp",
        )  # fmt: skip
        assert status == 200, (cwd / "device.resp").read_text()
        (await sh(_print_certs("device.resp", "device.pem"), cwd=cwd)).ok()
        issued = x509.load_pem_x509_certificate((cwd / "device.pem").read_bytes())
        old = await Certificate.get(serial_hex=serial_hex(issued.serial_number))

        await approval.create_policy(
            actor=Actor.system(target.org.id),
            application_id=target.application.id,
            name="est-renewals",
            profile_ids=[target.pki.profile.id],
            steps=[approval.StepSpec(approver_ids=[approver.principal.id], required=1)],
            max_request_ttl=approval.MAX_TTL,
        )
        await make_csr(cwd, "renew", "/CN=device1.example.com", "DNS:device1.example.com")
        reenroll = (
            url.format(op="simplereenroll"), *trust, "--cert", "device.pem", "--key", "device.key",
            "-H", PKCS10, "--data-binary", "@renew.b64",
        )  # fmt: skip
        status, headers = await curl(cwd, *reenroll, output="held.resp")
        assert status == 202, (cwd / "held.resp").read_text()
        assert "retry-after: 30" in headers.lower()
        status, _ = await curl(cwd, *reenroll, output="again.resp")
        assert status == 202
        requests = await ApprovalRequest.all()
        assert len(requests) == 1, "the retry made a second request"
        request = requests[0]
        assert request.method == "est" and request.renewal_of_id == old.id
        assert await Certificate.all().count() == 1
        await old.refresh_from_db()
        assert old.status == CertificateStatus.ACTIVE

        decided = (await gql(APPROVE, {"id": str(request.id)}, token=approver.token))["approveRequest"]
        assert decided["status"] == "ISSUED"
        status, _ = await curl(cwd, *reenroll, output="renew.resp")
        assert status == 200, (cwd / "renew.resp").read_text()
        (await sh(_print_certs("renew.resp", "renewed.pem"), cwd=cwd)).ok()
        renewed = x509.load_pem_x509_certificate((cwd / "renewed.pem").read_bytes())
        assert renewed.subject == issued.subject and renewed.public_key() != issued.public_key()
        successor = await Certificate.get(serial_hex=serial_hex(renewed.serial_number))
        assert str(successor.id) == decided["certificate"]["id"] and successor.renewed_from_id == old.id
        await old.refresh_from_db()
        assert old.status == CertificateStatus.RENEWED
        assert await Certificate.filter(renewed_from_id=old.id).count() == 1
