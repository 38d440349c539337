"""Database wiring shared by the API, the worker, the CLI and the tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.api import migrate

from models import attachment_generation

MODEL_MODULES = ["models"]


def normalize_url(url: str) -> str:
    """Tortoise wants asyncpg:// or postgres://; accept postgresql:// too, as libpq users write it."""
    if url.startswith("postgresql://"):
        return "postgres://" + url[len("postgresql://") :]
    return url


def _connection_config(database_url: str) -> str | dict[str, Any]:
    """PostgreSQL as Tortoise parses the URL; SQLite on core.sqlite_inline (statements on the loop)."""
    url = normalize_url(database_url)
    if not url.startswith("sqlite://"):
        return url
    config = expand_db_url(url)
    config["engine"] = "core.sqlite_inline"
    return config


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": _connection_config(database_url)},
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


def sqlite_path(database_url: str) -> str | None:
    """The path of a sqlite:// URL's database (None for PostgreSQL and an in-memory database)."""
    if not database_url.startswith("sqlite://"):
        return None
    path = database_url[len("sqlite://") :].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def _ensure_sqlite_directory(database_url: str) -> None:
    path = sqlite_path(database_url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


async def init_db(database_url: str) -> None:
    """Open connections for a long-running process (API or worker); schema comes from migrations."""
    _ensure_sqlite_directory(database_url)
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)


async def generate_schema() -> None:
    """The schema straight from the models (tests, benchmarks), with what the migrations add beside them
    (models.attachment_generation): a database built so must behave as a migrated one."""
    await Tortoise.generate_schemas()
    await attachment_generation.install(Tortoise.get_connection("default"))


async def upgrade_db(database_url: str) -> None:
    """Apply every pending migration (`keyward db upgrade`)."""
    _ensure_sqlite_directory(database_url)
    await migrate(config=tortoise_config(database_url))
    await Tortoise.close_connections()


async def close_db() -> None:
    await Tortoise.close_connections()


async def create_scratch_database(admin_url: str, *, prefix: str) -> str:
    """A new, empty PostgreSQL database next to `admin_url`'s, for tests and benchmarks; returns its URL."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def drop_scratch_database(admin_url: str, url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()
