"""After the example is migrated, the same real clients with the same credentials work on the new URLs the
guide gives (the certificate lands in the application) and still on the old legacy URLs (it lands in the
legacy project): certbot with the export's EAB key id and HMAC key, curl + openssl EST with its passphrase,
and scepclient with its challenge and the same RA certificate."""

from __future__ import annotations

import migration_support  # noqa: F401  # isort: skip - puts tests/acme, est, scep, worker on sys.path
import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from acme_clients_support import acme_settings, challtestsrv, free_port, run, serial_of_file
from conftest import OrgAdmin, tool_or_skip
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from est_support import curl, keyward_serve, make_csr, sh, write_server_tls
from migration_support import Imported, example_secrets, guide_entry, import_example, migrated
from scep_support import load_pem_certificate, refusals, scepclient
from test_certbot import certbot_binary, dirs

from core import scep as scep_service
from core.authz import Actor
from core.legacy import migration
from models import Application, ApplicationProfile, Certificate, CertificateAuthority, CertificateProfile
from models.enums import EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live


async def migrate(organization_id: uuid.UUID) -> tuple[Imported, Application, list[dict[str, Any]]]:
    """Import the example, plan, apply (as the system actor); the guide of the applied plan."""
    imported = await import_example(organization_id)
    actor = Actor.system(organization_id, "tests")
    plan = await migration.migration_plan(actor=actor, legacy_project_id=imported.project_id)
    result = await migration.apply_migration(actor=actor, plan_document=plan.to_document())
    assert [a.status for a in result.applications] == ["created"]
    return imported, await migrated(organization_id), result.client_guide


async def landed(serial: int, method: EnrollmentMethod) -> Certificate:
    row = await Certificate.get(serial_hex=serial_hex(serial))
    assert row.enrollment_method == method
    return row


async def test_certbot_uses_the_same_eab_on_the_new_directory_and_the_old_one(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    certbot = certbot_binary()
    imported, application, guide = await migrate(org_admin.organization_id)
    entry = guide_entry(guide, "web-acme", "acme")
    secrets = example_secrets()
    http_port = free_port()
    standalone = ["--standalone", "--http-01-port", str(http_port), "--http-01-address", "127.0.0.1"]
    serials = {}
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        acme_settings(http01_port=http_port, dns_resolver=dns.dns_address),
    ):
        for which, directory in (("new", entry["new"]), ("old", entry["old"])):
            name = f"{which}.www.payments.example.com"
            workdir = tmp_path / which
            await asyncio.to_thread(
                run,
                [
                    certbot, "certonly", "--non-interactive", "--server", directory, *dirs(workdir),
                    *standalone, "--agree-tos", "-m", "ops@payments.example.com",
                    f"--eab-kid={secrets['eab_kid']}", f"--eab-hmac-key={secrets['eab_hmac_key']}",
                    "-d", name,
                ],
            )  # fmt: skip
            serials[which] = serial_of_file(workdir / "config" / "live" / name / "cert.pem")
    new = await landed(serials["new"], EnrollmentMethod.ACME)
    assert new.application_id == application.id and new.legacy_project_id is None
    assert new.profile_id == imported.profile_ids["web-acme"]
    old = await landed(serials["old"], EnrollmentMethod.ACME)
    assert old.application_id == imported.project_id and old.legacy_project_id == imported.project_id


async def test_est_enrolls_with_the_same_passphrase_on_both_urls(org_admin: OrgAdmin, tmp_path: Path) -> None:
    tool_or_skip("curl")
    tool_or_skip("openssl")
    imported, application, guide = await migrate(org_admin.organization_id)
    entry = guide_entry(guide, "web-est", "est")
    secrets = example_secrets()
    profile = await CertificateProfile.get(id=imported.profile_ids["web-est"])
    ca = await CertificateAuthority.get(id=profile.ca_id)
    tls = write_server_tls(tmp_path / "tls")
    client_ca = tmp_path / "client-ca.pem"
    assert ca.certificate_pem
    client_ca.write_text(ca.certificate_pem)
    cwd = tmp_path / "work"
    cwd.mkdir()
    trust = ("--cacert", str(tls.ca))
    basic = ("-u", f"{secrets['est_username']}:{secrets['est_passphrase']}")
    public = str(entry["old"]).split("/.well-known/")[0]
    async with keyward_serve(tmp_path / "server", tls=tls, client_ca=client_ca) as server:
        for which in ("new", "old"):
            url = str(entry[which]).replace(public, server.url) + "/simpleenroll"
            name = f"{which}-terminal.payments.example.com"
            await make_csr(cwd, which, f"/CN={name}", f"DNS:{name}")
            status, _ = await curl(
                cwd, url, *trust, *basic, "-H", "Content-Type: application/pkcs10",
                "--data-binary", f"@{which}.b64", output=f"{which}.resp",
            )  # fmt: skip
            assert status == 200, (which, (cwd / f"{which}.resp").read_text())
            (
                await sh(
                    f"openssl base64 -d -in {which}.resp | openssl pkcs7 -inform DER -print_certs "
                    f"-out {which}.pem",
                    cwd=cwd,
                )
            ).ok()
        # A wrong passphrase is refused on the new URL as it is on the old one.
        status, _ = await curl(
            cwd, str(entry["new"]).replace(public, server.url) + "/simpleenroll", *trust,
            "-u", f"{secrets['est_username']}:not-the-passphrase", "-H", "Content-Type: application/pkcs10",
            "--data-binary", "@new.b64", output="wrong.resp",
        )  # fmt: skip
        assert status == 401
    new = await landed(
        x509.load_pem_x509_certificate((cwd / "new.pem").read_bytes()).serial_number, EnrollmentMethod.EST
    )
    old = await landed(
        x509.load_pem_x509_certificate((cwd / "old.pem").read_bytes()).serial_number, EnrollmentMethod.EST
    )
    assert new.application_id == application.id and new.profile_id == imported.profile_ids["web-est"]
    assert old.application_id == imported.project_id and old.legacy_project_id == imported.project_id


async def test_scepclient_uses_the_same_challenge_and_ra_on_both_urls(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    imported, application, guide = await migrate(org_admin.organization_id)
    entry = guide_entry(guide, "devices-scep", "scep")
    secrets = example_secrets()
    profile_id = imported.profile_ids["devices-scep"]
    old_pair = await ApplicationProfile.get(application_id=imported.project_id, profile_id=profile_id)
    new_pair = await ApplicationProfile.get(application_id=application.id, profile_id=profile_id)
    fingerprint = scep_service.ra_fingerprint(old_pair)
    assert fingerprint is not None and scep_service.ra_fingerprint(new_pair) == fingerprint
    # Both URLs hand out the same RA certificate: a client that pinned it keeps working.
    async with httpx.AsyncClient() as http:
        answers = [
            (await http.get(entry[which], params={"operation": "GetCACert"})).content
            for which in ("new", "old")
        ]
    assert answers[0] == answers[1]
    assert old_pair.scep_ra_certificate_pem
    ra = x509.load_pem_x509_certificate(old_pair.scep_ra_certificate_pem.encode())
    assert ra.public_bytes(serialization.Encoding.DER) in answers[0]  # a certs-only PKCS#7 holds it as is
    serials = {}
    for which in ("new", "old"):
        cn = f"{which}-device.payments.example.com"
        result = await scepclient(
            tmp_path / which,
            entry[which],
            challenge=secrets["scep_challenge"],
            cn=cn,
            extra=("-ca-fingerprint", fingerprint),
        )
        assert result.returncode == 0, (which, result.output, await refusals())
        serials[which] = load_pem_certificate(tmp_path / which / "client.pem").serial_number
    new = await landed(serials["new"], EnrollmentMethod.SCEP)
    old = await landed(serials["old"], EnrollmentMethod.SCEP)
    assert new.application_id == application.id and new.profile_id == profile_id
    assert old.application_id == imported.project_id and old.legacy_project_id == imported.project_id
