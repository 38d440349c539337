"""Process-wide settings and key-encryption key, set once at start by the API, the worker or the CLI."""

from __future__ import annotations

from core.config import Settings, load_or_create_kek

_settings: Settings | None = None
_kek: bytes | None = None


def configure(settings: Settings, *, kek: bytes | None = None) -> None:
    global _settings, _kek
    _settings = settings
    _kek = kek


def settings() -> Settings:
    if _settings is None:
        raise RuntimeError("core.runtime.configure() was not called")
    return _settings


def kek() -> bytes:
    """Loaded on first use, so commands that never touch a key (schema, db upgrade) never create one."""
    global _kek
    if _kek is None:
        _kek = load_or_create_kek(settings().kek_file)
    return _kek
