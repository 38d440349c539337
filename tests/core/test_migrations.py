"""Migrations build the whole schema on empty SQLite and PostgreSQL databases, and match the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from conftest import create_postgres_database, drop_postgres_database

from core.db import tortoise_config
from models import attachment_generation

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_TABLES = {
    "organization",
    "principal",
    "api_token",
    "product_membership",
    "application",
    "application_membership",
    "application_profile",
    "certificate_authority",
    "certificate_policy",
    "certificate_profile",
    "certificate",
    "audit_event",
    "audit_chain_head",
    "outbox_event",
}


def _upgrade(database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    kek = tmp_path / "kek.key"
    if not kek.exists():
        kek.write_text("A" * 43 + "=\n")
        kek.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")} | {
        "KEYWARD_DATABASE_URL": database_url,
        "KEYWARD_KEK_FILE": str(kek),
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True
    )


async def test_upgrade_builds_an_empty_sqlite_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "fresh.sqlite3"
    result = await asyncio.to_thread(_upgrade, f"sqlite://{path}", tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        watched = {row[0] for row in conn.execute("SELECT tbl_name FROM sqlite_master WHERE type='trigger'")}
    assert EXPECTED_TABLES <= tables
    # models.attachment_generation: the counter and a trigger on each table it watches (SQLite only).
    assert attachment_generation.TABLE in tables
    assert watched == set(attachment_generation.WATCHED_TABLES)
    assert any("certificate" in name for name in indexes)
    again = await asyncio.to_thread(_upgrade, f"sqlite://{path}", tmp_path)
    assert again.returncode == 0, again.stderr


async def test_upgrade_builds_an_empty_postgres_database(tmp_path: Path) -> None:
    url = await create_postgres_database()
    try:
        result = await asyncio.to_thread(_upgrade, url, tmp_path)
        assert result.returncode == 0, result.stderr
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            index_rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'certificate'")
        finally:
            await conn.close()
        assert EXPECTED_TABLES <= {row["tablename"] for row in rows}
        assert attachment_generation.TABLE not in {row["tablename"] for row in rows}
        assert len(index_rows) >= 6
    finally:
        await drop_postgres_database(url)


async def test_models_have_no_changes_missing_from_the_migrations() -> None:
    script = (
        "import asyncio\n"
        "from tortoise.migrations.autodetector import MigrationAutodetector\n"
        "from tortoise.cli.cli import tortoise_cli_context\n"
        "from core.db import tortoise_config\n"
        "async def main():\n"
        "    config = tortoise_config('sqlite://:memory:')\n"
        "    async with tortoise_cli_context(config) as ctx:\n"
        "        writers = await MigrationAutodetector(ctx.apps, config['apps']).changes()\n"
        "        print('PENDING' if writers else 'CLEAN', [w.name for w in writers])\n"
        "asyncio.run(main())\n"
    )
    assert tortoise_config("sqlite://:memory:")["apps"]["models"]["migrations"] == "models.migrations"
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CLEAN"), f"run `make migrations`: {result.stdout}"
