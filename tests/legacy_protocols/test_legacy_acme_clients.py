"""certbot obtains, renews and revokes, and lego obtains, over a legacy profile's ACME directory
(`/acme/profiles/{profileId}/directory`) with the EAB key id and HMAC key of the imported export; the
certificates are the legacy project's, and every URL the clients were handed is in the legacy form."""

from __future__ import annotations

import legacy_protocols_support  # noqa: F401  # isort: skip - puts tests/acme, est, scep on sys.path
import asyncio
import json
from pathlib import Path

import pytest
from acme_clients_support import acme_settings, challtestsrv, crl_serials, free_port, run, serial_of_file
from conftest import OrgAdmin, tool_or_skip
from legacy_protocols_support import LegacyScene, assert_in_legacy_inventory, legacy_scene
from test_certbot import certbot_binary, dirs

from models import AcmeAccount, ApplicationProfile
from models.enums import CertificateStatus, EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live


def _account_uri(config: Path) -> str:
    """The account URL certbot keeps (the Location of its newAccount): the kid it signs with."""
    (regr,) = list(config.glob("accounts/*/*/*/regr.json")) or list(config.glob("accounts/**/regr.json"))
    return str(json.loads(regr.read_text())["uri"])


async def test_certbot_obtains_renews_and_revokes_over_the_legacy_directory(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    certbot = certbot_binary()
    scene: LegacyScene = await legacy_scene(org_admin.organization_id)
    http_port = free_port()
    name = "www.legacy-certbot.example.com"
    common = ["--non-interactive", "--server", scene.acme_directory(), *dirs(tmp_path)]
    standalone = ["--standalone", "--http-01-port", str(http_port), "--http-01-address", "127.0.0.1"]
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        acme_settings(http01_port=http_port, dns_resolver=dns.dns_address),
    ):
        await asyncio.to_thread(
            run,
            [
                certbot, "certonly", *common, *standalone, "--agree-tos", "-m", "ops@payments.example.com",
                f"--eab-kid={scene.eab_kid}", f"--eab-hmac-key={scene.eab_hmac_key}", "-d", name,
            ],
        )  # fmt: skip
        live = tmp_path / "config" / "live" / name
        first_serial = serial_of_file(live / "cert.pem")
        await asyncio.to_thread(
            run, [certbot, "renew", *common, *standalone, "--force-renewal", "--no-random-sleep-on-renew"]
        )
        second_serial = serial_of_file(live / "cert.pem")
        assert second_serial != first_serial
        await asyncio.to_thread(
            run,
            [
                certbot, "revoke", *common, "--cert-path", str(live / "cert.pem"),
                "--reason", "keycompromise", "--no-delete-after-revoke",
            ],
        )  # fmt: skip

    # The account lives on the legacy attachment, bound with the imported key id, at a legacy URL.
    attachment = await ApplicationProfile.get(
        application_id=scene.project_id, profile_id=scene.profile_ids["acme"]
    )
    account = await AcmeAccount.get(attachment_id=attachment.id)
    assert account.eab_kid == scene.eab_kid
    assert _account_uri(tmp_path / "config") == f"{scene.acme_base()}account/{account.id}"

    first = await assert_in_legacy_inventory(scene, serial_hex(first_serial), EnrollmentMethod.ACME)
    second = await assert_in_legacy_inventory(scene, serial_hex(second_serial), EnrollmentMethod.ACME)
    assert first.profile_id == second.profile_id == scene.profile_ids["acme"]
    assert first.status in {CertificateStatus.ACTIVE, CertificateStatus.RENEWED}
    assert second.status == CertificateStatus.REVOKED
    assert second.revocation_reason is not None and "compromise" in second.revocation_reason.lower()
    profile = await scene.profile("acme")
    serials = await asyncio.to_thread(crl_serials, live_server, profile.ca_id)
    assert second_serial in serials and first_serial not in serials


async def test_lego_obtains_over_the_legacy_directory(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    lego = tool_or_skip("lego")
    scene = await legacy_scene(org_admin.organization_id)
    port = free_port()
    names = ["legacy-lego.example.com", "www.legacy-lego.example.com"]
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        acme_settings(http01_port=port, dns_resolver=dns.dns_address),
    ):
        argv = [
            lego, "--path", str(tmp_path / "lego"), "--server", scene.acme_directory(), "--accept-tos",
            "--email", "ops@payments.example.com", "--eab", f"--kid={scene.eab_kid}",
            f"--hmac={scene.eab_hmac_key}", "--key-type", "ec256",
            "--http", "--http.port", f"127.0.0.1:{port}",
            *(arg for name in names for arg in ("--domains", name)), "run",
        ]  # fmt: skip
        await asyncio.to_thread(run, argv)
    serial = serial_of_file(tmp_path / "lego" / "certificates" / f"{names[0]}.crt")
    row = await assert_in_legacy_inventory(scene, serial_hex(serial), EnrollmentMethod.ACME)
    assert row.status == CertificateStatus.ACTIVE
    assert set(names) <= {san["value"] for san in row.sans}
    account_file = next((tmp_path / "lego" / "accounts").glob("**/account.json"))
    registration = json.loads(account_file.read_text())["registration"]
    assert registration["uri"].startswith(scene.acme_base() + "account/")
