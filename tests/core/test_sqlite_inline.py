"""core.sqlite_inline: SQLite statements on the loop's thread, a locked database waited for off it, WAL
checkpoints in their own thread, and ACME bookkeeping not flushed on its own.

These run on a SQLite file of their own whatever KEYWARD_TEST_DB says: the backend is SQLite's alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tortoise.exceptions import IntegrityError, OperationalError

from core import acme_sql, sqlite_inline
from core.sqlite_inline import InlineSqliteClient


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[InlineSqliteClient]:
    db = InlineSqliteClient(file_path=str(tmp_path / "inline.sqlite3"), connection_name="inline-test")
    await db.create_connection(with_db=True)
    await db.execute_script("CREATE TABLE item (id INTEGER PRIMARY KEY, body BLOB)")
    try:
        yield db
    finally:
        await db.close()


async def test_statements_run_and_errors_are_tortoises(client: InlineSqliteClient) -> None:
    await client.execute_insert("INSERT INTO item (body) VALUES (?)", [b"kept"])
    await client.execute_many("INSERT INTO item (body) VALUES (?)", [[b"two"], [b"three"]])
    rows = await client.execute_query_dict("SELECT body FROM item ORDER BY id")
    assert rows == [{"body": b"kept"}, {"body": b"two"}, {"body": b"three"}]
    with pytest.raises(OperationalError, match="no such table"):
        await client.execute_query("SELECT * FROM missing")
    with pytest.raises(IntegrityError):
        await client.execute_insert("INSERT INTO item (id, body) VALUES (1, ?)", [b"duplicate id"])


async def test_a_locked_database_is_waited_for_off_the_loop(client: InlineSqliteClient) -> None:
    """Another process's write lock: the statement waits in a thread and the loop keeps running."""
    blocker = sqlite3.connect(client.filename, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    blocker.execute("INSERT INTO item (body) VALUES (?)", [b"other process"])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    insert = asyncio.create_task(client.execute_insert("INSERT INTO item (body) VALUES (?)", [b"ours"]))
    await asyncio.sleep(0.4)
    assert not insert.done(), "the insert cannot have gone through while the other writer holds the lock"
    assert ticks >= 10, f"the loop was blocked while the statement waited ({ticks} ticks in 0.4 s)"
    blocker.execute("COMMIT")
    await asyncio.wait_for(insert, 5)
    ticking.cancel()
    blocker.close()
    rows = await client.execute_query_dict("SELECT body FROM item ORDER BY id")
    assert [row["body"] for row in rows] == [b"other process", b"ours"]
    # Back on the loop's thread, statements do not wait: the busy timeout is off again.
    async with client.acquire_connection() as raw:
        assert (await raw.execute_fetchall("PRAGMA busy_timeout"))[0][0] == 0


async def test_checkpoints_are_the_checkpointers_not_the_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_EVERY_SECONDS", 0.05)
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_WAL_BYTES", 64 * 1024)
    path = tmp_path / "checkpointed.sqlite3"
    db = InlineSqliteClient(file_path=str(path), connection_name="inline-checkpoint")
    await db.create_connection(with_db=True)
    checkpointer = db._connection._checkpointer  # type: ignore[union-attr]
    try:
        assert isinstance(checkpointer, threading.Thread) and checkpointer.is_alive()
        async with db.acquire_connection() as raw:
            assert (await raw.execute_fetchall("PRAGMA wal_autocheckpoint"))[0][0] == 0
        await db.execute_script("CREATE TABLE item (id INTEGER PRIMARY KEY, body BLOB)")
        before = path.stat().st_size
        for _ in range(200):
            await db.execute_insert("INSERT INTO item (body) VALUES (?)", [bytes(8192)])
        # Commits never copy the WAL back (autocheckpoint is off); the database file grows only when the
        # checkpointer does it.
        for _ in range(100):
            if path.stat().st_size > before + 1_000_000:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > before + 1_000_000, "the checkpointer copied nothing back"
    finally:
        await db.close()
    assert not checkpointer.is_alive(), "closing the connection stops its checkpointer"


async def test_acme_bookkeeping_is_not_flushed_alone_and_durability_comes_back(
    client: InlineSqliteClient,
) -> None:
    async with client.acquire_connection() as raw:
        assert (await raw.execute_fetchall("PRAGMA synchronous"))[0][0] == 2  # FULL
        inside = await acme_sql._sqlite_steps(raw, [("rows", "PRAGMA synchronous", [])], False)
        assert inside == [[{"synchronous": 0}]]
        assert (await raw.execute_fetchall("PRAGMA synchronous"))[0][0] == 2
        # A failing step leaves durability on too, and the transaction rolled back.
        steps: list[acme_sql.Step] = [
            ("count", "INSERT INTO item (body) VALUES (?)", [b"half"]),
            ("count", "INSERT INTO missing VALUES (1)", []),
        ]
        with pytest.raises(OperationalError):
            await acme_sql._sqlite_steps(raw, steps, True)
        assert (await raw.execute_fetchall("PRAGMA synchronous"))[0][0] == 2
        assert (await raw.execute_fetchall("SELECT count(*) FROM item"))[0][0] == 0
