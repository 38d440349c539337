"""Operating settings (issue #8): log format, CORS origins, the metrics token and the worker's metrics port.

Parsed here and merged into core.config.Settings by load_settings; each error names its variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.errors import ConfigurationError

OPS_VARIABLES = frozenset(
    {
        "KEYWARD_LOG_FORMAT",
        "KEYWARD_CORS_ORIGINS",
        "KEYWARD_METRICS_TOKEN",
        "KEYWARD_METRICS_TOKEN_FILE",
        "KEYWARD_WORKER_METRICS_PORT",
        "KEYWARD_WORKER_METRICS_HOST",
    }
)


def _origin(text: str) -> str:
    """An exact origin: scheme://host[:port], nothing after it. A wildcard is refused on purpose."""
    parsed = urlparse(text)
    try:
        port_ok = parsed.port is None or 1 <= parsed.port <= 65535
    except ValueError:
        port_ok = False
    if (
        parsed.scheme not in {"http", "https"}
        or not parsed.hostname
        or not port_ok
        or parsed.path not in {"", "/"}
        or parsed.params
        or parsed.query
        or parsed.fragment
        or parsed.username is not None
        or "*" in text
    ):
        raise ConfigurationError(
            f"KEYWARD_CORS_ORIGINS: {text!r} is not an exact origin; list origins such as "
            "https://console.example.com,http://localhost:3000 (no paths, no wildcards)"
        )
    return f"{parsed.scheme}://{parsed.netloc.lower()}"


def _metrics_token(env: dict[str, str]) -> str | None:
    if "KEYWARD_METRICS_TOKEN" in env and "KEYWARD_METRICS_TOKEN_FILE" in env:
        raise ConfigurationError("set KEYWARD_METRICS_TOKEN or KEYWARD_METRICS_TOKEN_FILE, not both")
    token = env.get("KEYWARD_METRICS_TOKEN")
    if "KEYWARD_METRICS_TOKEN_FILE" in env:
        path = Path(env["KEYWARD_METRICS_TOKEN_FILE"])
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"KEYWARD_METRICS_TOKEN_FILE={str(path)!r} cannot be read: {exc.strerror}"
            ) from None
    token = (token or "").strip()
    if token and (len(token) < 16 or any(c.isspace() for c in token)):
        # The value itself never appears in the message.
        raise ConfigurationError("KEYWARD_METRICS_TOKEN must be at least 16 characters without spaces")
    return token or None


def ops_settings(env: dict[str, str]) -> dict[str, Any]:
    log_format = env.get("KEYWARD_LOG_FORMAT", "text").strip().lower()
    if log_format not in {"text", "json"}:
        raise ConfigurationError(f"KEYWARD_LOG_FORMAT={log_format!r} must be text or json")
    origins = tuple(
        dict.fromkeys(
            _origin(item.strip()) for item in env.get("KEYWARD_CORS_ORIGINS", "").split(",") if item.strip()
        )
    )
    port_text = env.get("KEYWARD_WORKER_METRICS_PORT", "").strip()
    if port_text and (not port_text.isdigit() or not 1 <= int(port_text) <= 65535):
        raise ConfigurationError(
            f"KEYWARD_WORKER_METRICS_PORT={port_text!r} must be a port number from 1 to 65535 (unset: off)"
        )
    return {
        "log_format": log_format,
        "cors_origins": origins,
        "metrics_token": _metrics_token(env),
        "worker_metrics_port": int(port_text) if port_text else None,
        "worker_metrics_host": env.get("KEYWARD_WORKER_METRICS_HOST", "127.0.0.1").strip() or "127.0.0.1",
    }
