"""Debian's lego obtains certificates with EAB over http-01, tls-alpn-01 and dns-01 (a wildcard, through
its `exec` DNS provider writing TXT records into pebble-challtestsrv on loopback)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from acme_clients_support import (
    AcmeTarget,
    acme_settings,
    challtestsrv,
    free_port,
    make_acme_target,
    run,
    serial_of_file,
)
from conftest import OrgAdmin, tool_or_skip

from models import Certificate
from models.enums import CertificateStatus, EnrollmentMethod
from pki.certificate import serial_hex

pytestmark = pytest.mark.live

# lego's `exec` DNS provider runs `EXEC_PATH present|cleanup <fqdn> <value>`; this one forwards to
# pebble-challtestsrv's management API.
EXEC_SCRIPT = """#!{python}
import json, sys, urllib.request
action, fqdn, value = sys.argv[1], sys.argv[2], sys.argv[3]
if action == "present":
    path, body = "/set-txt", {{"host": fqdn, "value": value}}
else:
    path, body = "/clear-txt", {{"host": fqdn}}
request = urllib.request.Request("{management}" + path, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(request, timeout=5).read()
"""


def lego_command(
    lego: str, target: AcmeTarget, tmp_path: Path, domains: list[str], *solver: str
) -> list[str]:
    argv = [
        lego,
        "--path",
        str(tmp_path / "lego"),
        "--server",
        target.directory_url,
        "--accept-tos",
        "--email",
        "ops@lego.example.com",
        "--eab",
        f"--kid={target.eab_kid}",
        # The "=" form: a base64url key may begin with "-", which a flag parser takes for an option.
        f"--hmac={target.eab_hmac_key}",
        "--key-type",
        "ec256",
        *solver,
    ]
    for domain in domains:
        argv += ["--domains", domain]
    return [*argv, "run"]


async def assert_in_inventory(target: AcmeTarget, certificate_file: Path, names: list[str]) -> None:
    serial = serial_of_file(certificate_file)
    row = await Certificate.get(application_id=target.application.id, serial_hex=serial_hex(serial))
    assert row.enrollment_method == EnrollmentMethod.ACME
    assert row.status == CertificateStatus.ACTIVE
    listed = {san["value"] for san in row.sans}
    assert set(names) <= listed, (names, row.sans)


async def test_lego_http01_with_eab(live_server: str, org_admin: OrgAdmin, tmp_path: Path) -> None:
    lego = tool_or_skip("lego")
    target = await make_acme_target(org_admin.organization_id)
    port = free_port()
    names = ["lego-http.example.com", "www.lego-http.example.com"]
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        acme_settings(http01_port=port, dns_resolver=dns.dns_address),
    ):
        argv = lego_command(lego, target, tmp_path, names, "--http", "--http.port", f"127.0.0.1:{port}")
        await asyncio.to_thread(run, argv)
    await assert_in_inventory(target, tmp_path / "lego" / "certificates" / f"{names[0]}.crt", names)


async def test_lego_tls_alpn01_with_eab(live_server: str, org_admin: OrgAdmin, tmp_path: Path) -> None:
    lego = tool_or_skip("lego")
    target = await make_acme_target(org_admin.organization_id)
    port = free_port()
    names = ["lego-tls.example.com"]
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        acme_settings(tlsalpn01_port=port, dns_resolver=dns.dns_address),
    ):
        argv = lego_command(lego, target, tmp_path, names, "--tls", "--tls.port", f"127.0.0.1:{port}")
        await asyncio.to_thread(run, argv)
    await assert_in_inventory(target, tmp_path / "lego" / "certificates" / f"{names[0]}.crt", names)


async def test_lego_dns01_wildcard_against_a_loopback_dns_server(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    lego = tool_or_skip("lego")
    target = await make_acme_target(org_admin.organization_id)
    names = ["*.lego-dns.example.com", "lego-dns.example.com"]
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        acme_settings(dns_resolver=dns.dns_address),
    ):
        script = tmp_path / "challtestsrv-exec"
        script.write_text(EXEC_SCRIPT.format(python=sys.executable, management=dns.management_url))
        script.chmod(0o755)
        solver = ["--dns", "exec", "--dns.resolvers", dns.dns_address, "--dns.disable-cp"]
        argv = lego_command(lego, target, tmp_path, names, *solver)
        # The exec provider solves names one after another, waiting EXEC_SEQUENCE_INTERVAL (60 s) between.
        exec_env = {
            "EXEC_PATH": str(script),
            "EXEC_SEQUENCE_INTERVAL": "1",
            "EXEC_POLLING_INTERVAL": "1",
            "EXEC_PROPAGATION_TIMEOUT": "30",
        }
        await asyncio.to_thread(run, argv, env=exec_env)
    await assert_in_inventory(
        target, tmp_path / "lego" / "certificates" / "_.lego-dns.example.com.crt", names
    )
