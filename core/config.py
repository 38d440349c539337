"""Settings from the environment: every KEYWARD_* variable is known here, anything else fails at start."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.errors import ConfigurationError
from core.ops_config import OPS_VARIABLES, ops_settings
from core.sync_settings import sync_settings

DEFAULT_DATABASE_URL = "sqlite://./data/keyward.sqlite3"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_KEK_FILE = "./data/kek.key"

# Every variable a later feature reads must be listed here, so a typo fails loudly instead of being ignored.
KNOWN_VARIABLES = set(OPS_VARIABLES) | {  # OPS_VARIABLES: logs, CORS, metrics (issue #8)
    "KEYWARD_DATABASE_URL",
    "KEYWARD_PUBLIC_URL",
    "KEYWARD_KEK_FILE",
    "KEYWARD_SESSION_TTL_HOURS",
    "KEYWARD_LOG_LEVEL",
    # Alert email (SPEC §9)
    "KEYWARD_SMTP_HOST",
    "KEYWARD_SMTP_PORT",
    "KEYWARD_SMTP_USERNAME",
    "KEYWARD_SMTP_PASSWORD",
    "KEYWARD_SMTP_PASSWORD_FILE",
    "KEYWARD_SMTP_FROM",
    "KEYWARD_SMTP_TLS",
    "KEYWARD_SMTP_CA_FILE",
    "KEYWARD_ALLOW_LOOPBACK_WEBHOOKS",
    # Worker (SPEC §14)
    "KEYWARD_WORKER_SCHEDULES",
    "KEYWARD_DELIVERY_LEASE_SECONDS",
    # ACME validation (issue #4)
    "KEYWARD_ACME_DNS_RESOLVER",
    "KEYWARD_ACME_HTTP01_PORT",
    "KEYWARD_ACME_TLSALPN01_PORT",
    "KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS",
    # `keyward agent` (issue #8): its default token variable, and a clock override for tests only.
    "KEYWARD_AGENT_TOKEN",
    "KEYWARD_AGENT_NOW",
    # EST (issue #5) and reverse proxies
    "KEYWARD_EST_CLIENT_CERT_HEADER",
    "KEYWARD_EST_ALLOW_PLAIN_HTTP",
    "KEYWARD_TRUSTED_PROXIES",
    # Syncs (issue #6, core/sync_settings.py)
    "KEYWARD_SYNC_MAX_CONCURRENCY",
    "KEYWARD_SYNC_LOCAL_ROOTS",
    "KEYWARD_SYNC_POST_COMMANDS",
}


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    public_url: str = DEFAULT_PUBLIC_URL
    kek_file: str = DEFAULT_KEK_FILE
    session_ttl_hours: int = 12
    log_level: str = "info"
    extra: dict[str, str] = field(default_factory=dict)
    # Alert email: no host means email channels fail (retryably) with "SMTP is not configured".
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "keyward@localhost"
    smtp_tls: str = "starttls"  # none | starttls | implicit
    smtp_ca_file: str | None = None  # PEM bundle trusted for the SMTP server (default: the system's)
    # Tests and closed networks: webhook URLs may be http and point at loopback/private addresses.
    allow_loopback_webhooks: bool = False
    # Worker: job id -> seconds between runs, overriding the job's default (KEYWARD_WORKER_SCHEDULES).
    worker_schedules: dict[str, int] = field(default_factory=dict)
    # How long a worker holds a delivery while sending it; a crashed worker's sends are retried after it.
    delivery_lease_seconds: int = 120
    # ACME validation: the DNS server asked for A/AAAA/TXT ((host, port); None = the system's resolver),
    # the ports http-01 and tls-alpn-01 connect to, and whether loopback/private addresses may be validated.
    acme_dns_resolver: tuple[str, int] | None = None
    acme_http01_port: int = 80
    acme_tlsalpn01_port: int = 443
    acme_allow_private_identifiers: bool = False
    # Operating (issue #8, core/ops_config.py): log format, CORS origins (none: no CORS headers), the bearer
    # token /metrics requires (None: public), and where `keyward worker` serves its metrics (None: off).
    log_format: str = "text"
    cors_origins: tuple[str, ...] = ()
    metrics_token: str | None = field(default=None, repr=False)
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"
    # EST: the header a TLS-terminating proxy puts the URL-encoded client certificate PEM in (None: off),
    # the proxies (addresses/networks) whose headers are believed, and whether HTTP Basic may travel over
    # plain HTTP (tests and closed networks only; the passphrase would cross the wire in the clear).
    est_client_cert_header: str | None = None
    est_allow_plain_http: bool = False
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Syncs: pushes in flight per destination, the directories local syncs may write under (none: local
    # syncs are refused), and whether a local sync may run a post-sync command on the worker's host.
    sync_max_concurrency: int = 4
    sync_local_roots: tuple[str, ...] = ()
    sync_post_commands: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite://")


def _check_database_url(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"sqlite", "postgres", "asyncpg", "psql"}:
        raise ConfigurationError(
            f"KEYWARD_DATABASE_URL={url!r} is not supported: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
        )
    if scheme != "sqlite" and not urlparse(url).path.strip("/"):
        raise ConfigurationError(f"KEYWARD_DATABASE_URL={url!r} names no database")
    return url


def _check_public_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ConfigurationError(f"KEYWARD_PUBLIC_URL={url!r} must be an absolute http(s) URL")
    return url.rstrip("/")


_SMTP_DEFAULT_PORTS = {"none": 25, "starttls": 587, "implicit": 465}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _smtp_settings(env: dict[str, str]) -> dict[str, Any]:
    """KEYWARD_SMTP_* and KEYWARD_ALLOW_LOOPBACK_WEBHOOKS, validated; the password never appears in errors."""
    tls = env.get("KEYWARD_SMTP_TLS", "starttls").lower()
    if tls not in _SMTP_DEFAULT_PORTS:
        raise ConfigurationError(f"KEYWARD_SMTP_TLS={tls!r} must be none, starttls or implicit")
    port_text = env.get("KEYWARD_SMTP_PORT", str(_SMTP_DEFAULT_PORTS[tls]))
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigurationError(f"KEYWARD_SMTP_PORT={port_text!r} must be a port number from 1 to 65535")
    if "KEYWARD_SMTP_PASSWORD" in env and "KEYWARD_SMTP_PASSWORD_FILE" in env:
        raise ConfigurationError("set KEYWARD_SMTP_PASSWORD or KEYWARD_SMTP_PASSWORD_FILE, not both")
    password = env.get("KEYWARD_SMTP_PASSWORD")
    if "KEYWARD_SMTP_PASSWORD_FILE" in env:
        path = Path(env["KEYWARD_SMTP_PASSWORD_FILE"])
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"KEYWARD_SMTP_PASSWORD_FILE={str(path)!r} cannot be read: {exc.strerror}"
            ) from None
    loopback = env.get("KEYWARD_ALLOW_LOOPBACK_WEBHOOKS", "").lower()
    if loopback not in _TRUE | _FALSE:
        raise ConfigurationError(f"KEYWARD_ALLOW_LOOPBACK_WEBHOOKS={loopback!r} must be true or false")
    return {
        "smtp_host": env.get("KEYWARD_SMTP_HOST") or None,
        "smtp_port": int(port_text),
        "smtp_username": env.get("KEYWARD_SMTP_USERNAME") or None,
        "smtp_password": password or None,
        "smtp_from": env.get("KEYWARD_SMTP_FROM", "keyward@localhost"),
        "smtp_tls": tls,
        "smtp_ca_file": env.get("KEYWARD_SMTP_CA_FILE") or None,
        "allow_loopback_webhooks": loopback in _TRUE,
    }


def _worker_settings(env: dict[str, str]) -> dict[str, Any]:
    """KEYWARD_WORKER_SCHEDULES (`outbox.dispatch=5,...`) and KEYWARD_DELIVERY_LEASE_SECONDS, validated."""
    schedules: dict[str, int] = {}
    text = env.get("KEYWARD_WORKER_SCHEDULES", "")
    for item in filter(None, (part.strip() for part in text.split(","))):
        job_id, _, seconds = item.partition("=")
        job_id, seconds = job_id.strip(), seconds.strip()
        if not job_id or not seconds.isdigit() or not 1 <= int(seconds) <= 7 * 24 * 3600:
            raise ConfigurationError(
                f"KEYWARD_WORKER_SCHEDULES: {item!r} must be JOB=SECONDS (1 to 604800), "
                "e.g. outbox.dispatch=5,deliveries.retry=10"
            )
        schedules[job_id] = int(seconds)
    lease_text = env.get("KEYWARD_DELIVERY_LEASE_SECONDS", "120")
    if not lease_text.isdigit() or not 1 <= int(lease_text) <= 3600:
        raise ConfigurationError(
            f"KEYWARD_DELIVERY_LEASE_SECONDS={lease_text!r} must be a whole number of seconds from 1 to 3600"
        )
    return {"worker_schedules": schedules, "delivery_lease_seconds": int(lease_text)}


def _port(env: dict[str, str], name: str, default: int) -> int:
    text = env.get(name, str(default)).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigurationError(f"{name}={text!r} must be a port number from 1 to 65535")
    return int(text)


def _acme_settings(env: dict[str, str]) -> dict[str, Any]:
    """KEYWARD_ACME_*: where validation resolves names and connects, and whether private addresses pass."""
    resolver: tuple[str, int] | None = None
    text = env.get("KEYWARD_ACME_DNS_RESOLVER", "").strip()
    if text:
        host, port_text = text, "53"
        if text.startswith("["):  # [::1]:53
            host, _, rest = text[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    host = ""
                port_text = rest[1:]
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        elif text.count(":") > 1:  # a bare IPv6 address
            host = text
        try:
            ipaddress.ip_address(host)
            valid = port_text.isdigit() and 1 <= int(port_text) <= 65535
        except ValueError:
            valid = False
        if not valid:
            raise ConfigurationError(
                f"KEYWARD_ACME_DNS_RESOLVER={text!r} must be an IP address with an optional port "
                "(IPv6 in brackets), e.g. 127.0.0.1:8053 or [::1]:53"
            )
        resolver = (host, int(port_text))
    private = env.get("KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS", "").strip().lower()
    if private not in _TRUE | _FALSE:
        raise ConfigurationError(f"KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS={private!r} must be true or false")
    return {
        "acme_dns_resolver": resolver,
        "acme_http01_port": _port(env, "KEYWARD_ACME_HTTP01_PORT", 80),
        "acme_tlsalpn01_port": _port(env, "KEYWARD_ACME_TLSALPN01_PORT", 443),
        "acme_allow_private_identifiers": private in _TRUE,
    }


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def _est_settings(env: dict[str, str]) -> dict[str, Any]:
    """KEYWARD_EST_* and KEYWARD_TRUSTED_PROXIES (comma-separated addresses or CIDR networks)."""
    header = env.get("KEYWARD_EST_CLIENT_CERT_HEADER", "").strip()
    if header and not _HEADER_NAME.match(header):
        raise ConfigurationError(
            f"KEYWARD_EST_CLIENT_CERT_HEADER={header!r} must be an HTTP header name, e.g. X-SSL-Client-Cert"
        )
    plain = env.get("KEYWARD_EST_ALLOW_PLAIN_HTTP", "").strip().lower()
    if plain not in _TRUE | _FALSE:
        raise ConfigurationError(f"KEYWARD_EST_ALLOW_PLAIN_HTTP={plain!r} must be true or false")
    proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in filter(None, (part.strip() for part in env.get("KEYWARD_TRUSTED_PROXIES", "").split(","))):
        try:
            proxies.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigurationError(
                f"KEYWARD_TRUSTED_PROXIES: {item!r} is not an IP address or network, e.g. 10.1.0.0/16"
            ) from None
    return {
        "est_client_cert_header": header.lower() or None,
        "est_allow_plain_http": plain in _TRUE,
        "trusted_proxies": tuple(proxies),
    }


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read and validate the environment once; raise ConfigurationError with the variable's name."""
    env = dict(os.environ if environ is None else environ)
    unknown = sorted(k for k in env if k.startswith("KEYWARD_") and k not in KNOWN_VARIABLES)
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_VARIABLES))}"
        )
    ttl_text = env.get("KEYWARD_SESSION_TTL_HOURS", "12")
    try:
        ttl = int(ttl_text)
        if not 1 <= ttl <= 24 * 30:
            raise ValueError
    except ValueError:
        raise ConfigurationError(
            f"KEYWARD_SESSION_TTL_HOURS={ttl_text!r} must be a whole number of hours from 1 to 720"
        ) from None
    log_level = env.get("KEYWARD_LOG_LEVEL", "info").lower()
    if log_level not in {"debug", "info", "warning", "error"}:
        raise ConfigurationError(f"KEYWARD_LOG_LEVEL={log_level!r} must be debug, info, warning or error")
    smtp = _smtp_settings(env)
    return Settings(
        **smtp,
        **_worker_settings(env),
        **_acme_settings(env),
        **ops_settings(env),
        **_est_settings(env),
        **sync_settings(env),
        database_url=_check_database_url(env.get("KEYWARD_DATABASE_URL", DEFAULT_DATABASE_URL)),
        public_url=_check_public_url(env.get("KEYWARD_PUBLIC_URL", DEFAULT_PUBLIC_URL)),
        kek_file=env.get("KEYWARD_KEK_FILE", DEFAULT_KEK_FILE),
        session_ttl_hours=ttl,
        log_level=log_level,
    )


def load_or_create_kek(path_text: str) -> bytes:
    """Load the key-encryption key; create it (mode 0600) only at the embedded default location."""
    path = Path(path_text)
    if not path.exists():
        if path_text != DEFAULT_KEK_FILE:
            raise ConfigurationError(f"KEYWARD_KEK_FILE={path_text!r} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        print(f"keyward: created a new key-encryption key at {path} (mode 0600); back it up", file=sys.stderr)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"KEYWARD_KEK_FILE {path} is readable by others; chmod 600 it")
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except ValueError:
        raise ConfigurationError(f"KEYWARD_KEK_FILE {path} is not base64") from None
    if len(key) != 32:
        raise ConfigurationError(f"KEYWARD_KEK_FILE {path} must hold 32 bytes (base64), found {len(key)}")
    return key
