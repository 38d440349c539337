"""`keyward agent` as a real process against a live server: issue, restart without reissue, one renewal,
backoff on an unreachable server or a refused token."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import factories
import pytest
import yaml
from conftest import OrgAdmin, _free_port
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from factories import Scene

from agent.config import AgentConfigError, load_config
from models import Certificate
from models.enums import ApplicationRole, CertificateStatus, PrincipalKind
from pki.certificate import public_keys_match

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> Scene:
    return await factories.make_scene(org_admin.organization_id, org_admin.token, default_validity="30d")


async def machine_token(scene: Scene) -> str:
    """A machine identity (Product Member) with the Operator role in the scene's application."""
    machine = await factories.make_member(
        scene.org, applications={scene.application: ApplicationRole.OPERATOR}, kind=PrincipalKind.MACHINE
    )
    return machine.token


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(extra)
    return env


async def run_agent(config: Path, *, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "agent",
        "--config",
        str(config),
        "--once",
        cwd=ROOT,
        env=env or agent_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, output.decode()


def write_config(tmp_path: Path, server: str, scene: Scene, token: str, **overrides: Any) -> Path:
    token_file = tmp_path / "agent.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    hook_log = tmp_path / "hooks.log"
    config: dict[str, Any] = {
        "server": server,
        "token-file": str(token_file),
        "application-name": scene.application.name,
        "profile-name": scene.pki.profile.name,
        "retry-initial": "1s",
        "retry-max": "4s",
        "certificates": [
            {
                "name": "web",
                "common-name": "web.example.com",
                "sans": ["www.example.com", "IP:10.1.2.3"],
                "key-type": "ec-p384",
                "certificate": "out/web.crt",
                "chain": "out/web.chain.pem",
                "fullchain": "out/web.fullchain.pem",
                "key": "out/private/web.key",
                "post-command": f'echo "$KW_ACTION $KW_CERTIFICATE_NAME $KW_SERIAL" >> {hook_log}',
                "post-command-timeout": "30s",
            }
        ],
    }
    config.update(overrides)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def hook_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "hooks.log"
    return path.read_text().splitlines() if path.exists() else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.live
async def test_issue_restart_and_one_renewal(live_server: str, scene: Scene, tmp_path: Path) -> None:
    token = await machine_token(scene)
    config = write_config(tmp_path, live_server, scene, token, **{"renew-before": "10d"})
    out = tmp_path / "out"

    # First run: a key made here, a CSR sent, the files written with their modes, the hook run once.
    code, log = await run_agent(config)
    assert code == 0, log
    assert token not in log
    cert = x509.load_pem_x509_certificate((out / "web.crt").read_bytes())
    key = serialization.load_pem_private_key((out / "private/web.key").read_bytes(), password=None)
    assert public_keys_match(cert.public_key(), key.public_key())
    assert cert.public_key().key_size == 384  # type: ignore[union-attr]
    assert (mode(out / "web.crt"), mode(out / "private/web.key"), mode(out / "web.chain.pem")) == (
        0o644,
        0o600,
        0o644,
    )
    chain = x509.load_pem_x509_certificates((out / "web.chain.pem").read_bytes())
    assert [c.subject for c in chain] == [scene.pki.intermediate_certificate.subject]
    fullchain = x509.load_pem_x509_certificates((out / "web.fullchain.pem").read_bytes())
    assert fullchain == [cert, *chain]
    assert not list(out.rglob(".*.tmp"))
    rows = await Certificate.filter(application_id=scene.application.id)
    assert len(rows) == 1 and int(rows[0].serial_hex, 16) == cert.serial_number
    assert rows[0].encrypted_private_key is None  # the key never left the host
    assert hook_lines(tmp_path) == [f"issued web {rows[0].serial_hex}"]
    assert "web: issued serial" in log

    # A restart while the certificate is good: nothing issued, nothing run, the files untouched.
    before = (out / "web.crt").read_bytes(), (out / "private/web.key").read_bytes()
    code, log = await run_agent(config)
    assert code == 0, log
    assert "is good until" in log
    assert await Certificate.filter(application_id=scene.application.id).count() == 1
    assert ((out / "web.crt").read_bytes(), (out / "private/web.key").read_bytes()) == before
    assert len(hook_lines(tmp_path)) == 1

    # Move the agent's clock into the renew-before window (5 days before notAfter): exactly one renewal.
    moved = (cert.not_valid_after_utc - timedelta(days=5)).isoformat()
    code, log = await run_agent(config, env=agent_env(KEYWARD_AGENT_NOW=moved))
    assert code == 0, log
    assert "web: renewed serial" in log and "inside the renew-before window" in log
    rows = await Certificate.filter(application_id=scene.application.id).order_by("created_at")
    assert [CertificateStatus(r.status) for r in rows] == [
        CertificateStatus.RENEWED,
        CertificateStatus.ACTIVE,
    ]
    assert rows[1].renewed_from_id == rows[0].id  # type: ignore[attr-defined]
    renewed = x509.load_pem_x509_certificate((out / "web.crt").read_bytes())
    new_key = serialization.load_pem_private_key((out / "private/web.key").read_bytes(), password=None)
    assert renewed.serial_number != cert.serial_number
    assert renewed.serial_number == int(rows[1].serial_hex, 16)
    assert public_keys_match(renewed.public_key(), new_key.public_key())
    assert not public_keys_match(renewed.public_key(), key.public_key())  # a fresh key for the renewal
    assert mode(out / "private/web.key") == 0o600
    assert hook_lines(tmp_path) == [f"issued web {rows[0].serial_hex}", f"renewed web {rows[1].serial_hex}"]

    # And a restart on the real clock leaves the renewed certificate alone.
    code, log = await run_agent(config)
    assert code == 0, log
    assert await Certificate.filter(application_id=scene.application.id).count() == 2
    assert len(hook_lines(tmp_path)) == 2


@pytest.mark.live
async def test_config_changes_reissue_and_modes_are_repaired(
    live_server: str, scene: Scene, tmp_path: Path
) -> None:
    token = await machine_token(scene)
    config = write_config(tmp_path, live_server, scene, token)
    out = tmp_path / "out"
    assert (await run_agent(config))[0] == 0
    (out / "private/web.key").chmod(0o644)
    code, log = await run_agent(config)
    assert code == 0, log
    assert mode(out / "private/web.key") == 0o600 and "fixed file mode" in log
    assert len(hook_lines(tmp_path)) == 1

    # A name added to the config: the certificate on disk no longer matches, so a new one is issued.
    raw = yaml.safe_load(config.read_text())
    raw["certificates"][0]["sans"].append("api.example.com")
    config.write_text(yaml.safe_dump(raw))
    code, log = await run_agent(config)
    assert code == 0, log
    assert "differ from the config" in log
    cert = x509.load_pem_x509_certificate((out / "web.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "api.example.com" in names.get_values_for_type(x509.DNSName)
    assert len(hook_lines(tmp_path)) == 2


@pytest.mark.live
async def test_refused_token_fails_clearly_and_writes_nothing(
    live_server: str, scene: Scene, tmp_path: Path
) -> None:
    bad = "kw_notarealtoken0000000000000000"
    config = write_config(tmp_path, live_server, scene, bad)
    code, log = await run_agent(config)
    assert code == 1, log
    assert "refused the token" in log
    assert bad not in log
    assert not (tmp_path / "out").exists() and hook_lines(tmp_path) == []
    assert await Certificate.all().count() == 0


async def test_unreachable_server_backs_off_without_crashing(tmp_path: Path) -> None:
    """A long-running agent whose server is down: failing passes, growing delays, a clean stop on SIGTERM."""
    port = _free_port()  # nothing listens there
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": f"http://127.0.0.1:{port}",
                "application-name": "payments-api",
                "profile-name": "tls-server",
                "retry-initial": "1s",
                "retry-max": "2s",
                "certificates": [
                    {
                        "name": "web",
                        "common-name": "web.example.com",
                        "certificate": "web.crt",
                        "key": "web.key",
                    }
                ],
            }
        )
    )
    secret = "kw_secret_from_the_environment"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "agent",
        "--config",
        str(config),
        cwd=ROOT,
        env=agent_env(KEYWARD_AGENT_TOKEN=secret),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            while sum("retrying in" in line for line in lines) < 3:
                line = (await process.stdout.readline()).decode()
                assert line, "the agent exited: " + "".join(lines)
                lines.append(line)
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = "".join(lines) + rest.decode()
    assert process.returncode == 0, log
    assert f"cannot reach http://127.0.0.1:{port}" in log
    delays = [float(line.split("retrying in ")[1].rstrip("s\n")) for line in lines if "retrying in" in line]
    assert (
        1.0 <= delays[0] < 2.0 and delays[1] >= 2.0 and delays[2] == pytest.approx(2.0)
    )  # capped at retry-max
    assert "Traceback" not in log and secret not in log
    assert not (tmp_path / "web.crt").exists() and not (tmp_path / "web.key").exists()


BASE_CONFIG: dict[str, Any] = {
    "server": "http://127.0.0.1:1",
    "token": "kw_inline_secret",
    "application-name": "payments-api",
    "profile-name": "tls-server",
    "certificates": [{"name": "web", "common-name": "web.example.com", "certificate": "c", "key": "k"}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"server": "ftp://x"}, "server: 'ftp://x' must be an absolute http(s) URL"),
        ({"application-name": None}, "application-name is required"),
        ({"renew-before": "3 weeks"}, "renew-before: '3 weeks' must be a duration"),
        ({"poll-interval": "5m"}, "poll-interval: '5m' is not a duration"),
        ({"colour": "blue"}, "colour is not a known key"),
        (
            {"certificates": [{"name": "a", "common-name": "a.example.com", "key": "k"}]},
            "certificate is required",
        ),
        (
            {
                "certificates": [
                    {
                        "name": "a",
                        "sans": ["a.example.com"],
                        "certificate": "c",
                        "key": "k",
                        "key-type": "dsa",
                    }
                ]
            },
            "key-type: 'dsa' is not a key type",
        ),
        (
            {"certificates": [{"name": "a", "sans": ["a"], "certificate": "c", "key": "k", "key-mode": 600}]},
            "key-mode: 600 is not a file mode",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = dict(BASE_CONFIG)
    raw.update(change)
    raw = {k: v for k, v in raw.items() if v is not None}
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(AgentConfigError) as caught:
        load_config(config)
    assert message in str(caught.value)
    assert "kw_inline_secret" not in str(caught.value)


async def test_bad_config_exits_2_with_the_message(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({**BASE_CONFIG, "renew-before": "150%"}))
    code, log = await run_agent(config)
    assert code == 2, log
    assert "renew-before: '150%' must be a percentage between 0% and 100%" in log
    assert "kw_inline_secret" not in log and "Traceback" not in log


def test_the_example_config_is_valid() -> None:
    config = load_config(ROOT / "deploy" / "agent.example.yaml")
    assert (config.application_name, config.profile_name) == ("payments-api", "tls-server")
    (web,) = config.certificates
    assert (web.key_mode, web.certificate_mode) == (0o600, 0o644)
    assert web.post_command == ["/bin/sh", "-c", "systemctl reload nginx"]
