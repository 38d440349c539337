"""The attachment generation (SQLite only): a counter that moves on with every change to the rows an ACME
request's attachment lookup reads, kept by triggers inside the writing transaction itself.

Each API process on a SQLite file keeps the attachment rows it has read (core.acme_account) and, while the
counter has not moved, reads only the counter. The lookup joins six tables and looks into two more; a
commit by another process empties SQLite's page cache, so under load every request paid for all their
pages afresh (about 100 µs a request).
A change commits with its increment or not at all, and the rows are read in the same statement as the
counter, so a process never keeps rows under a generation they do not belong to.

PostgreSQL keeps no such table: its buffers are shared between connections, and the lookup reads it anew.
The migration (0008) and core.db.generate_schema (tests, benchmarks) both install it; `install` is
idempotent, so a later migration that watches one more table calls it again.
"""

from __future__ import annotations

from typing import Any

TABLE = "attachment_generation"
# Every table core.issuance's attachment statement reads, the account and approval coverage included.
WATCHED_TABLES = (
    "application",
    "application_profile",
    "certificate_profile",
    "certificate_policy",
    "certificate_authority",
    "approval_policy",
    "approval_policy_attachment",
    "acme_account",
)
_EVENTS = ("INSERT", "UPDATE", "DELETE")
READ_SQL = f'SELECT "value" FROM "{TABLE}" WHERE "id" = 1'


def _trigger(table: str, event: str) -> str:
    return f"{TABLE}_{table}_{event.lower()}"


def install_statements() -> list[str]:
    statements = [
        f'CREATE TABLE IF NOT EXISTS "{TABLE}" ("id" INTEGER PRIMARY KEY CHECK ("id" = 1), '
        '"value" INTEGER NOT NULL)',
        f'INSERT OR IGNORE INTO "{TABLE}" ("id", "value") VALUES (1, 0)',
    ]
    for table in WATCHED_TABLES:
        for event in _EVENTS:
            statements.append(
                f'CREATE TRIGGER IF NOT EXISTS "{_trigger(table, event)}" AFTER {event} ON "{table}" '
                f'BEGIN UPDATE "{TABLE}" SET "value" = "value" + 1 WHERE "id" = 1; END'
            )
    return statements


def remove_statements() -> list[str]:
    drops = [
        f'DROP TRIGGER IF EXISTS "{_trigger(table, event)}"' for table in WATCHED_TABLES for event in _EVENTS
    ]
    return [*drops, f'DROP TABLE IF EXISTS "{TABLE}"']


async def _run(client: Any, statements: list[str], collected: list[str] | None) -> None:
    if client.capabilities.dialect != "sqlite":
        return
    for statement in statements:
        if collected is not None:  # `sqlmigrate`: printed, not run
            collected.append(statement + ";")
        else:
            await client.execute_script(statement)


async def install(client: Any, collected: list[str] | None = None) -> None:
    """Create the counter and its triggers on a SQLite database (nothing on PostgreSQL)."""
    await _run(client, install_statements(), collected)


async def remove(client: Any, collected: list[str] | None = None) -> None:
    await _run(client, remove_statements(), collected)
