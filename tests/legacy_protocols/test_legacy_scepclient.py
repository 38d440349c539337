"""Debian's `scepclient` enrolls over a legacy profile's SCEP URL (`/scep/{profileId}/pkiclient.exe`) with
the static challenge of the imported export; a wrong challenge is refused, and a profile id that is no legacy
profile's has no SCEP endpoint."""

from __future__ import annotations

import legacy_protocols_support  # noqa: F401  # isort: skip - puts tests/acme, est, scep on sys.path
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import GraphQL, OrgAdmin
from cryptography.x509.oid import ExtensionOID
from legacy_protocols_support import LegacyScene, assert_in_legacy_inventory, legacy_scene
from scep_support import load_pem_certificate, refusals, scep_scene, scepclient

from core import scep as scep_service
from models import ApplicationProfile, AuditEvent, Certificate
from models.enums import AuditOutcome, EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live


async def _ra_fingerprint(scene: LegacyScene) -> str:
    attachment = await ApplicationProfile.get(
        application_id=scene.project_id, profile_id=scene.profile_ids["scep"]
    )
    fingerprint = scep_service.ra_fingerprint(attachment)
    assert fingerprint is not None
    return fingerprint


async def test_scepclient_enrolls_over_legacy_scep_with_the_imported_challenge(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await legacy_scene(org_admin.organization_id)
    # The RA is picked by its fingerprint: the legacy CA need not be RSA.
    extra = ("-ca-fingerprint", await _ra_fingerprint(scene))
    cn = "terminal7.payments.example.com"
    result = await scepclient(tmp_path, scene.scep_url(), challenge=scene.scep_challenge, cn=cn, extra=extra)
    assert result.returncode == 0, (result.output, await refusals())
    cert = load_pem_certificate(tmp_path / "client.pem")
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert [name.value for name in sans] == [cn]
    row = await assert_in_legacy_inventory(scene, serial_hex(cert.serial_number), EnrollmentMethod.SCEP)
    assert row.profile_id == scene.profile_ids["scep"]
    assert await AuditEvent.filter(
        action="certificate.issue", resource_id=str(row.id), outcome=AuditOutcome.SUCCESS
    ).exists()


async def test_a_wrong_challenge_is_refused_over_legacy_scep(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    scene = await legacy_scene(org_admin.organization_id)
    extra = ("-ca-fingerprint", await _ra_fingerprint(scene))
    before = await Certificate.all().count()
    result = await scepclient(
        tmp_path,
        scene.scep_url(),
        challenge="not-the-legacy-challenge",
        cn="terminal8.example.com",
        extra=extra,
    )
    assert result.returncode != 0
    assert "badRequest" in result.output, result.output
    assert not (tmp_path / "client.pem").exists()
    assert await Certificate.all().count() == before
    assert await AuditEvent.filter(action="scep.enroll", outcome=AuditOutcome.FAILURE).exists()


async def test_no_scep_endpoint_for_a_profile_that_is_not_legacy(
    live_server: str, gql: GraphQL, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    await legacy_scene(org_admin.organization_id)
    application = await scep_scene(gql, org_admin)
    before = await Certificate.all().count()
    async with httpx.AsyncClient() as http:
        for profile_id in (uuid.uuid4(), application.pki.profile.id):
            response = await http.get(f"{live_server}/scep/{profile_id}/pkiclient.exe?operation=GetCACert")
            assert response.status_code == 404, response.text
    # scepclient gives up on the GetCACert answer: nothing enrolled.
    url = f"{live_server}/scep/{application.pki.profile.id}/pkiclient.exe"
    result = await scepclient(tmp_path, url, challenge="static-challenge-0123", cn="device.example.com")
    assert result.returncode != 0
    assert not (tmp_path / "client.pem").exists()
    assert await Certificate.all().count() == before
