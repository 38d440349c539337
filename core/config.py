"""Settings from the environment: every KEYWARD_* variable is known here, anything else fails at start."""

from __future__ import annotations

import base64
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from core.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite://./data/keyward.sqlite3"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_KEK_FILE = "./data/kek.key"

# Every variable a later feature reads must be listed here, so a typo fails loudly instead of being ignored.
KNOWN_VARIABLES = {
    "KEYWARD_DATABASE_URL",
    "KEYWARD_PUBLIC_URL",
    "KEYWARD_KEK_FILE",
    "KEYWARD_SESSION_TTL_HOURS",
    "KEYWARD_LOG_LEVEL",
}


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    public_url: str = DEFAULT_PUBLIC_URL
    kek_file: str = DEFAULT_KEK_FILE
    session_ttl_hours: int = 12
    log_level: str = "info"
    extra: dict[str, str] = field(default_factory=dict)

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
    return Settings(
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
