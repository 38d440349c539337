"""certbot (the real client, from pip) obtains, renews and revokes a certificate over ACME with EAB and
http-01 (standalone) against the live server; the certificates land in the application's inventory."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from acme_clients_support import (
    AcmeTarget,
    acme_settings,
    challtestsrv,
    crl_serials,
    free_port,
    make_acme_target,
    run,
    serial_of_file,
)
from conftest import GraphQL, OrgAdmin, tool_or_skip
from cryptography import x509

from core.authz import Actor
from core.certificate import revoke_certificate
from core.demo import setup_demo
from models import Certificate
from models.enums import CertificateStatus, EnrollmentMethod
from pki.acme.ari import cert_id_of
from pki.certificate import serial_hex

pytestmark = pytest.mark.live

INVENTORY = """
query($id: ID!) {
  application(id: $id) {
    certificates(first: 20) { edges { node { serialNumber status enrollmentMethod commonName } } }
  }
}
"""


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_certbot_command(acme: dict[str, str]) -> list[str]:
    """The README's `certbot certonly` line as argv, with its `$(acme FIELD)` look-ups filled in."""
    section = README.read_text().split("## ACME", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert block, "README's ACME section has no sh block"
    text = block.group(1).replace("\\\n", " ")
    line = next(line for line in text.splitlines() if "certbot certonly" in line)
    line = re.sub(r'"\$\(acme (\w+)\)"', lambda match: shlex.quote(acme[match.group(1)]), line)
    argv = shlex.split(line)
    return argv[1:] if argv[0] == "sudo" else argv


def certbot_binary() -> str:
    """certbot from this virtualenv (a dev dependency), else from PATH."""
    local = Path(sys.executable).parent / "certbot"
    return str(local) if local.exists() else tool_or_skip("certbot")


def dirs(tmp_path: Path) -> list[str]:
    return [
        "--config-dir",
        str(tmp_path / "config"),
        "--work-dir",
        str(tmp_path / "work"),
        "--logs-dir",
        str(tmp_path / "logs"),
    ]


@dataclass
class Certbot:
    """certbot against one ACME target, its state under tmp_path, http-01 on a port of its own."""

    binary: str
    target: AcmeTarget
    tmp_path: Path
    http_port: int = field(default_factory=free_port)

    @property
    def common(self) -> list[str]:
        return ["--non-interactive", "--server", self.target.directory_url, *dirs(self.tmp_path)]

    @property
    def standalone(self) -> list[str]:
        return ["--standalone", "--http-01-port", str(self.http_port), "--http-01-address", "127.0.0.1"]

    def live(self, name: str) -> Path:
        """The current certificate of the lineage `name`."""
        return self.tmp_path / "config" / "live" / name / "cert.pem"

    @contextlib.contextmanager
    def validated(self) -> Iterator[None]:
        """The live server validates http-01 on certbot's port, resolving names through a loopback DNS."""
        with (
            challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
            acme_settings(http01_port=self.http_port, dns_resolver=dns.dns_address),
        ):
            yield

    def certonly(self, name: str) -> int:
        """Obtain: registers the account with EAB, answers http-01 from certbot's standalone server; the
        serial of the certificate obtained."""
        run(
            [
                self.binary,
                "certonly",
                *self.common,
                *self.standalone,
                "--agree-tos",
                "-m",
                "ops@certbot.example.com",
                f"--eab-kid={self.target.eab_kid}",
                # The "=" form: a base64url key may begin with "-", which argparse takes for an option.
                f"--eab-hmac-key={self.target.eab_hmac_key}",
                "-d",
                name,
            ]
        )
        return serial_of_file(self.live(name))


async def certbot_for(organization_id: Any, tmp_path: Path) -> Certbot:
    return Certbot(certbot_binary(), await make_acme_target(organization_id), tmp_path)


async def inventory(gql: GraphQL, token: str, application_id: Any) -> dict[str, dict[str, Any]]:
    data = await gql(INVENTORY, {"id": str(application_id)}, token=token)
    return {
        edge["node"]["serialNumber"]: edge["node"] for edge in data["application"]["certificates"]["edges"]
    }


async def test_certbot_obtains_renews_and_revokes_with_eab_over_http01(
    live_server: str, org_admin: OrgAdmin, gql: GraphQL, tmp_path: Path
) -> None:
    certbot = await certbot_for(org_admin.organization_id, tmp_path)
    target, common, name = certbot.target, certbot.common, "www.certbot.example.com"
    with certbot.validated():
        # 1. Obtain.
        first_serial = await asyncio.to_thread(certbot.certonly, name)

        # 2. Renew now (the account exists, so no EAB this time).
        await asyncio.to_thread(
            run,
            [
                certbot.binary,
                "renew",
                *common,
                *certbot.standalone,
                "--force-renewal",
                "--no-random-sleep-on-renew",
            ],
        )
        second_serial = serial_of_file(certbot.live(name))
        assert second_serial != first_serial

        # 3. Revoke the renewed one, signed by the account key, reason keyCompromise.
        await asyncio.to_thread(
            run,
            [
                certbot.binary,
                "revoke",
                *common,
                "--cert-path",
                str(certbot.live(name)),
                "--reason",
                "keycompromise",
                "--no-delete-after-revoke",
            ],
        )

    rows = {row.serial_hex: row for row in await Certificate.filter(application_id=target.application.id)}
    first, second = rows[serial_hex(first_serial)], rows[serial_hex(second_serial)]
    assert len(rows) == 2
    assert {first.enrollment_method, second.enrollment_method} == {EnrollmentMethod.ACME}
    assert (
        first.common_name == name or {"type": "DNS", "value": name} in first.sans or name in str(first.sans)
    )
    # certbot's renewal is a new order: the old certificate stays valid (active, or renewed when the server
    # links the two through ARI's `replaces`).
    assert first.status in {CertificateStatus.ACTIVE, CertificateStatus.RENEWED}
    assert second.status == CertificateStatus.REVOKED
    assert second.revocation_reason is not None and "compromise" in second.revocation_reason.lower()

    listed = await inventory(gql, org_admin.token, target.application.id)
    assert listed[serial_hex(first_serial)]["enrollmentMethod"] == "ACME"
    assert listed[serial_hex(second_serial)]["status"] == "REVOKED"
    serials = await asyncio.to_thread(crl_serials, live_server, target.pki.intermediate.id)
    assert second_serial in serials
    assert first_serial not in serials


async def test_certbot_renew_asks_renewal_information_and_replaces_a_revoked_certificate(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    """ARI (RFC 9773): `certbot renew` without --force asks the directory's renewalInfo about the
    certificate. A fresh one is not due and is kept; once revoked in Keyward its window has passed and
    certbot replaces it."""
    certbot = await certbot_for(org_admin.organization_id, tmp_path)
    target, name = certbot.target, "ari.certbot.example.com"
    renew = [certbot.binary, "renew", *certbot.common, *certbot.standalone, "--no-random-sleep-on-renew"]

    def certbot_log() -> str:
        """Every run's debug log (certbot rotates letsencrypt.log to .1, .2, ... at each run)."""
        return "".join(path.read_text() for path in sorted((tmp_path / "logs").glob("letsencrypt.log*")))

    renewal_conf = tmp_path / "config" / "renewal" / f"{name}.conf"
    with certbot.validated():
        first_serial = await asyncio.to_thread(certbot.certonly, name)
        first = await Certificate.get(
            application_id=target.application.id, serial_hex=serial_hex(first_serial)
        )
        cert_id = cert_id_of(x509.load_pem_x509_certificate(first.certificate_pem.encode()))
        ari_url = f"{target.directory_url.removesuffix('directory')}renewal-info/{cert_id}"

        # 1. Not due: certbot asked (its debug log has the request and our 200) and kept the certificate.
        await asyncio.to_thread(run, renew)
        assert serial_of_file(certbot.live(name)) == first_serial
        text = certbot_log()
        assert f"Sending GET request to {ari_url}" in text
        assert "An error occurred requesting ACME Renewal Information" not in text

        # 2. Revoked in Keyward: the window has passed, and certbot replaces the certificate. certbot waits
        # the answer's Retry-After (6 h) before asking again, noted in the lineage's renewal file: cleared.
        await revoke_certificate(
            actor=Actor.system(target.org.id, "tests"), certificate_id=first.id, reason="keyCompromise"
        )
        renewal_conf.write_text(re.sub(r"(?m)^ari_retry_after = .*$", "", renewal_conf.read_text()))
        await asyncio.to_thread(run, renew)
        assert serial_of_file(certbot.live(name)) != first_serial
        assert certbot_log().count(f"Sending GET request to {ari_url}") == 2


async def test_readme_certbot_command_runs_against_the_demo(
    live_server: str, db: str, tmp_path: Path
) -> None:
    """The README's command as written, plus only what a sandbox needs (port, address, directories)."""
    certbot = certbot_binary()
    demo = await setup_demo()
    argv = readme_certbot_command(demo["acme"])
    assert argv[0] == ".venv/bin/certbot" and "--standalone" in argv
    assert any(arg.startswith("--eab-hmac-key=") for arg in argv)
    assert demo["acme"]["directory_url"].startswith(live_server)
    http_port = free_port()
    argv = [
        certbot,
        *argv[1:],
        "--http-01-port",
        str(http_port),
        "--http-01-address",
        "127.0.0.1",
        *dirs(tmp_path),
    ]
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        acme_settings(http01_port=http_port, dns_resolver=dns.dns_address),
    ):
        await asyncio.to_thread(run, argv)
    serial = serial_of_file(tmp_path / "config" / "live" / "www.shop.example.com" / "cert.pem")
    row = await Certificate.get(serial_hex=serial_hex(serial))
    assert str(row.application_id) == demo["application_id"]
    assert row.enrollment_method == EnrollmentMethod.ACME
    assert str(row.ca_id) == demo["ca_id"]
