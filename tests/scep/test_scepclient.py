"""Debian's `scepclient` (micromdm) enrolls against the live server with the static challenge and with a
dynamic one from generateScepChallenge, and renews with its certificate (RenewalReq); a wrong or reused
challenge is refused with failInfo badRequest and nothing is issued. Issued certificates are in the
application's inventory with method SCEP, carry the CN as a SAN, and are audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GraphQL, OrgAdmin
from cryptography.x509.oid import ExtensionOID
from scep_support import (
    STATIC_CHALLENGE,
    inventory,
    load_pem_certificate,
    new_challenge,
    refusals,
    scep_scene,
    scepclient,
)

from core.demo import setup_demo
from models import AuditEvent, Certificate, ScepChallenge
from models.enums import AuditOutcome, CertificateStatus, EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live


async def test_scepclient_enrolls_with_the_static_challenge_and_renews(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin)
    result = await scepclient(tmp_path, scene.url, challenge=STATIC_CHALLENGE, cn="device1.example.com")
    assert result.returncode == 0, (result.output, await refusals())
    cert = load_pem_certificate(tmp_path / "client.pem")
    serial = serial_hex(cert.serial_number)
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert [name.value for name in sans] == ["device1.example.com"]  # the CN repeated as a SAN

    rows = await inventory(gql, scene)
    assert rows[serial]["enrollmentMethod"] == "SCEP"
    assert rows[serial]["status"] == "ACTIVE"
    issued = await Certificate.get(serial_hex=serial)
    assert await AuditEvent.filter(
        action="certificate.issue", resource_id=str(issued.id), outcome=AuditOutcome.SUCCESS
    ).exists()

    # Renewal: client.pem exists, so scepclient sends a RenewalReq signed with it.
    renewed = await scepclient(tmp_path, scene.url, challenge=None, cn="device1.example.com")
    assert renewed.returncode == 0, (renewed.output, await refusals())
    successor = load_pem_certificate(tmp_path / "client.pem")
    assert successor.serial_number != cert.serial_number
    new_row = await Certificate.get(serial_hex=serial_hex(successor.serial_number))
    assert new_row.renewed_from_id == issued.id
    assert new_row.enrollment_method == EnrollmentMethod.SCEP
    await issued.refresh_from_db()
    assert issued.status == CertificateStatus.RENEWED


async def test_a_renewal_cannot_change_the_name(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    """A RenewalReq authenticates with the current certificate, so it may only renew that identity."""
    scene = await scep_scene(gql, org_admin)
    result = await scepclient(tmp_path, scene.url, challenge=STATIC_CHALLENGE, cn="device7.example.com")
    assert result.returncode == 0, (result.output, await refusals())
    held = load_pem_certificate(tmp_path / "client.pem")

    (tmp_path / "csr.pem").unlink()  # scepclient reuses a CSR it finds: make it write one for the new name
    other = await scepclient(tmp_path, scene.url, challenge=None, cn="vpn.example.com")
    assert other.returncode != 0
    assert "badRequest" in other.output, other.output
    assert load_pem_certificate(tmp_path / "client.pem") == held
    assert await Certificate.all().count() == 1
    original = await Certificate.get(serial_hex=serial_hex(held.serial_number))
    assert original.status == CertificateStatus.ACTIVE
    assert any("renewal refused" in reason for reason in await refusals()), await refusals()


async def test_wrong_static_challenge_is_refused_and_nothing_is_issued(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin)
    result = await scepclient(tmp_path, scene.url, challenge="not-the-challenge", cn="device2.example.com")
    assert result.returncode != 0
    assert "badRequest" in result.output, result.output
    assert not (tmp_path / "client.pem").exists()
    assert await Certificate.all().count() == 0
    assert await AuditEvent.filter(action="scep.enroll", outcome=AuditOutcome.FAILURE).exists()


async def test_scepclient_enrolls_with_a_dynamic_challenge_used_once(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await scep_scene(gql, org_admin, mode="DYNAMIC")
    challenge = await new_challenge(gql, scene)
    first = await scepclient(tmp_path / "a", scene.url, challenge=challenge, cn="device3.example.com")
    assert first.returncode == 0, first.output
    serial = serial_hex(load_pem_certificate(tmp_path / "a" / "client.pem").serial_number)
    assert (await inventory(gql, scene))[serial]["enrollmentMethod"] == "SCEP"
    spent = await ScepChallenge.get()
    assert spent.used_at is not None and spent.certificate_id is not None

    # The same challenge again, from another device: refused, nothing issued.
    again = await scepclient(tmp_path / "b", scene.url, challenge=challenge, cn="device4.example.com")
    assert again.returncode != 0
    assert "badRequest" in again.output, again.output
    assert await Certificate.all().count() == 1
    # A made-up challenge in dynamic mode: refused as well.
    made_up = await scepclient(tmp_path / "c", scene.url, challenge="0" * 40, cn="device5.example.com")
    assert made_up.returncode != 0 and "badRequest" in made_up.output
    assert await Certificate.all().count() == 1


async def test_demo_scep_settings_work_with_scepclient(live_server: str, db: str, tmp_path: Path) -> None:
    """`keyward demo --json`'s "scep" part as printed: the demo CA is ECDSA, so the RA is picked by its
    fingerprint; the demo policy takes a bare CN (scepclient's O, OU and C are emptied)."""
    scep = (await setup_demo())["scep"]
    assert set(scep) >= {"url", "challenge"}
    extra = ("-ca-fingerprint", scep["ra_sha256"], "-organization", "", "-ou", "", "-country", "")
    result = await scepclient(
        tmp_path, scep["url"], challenge=scep["challenge"], cn="demo.example.com", extra=extra
    )
    assert result.returncode == 0, (result.output, await refusals())
    cert = load_pem_certificate(tmp_path / "client.pem")
    row = await Certificate.get(serial_hex=serial_hex(cert.serial_number))
    assert row.enrollment_method == EnrollmentMethod.SCEP
