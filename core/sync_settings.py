"""KEYWARD_SYNC_* settings, validated at start (read by core/config.py)."""

from __future__ import annotations

import os
from typing import Any

from core.errors import ConfigurationError

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
MAX_CONCURRENCY = 64


def sync_settings(env: dict[str, str]) -> dict[str, Any]:
    text = env.get("KEYWARD_SYNC_MAX_CONCURRENCY", "4").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_CONCURRENCY:
        raise ConfigurationError(
            f"KEYWARD_SYNC_MAX_CONCURRENCY={text!r} must be a whole number from 1 to {MAX_CONCURRENCY}"
        )
    roots: list[str] = []
    for item in filter(None, (part.strip() for part in env.get("KEYWARD_SYNC_LOCAL_ROOTS", "").split(","))):
        if not os.path.isabs(item):
            raise ConfigurationError(
                f"KEYWARD_SYNC_LOCAL_ROOTS: {item!r} must be an absolute directory, e.g. /etc/ssl/keyward"
            )
        roots.append(os.path.normpath(item))
    commands = env.get("KEYWARD_SYNC_POST_COMMANDS", "").strip().lower()
    if commands not in _TRUE | _FALSE:
        raise ConfigurationError(f"KEYWARD_SYNC_POST_COMMANDS={commands!r} must be true or false")
    return {
        "sync_max_concurrency": int(text),
        "sync_local_roots": tuple(roots),
        "sync_post_commands": commands in _TRUE,
    }
