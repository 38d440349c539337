"""Database wiring shared by the API, the worker, the CLI and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.migrations.api import migrate

MODEL_MODULES = ["models"]


def normalize_url(url: str) -> str:
    """Tortoise wants asyncpg:// or postgres://; accept postgresql:// too, as libpq users write it."""
    if url.startswith("postgresql://"):
        return "postgres://" + url[len("postgresql://") :]
    return url


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": normalize_url(database_url)},
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": "models.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _ensure_sqlite_directory(database_url: str) -> None:
    if database_url.startswith("sqlite://"):
        path = database_url[len("sqlite://") :].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


async def init_db(database_url: str) -> None:
    """Open connections for a long-running process (API or worker); schema comes from migrations."""
    _ensure_sqlite_directory(database_url)
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)


async def upgrade_db(database_url: str) -> None:
    """Apply every pending migration (`keyward db upgrade`)."""
    _ensure_sqlite_directory(database_url)
    await migrate(config=tortoise_config(database_url))
    await Tortoise.close_connections()


async def close_db() -> None:
    await Tortoise.close_connections()
