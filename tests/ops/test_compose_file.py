"""docker-compose.yml, checked without a Docker engine: every command exists in the CLI with the flags it
passes, every KEYWARD_* variable is known and its value valid, the start order holds, two API replicas sit
behind nginx's upstream, two workers run, secrets come from files or the environment."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.cli import build_parser
from core.config import KNOWN_VARIABLES, load_settings
from core.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved as Compose resolves them
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def keyward_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if (s.get("command") or [None])[0] == "keyward"}


def interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}: defaults kept, required values made up."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if operator and operator.endswith("-"):
            return argument or ""
        return f"{name.lower()}-from-the-environment"

    return _INTERPOLATION.sub(one, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def parse_command(command: list[str]) -> argparse.Namespace:
    assert command[0] == "keyward"
    try:
        return build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"`{' '.join(command)}` is not a valid keyward command line")


def test_the_topology(services: dict[str, dict[str, Any]]) -> None:
    commands = {name: s.get("command") for name, s in services.items()}
    api = sorted(n for n, c in commands.items() if c and c[:2] == ["keyward", "serve"])
    workers = sorted(n for n, c in commands.items() if c and c[:2] == ["keyward", "worker"])
    migrations = [n for n, c in commands.items() if c == ["keyward", "db", "upgrade"]]
    assert api == ["api-1", "api-2"]
    assert workers == ["worker-1", "worker-2"]
    assert migrations == ["migrate"]
    assert services["migrate"]["restart"] == "no"  # one-shot
    assert services["postgres"]["image"].startswith("postgres:")
    assert "mailpit" in services["mailpit"]["image"]
    # Only nginx publishes the API; the replicas are reachable on the compose network only.
    for name in api + workers:
        assert "ports" not in services[name], f"{name} publishes a port: the API goes through nginx"
    assert [p.split(":")[-1] for p in services["nginx"]["ports"]] == ["8080"]


def test_every_command_exists_in_the_cli_with_its_flags(services: dict[str, dict[str, Any]]) -> None:
    keyward = keyward_services(services)
    assert len(keyward) == 5
    handlers = set()
    for name, service in keyward.items():
        args = parse_command(service["command"])
        handlers.add(args.func.__name__)
        if args.command == "serve":
            assert (args.host, args.port) == ("0.0.0.0", 8000), f"{name} must listen where nginx connects"
            assert not args.with_worker, f"{name}: the workers run as their own services"
    assert handlers == {"_cmd_serve", "_cmd_worker", "_cmd_db_upgrade"}
    # The setup hint in the file's header is a real command line too.
    hint = re.search(r"exec api-1 (keyward init [^\n]+)", COMPOSE.read_text())
    assert hint is not None
    parse_command(hint.group(1).split())


def test_every_keyward_variable_is_known_and_valid(services: dict[str, dict[str, Any]]) -> None:
    used = set(re.findall(r"\bKEYWARD_[A-Z0-9_]+", COMPOSE.read_text()))
    assert used, "the compose file sets no KEYWARD_* variable"
    assert used <= KNOWN_VARIABLES, f"unknown: {sorted(used - KNOWN_VARIABLES)}"
    for name, service in keyward_services(services).items():
        env = environment(service)
        try:
            settings = load_settings(env)  # the same validation `keyward` runs at start
        except ConfigurationError as error:
            pytest.fail(f"{name}: {error.message}")
        assert not settings.is_sqlite, f"{name} would run on SQLite"
        assert settings.database_url.startswith("postgres://keyward:")
        assert "@postgres:5432/keyward" in settings.database_url
        assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls) == ("mailpit", 1025, "none")
        assert env["KEYWARD_KEK_FILE"] == "/run/secrets/keyward_kek"


def test_secrets_come_from_files_or_the_environment(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert compose["secrets"]["keyward_kek"] == {"file": "./secrets/kek.key"}
    for name, service in keyward_services(services).items():
        assert service["secrets"] == ["keyward_kek"], f"{name} does not mount the KEK"
        raw = service["environment"]
        assert "${POSTGRES_PASSWORD" in raw["KEYWARD_DATABASE_URL"]
        assert not {"KEYWARD_SMTP_PASSWORD", "KEYWARD_METRICS_TOKEN"} & set(raw), f"{name} holds a secret"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^\s*(ENV|ARG)\s+.*(KEYWARD_|PASSWORD|SECRET|TOKEN)", dockerfile, re.M)
    assert not re.search(r"^\s*COPY\s+.*\b(data|secrets|\.env)\b", dockerfile, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"data", "secrets", ".env", ".venv"} <= set(ignored)


def test_the_image_holds_every_package(services: dict[str, dict[str, Any]]) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"^include = \[(.*)\]", pyproject, re.M)
    assert include is not None
    packages = {item.strip().strip('"').rstrip("*") for item in include.group(1).split(",")}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"


def test_start_order_and_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert spec["condition"] in CONDITIONS, f"{name} -> {target}: {spec['condition']}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, it has none"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api-1", "api-2", "worker-1", "worker-2"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for name in ("worker-1", "worker-2"):
        assert "mailpit" in services[name]["depends_on"]
    assert services["nginx"]["depends_on"] == {
        "api-1": {"condition": "service_healthy"},
        "api-2": {"condition": "service_healthy"},
    }
    for name in ("api-1", "api-2"):
        check = " ".join(services[name]["healthcheck"]["test"])
        assert "http://127.0.0.1:8000/readyz" in check
    assert "/healthz" in " ".join(services["nginx"]["healthcheck"]["test"])
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    for name in ("worker-1", "worker-2"):
        env = environment(services[name])
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{env['KEYWARD_WORKER_METRICS_PORT']}/metrics" in check


def test_nginx_upstream_lists_the_api_replicas(services: dict[str, dict[str, Any]]) -> None:
    mounts = services["nginx"]["volumes"]
    assert mounts == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    conf = re.sub(r"#[^\n]*", "", conf)
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf))
    assert list(upstreams) == ["keyward_api"]
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstreams["keyward_api"], re.M)
    api_ports = {name: parse_command(services[name]["command"]).port for name in ("api-1", "api-2")}
    assert dict((host, int(port)) for host, port in servers) == api_ports
    assert re.search(r"proxy_pass\s+http://keyward_api;", conf)
    listen = re.search(r"listen\s+(\d+);", conf)
    assert listen is not None and services["nginx"]["ports"] == [f"8000:{listen.group(1)}"]
    assert conf.count("{") == conf.count("}")
