"""Small validation helpers shared by the destinations."""

from __future__ import annotations

import posixpath
from typing import Any

from core.errors import InvalidInput

CONNECT_TIMEOUT_SECONDS = 10.0
TOTAL_TIMEOUT_SECONDS = 60.0


def only_keys(connection: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(connection) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown {what} setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            field="connection",
        )


def only_credentials(credentials: dict[str, str], allowed: set[str], what: str) -> None:
    unknown = sorted(set(credentials) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown {what} credential(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            field="credentials",
        )


def text(connection: dict[str, Any], key: str, *, required: bool = True, limit: int = 1024) -> str | None:
    value = connection.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInput(f"connection.{key} is required", field=f"connection.{key}")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(
            f"connection.{key} must be text of at most {limit} characters", field=f"connection.{key}"
        )
    return value.strip()


def integer(connection: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = connection.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(
            f"connection.{key} must be a whole number from {low} to {high}", field=f"connection.{key}"
        )
    return value


def absolute_posix_directory(connection: dict[str, Any], key: str = "directory") -> str:
    path = text(connection, key)
    assert path is not None
    if not path.startswith("/"):
        raise InvalidInput(
            f"connection.{key} {path!r} must be an absolute path (starting with /)", field=f"connection.{key}"
        )
    if any(part == ".." for part in path.split("/")) or "\x00" in path:
        raise InvalidInput(f"connection.{key} {path!r} must not contain '..'", field=f"connection.{key}")
    return posixpath.normpath(path)


def needs_keystore_password(credentials: dict[str, str], fmt: str) -> None:
    """Checked by the sync service: PKCS#12 and JKS files are encrypted with `keystorePassword`."""
    if fmt in ("pkcs12", "jks") and not credentials.get("keystorePassword"):
        raise InvalidInput(
            f"format {fmt.upper()} needs credentials.keystorePassword", field="credentials.keystorePassword"
        )
