"""core.sqlite_inline: SQLite statements on the loop's thread, a locked database waited for off it, WAL
checkpoints in their own thread, and ACME bookkeeping not flushed on its own.

These run on a SQLite file of their own whatever KEYWARD_TEST_DB says: the backend is SQLite's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
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


async def test_under_a_steady_stream_of_commits_the_log_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits never pause, so a passive copy never finds the log empty: without the checkpointer's
    restart the WAL file grew by everything written (hundreds of MB a minute under ACME load)."""
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_EVERY_SECONDS", 0.02)
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_WAL_BYTES", 256 * 1024)
    path = tmp_path / "busy.sqlite3"
    db = InlineSqliteClient(file_path=str(path), connection_name="inline-busy", synchronous="OFF")
    await db.create_connection(with_db=True)
    try:
        async with db.acquire_connection() as raw:
            kept = (await raw.execute_fetchall("PRAGMA journal_size_limit"))[0][0]
        assert kept == sqlite_inline.WAL_KEPT_BYTES, "Tortoise's 16 KiB cut the log back at each restart"
        await db.execute_script("CREATE TABLE item (id INTEGER PRIMARY KEY, body BLOB)")
        written = 0
        while written < 32 << 20:
            await db.execute_insert("INSERT INTO item (body) VALUES (?)", [bytes(8192)])
            await db.execute_query("DELETE FROM item WHERE id < (SELECT max(id) FROM item) - 100")
            written += 8192
            if written % (16 * 8192) == 0:
                await asyncio.sleep(0.002)  # as a server's loop does between requests: other threads run
        wal = (tmp_path / "busy.sqlite3-wal").stat().st_size
        assert wal < 16 << 20, f"the log grew to {wal >> 20} MiB for {written >> 20} MiB written"
    finally:
        await db.close()


async def _transaction(client: InlineSqliteClient, body: bytes, *, give_up: bool = False) -> None:
    """An insert in a transaction, as Tortoise's in_transaction() runs it with the client's context."""
    transaction = client._in_transaction().connection
    async with client._lock:
        await transaction.begin()
        await transaction.execute_insert("INSERT INTO item (body) VALUES (?)", [body])
        if give_up:
            await transaction.rollback()
        else:
            await transaction.commit()


@pytest.fixture
def flushes(client: InlineSqliteClient, monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """Each flush of the log, as (whether the writer's turn was free then, rows committed then): what
    another process could do and see while this one waited for the disk."""
    seen: list[tuple[bool, int]] = []
    flush = sqlite_inline._fdatasync

    def watched(fd: int) -> None:
        assert os.path.samestat(os.fstat(fd), os.stat(f"{client.filename}-wal")), "the log is flushed"
        probe = os.open(f"{client.filename}-writer", os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(probe)
        with contextlib.closing(sqlite3.connect(client.filename)) as other:
            seen.append((free, other.execute("SELECT count(*) FROM item").fetchone()[0]))
        flush(fd)

    monkeypatch.setattr(sqlite_inline, "_fdatasync", watched)
    return seen


async def test_a_durable_commit_is_flushed_once_the_writers_turn_is_over(
    client: InlineSqliteClient, flushes: list[tuple[bool, int]]
) -> None:
    """On a WAL file commits run at synchronous=OFF and the durable ones flush the log afterwards: before
    the caller goes on, but no longer while every other writer waits (70% of the turn under ACME load)."""
    await _transaction(client, b"in a transaction")
    assert flushes == [(True, 1)]
    await client.execute_insert("INSERT INTO item (body) VALUES (?)", [b"on its own"])
    assert flushes == [(True, 1), (True, 2)]
    await client.execute_query("SELECT * FROM item")
    await _transaction(client, b"rolled back", give_up=True)
    assert flushes == [(True, 1), (True, 2)], "reads and rollbacks flush nothing"
    async with client.acquire_connection() as raw:
        assert (await raw.execute_fetchall("PRAGMA synchronous"))[0][0] == 0


async def test_acme_bookkeeping_is_not_flushed_alone(
    client: InlineSqliteClient, flushes: list[tuple[bool, int]]
) -> None:
    async with client.acquire_connection() as raw:
        insert: acme_sql.Step = ("count", "INSERT INTO item (body) VALUES (?)", [b"bookkeeping"])
        await acme_sql._sqlite_steps(raw, [insert], True)
        await acme_sql._sqlite_steps(raw, [insert], False)
    assert flushes == []
    await client.execute_insert("INSERT INTO item (body) VALUES (?)", [b"durable"])
    assert flushes == [(True, 3)], "the next durable commit flushes the bookkeeping with it"


async def test_a_failed_flush_fails_the_commit(
    client: InlineSqliteClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sqlite_inline, "_fdatasync", broken)
    # As any failed commit: sqlite3's error from a transaction's commit, Tortoise's from a statement.
    with pytest.raises(sqlite3.OperationalError, match="could not be flushed to disk"):
        await _transaction(client, b"not durable")
    with pytest.raises(OperationalError, match="could not be flushed to disk"):
        await client.execute_insert("INSERT INTO item (body) VALUES (?)", [b"not durable either"])
    monkeypatch.undo()
    await client.execute_insert("INSERT INTO item (body) VALUES (?)", [b"the turn was let go"])


async def test_with_a_rollback_journal_durability_is_the_commits_and_comes_back_after_bookkeeping(
    tmp_path: Path,
) -> None:
    db = InlineSqliteClient(
        file_path=str(tmp_path / "journal.sqlite3"), connection_name="inline-journal", journal_mode="DELETE"
    )
    await db.create_connection(with_db=True)
    try:
        await db.execute_script("CREATE TABLE item (id INTEGER PRIMARY KEY, body BLOB)")
        async with db.acquire_connection() as raw:
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
        await _transaction(db, b"durable")
        assert (await db.execute_query_dict("SELECT count(*) AS n FROM item")) == [{"n": 1}]
    finally:
        await db.close()


async def _second_connection(client: InlineSqliteClient, name: str) -> InlineSqliteClient:
    """Another client on the same file, as another process (`serve --workers N`, a CLI command) has."""
    other = InlineSqliteClient(file_path=client.filename, connection_name=name)
    await other.create_connection(with_db=True)
    return other


async def test_a_transaction_that_reads_then_writes_survives_another_processs_write(
    client: InlineSqliteClient,
) -> None:
    """Transactions begin IMMEDIATE: the other writer waits for ours, instead of ours failing on a snapshot
    it can no longer write from (a deferred BEGIN fails here with SQLITE_BUSY_SNAPSHOT)."""
    await client.execute_insert("INSERT INTO item (id, body) VALUES (1, ?)", [b"0"])
    other = await _second_connection(client, "inline-other")
    read = asyncio.Event()

    async def read_then_write() -> None:
        # What Tortoise's in_transaction() does with the client's transaction context.
        transaction = client._in_transaction().connection
        assert isinstance(transaction, sqlite_inline.InlineTransactionWrapper)
        async with client._lock:
            await transaction.begin()
            rows = await transaction.execute_query_dict("SELECT body FROM item WHERE id = 1")
            read.set()
            await asyncio.sleep(0.3)  # the other process writes meanwhile
            following = str(int(rows[0]["body"]) + 1).encode()
            await transaction.execute_query("UPDATE item SET body = ? WHERE id = 1", [following])
            await transaction.commit()

    async def write_meanwhile() -> None:
        await read.wait()
        await other.execute_query("UPDATE item SET body = CAST(body AS INTEGER) + 1 WHERE id = 1")

    try:
        await asyncio.wait_for(asyncio.gather(read_then_write(), write_meanwhile()), 10)
        rows = await other.execute_query_dict("SELECT CAST(body AS INTEGER) AS n FROM item WHERE id = 1")
        assert rows == [{"n": 2}], "both increments landed, one after the other"
    finally:
        await other.close()


async def test_acme_steps_in_a_transaction_take_the_write_lock_first(client: InlineSqliteClient) -> None:
    other = await _second_connection(client, "inline-acme-other")
    try:
        async with client.acquire_connection() as raw:
            steps: list[acme_sql.Step] = [
                ("rows", "SELECT count(*) AS n FROM item", []),
                ("count", "INSERT INTO item (body) VALUES (?)", [b"ours"]),
            ]
            other_raw = other._connection
            assert isinstance(other_raw, sqlite_inline.InlineConnection)
            other_raw._conn.execute("BEGIN IMMEDIATE")
            other_raw._conn.execute("INSERT INTO item (body) VALUES (?)", [b"theirs"])
            running = asyncio.create_task(acme_sql._sqlite_steps(raw, steps, True))
            await asyncio.sleep(0.3)
            assert not running.done(), "the transaction waits for the other writer at BEGIN"
            other_raw._conn.execute("COMMIT")
            results = await asyncio.wait_for(running, 5)
        assert results == [[{"n": 1}], 1], "it began after the other's commit, so its read saw that row"
    finally:
        await other.close()


def _turn_is_free(database: str) -> bool:
    """Whether a process could take the writer turn now (an exclusive flock on `<file>-writer`)."""
    fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


async def _until_turn_is_free(database: str) -> None:
    for _ in range(200):
        if _turn_is_free(database):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer turn was never let go")


async def test_keyward_writers_take_turns_and_readers_do_not_wait(
    client: InlineSqliteClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction holds this process's writer turn until it ends; another connection's write waits for
    the turn (woken when it is let go, not polling SQLite's lock), and its reads go on meanwhile."""
    other = await _second_connection(client, "inline-turns")
    reader = await _second_connection(client, "inline-reader")
    met_sqlites_lock: list[str] = []
    is_busy = sqlite_inline._is_busy

    def noting_busy(exc: sqlite3.OperationalError) -> bool:
        met_sqlites_lock.append(str(exc))
        return is_busy(exc)

    monkeypatch.setattr(sqlite_inline, "_is_busy", noting_busy)
    try:
        async with client.acquire_connection() as raw:
            await raw.execute(sqlite_inline.BEGIN)
            await raw.execute("INSERT INTO item (body) VALUES (?)", [b"ours"])
            assert not _turn_is_free(client.filename)
            insert = asyncio.create_task(
                other.execute_insert("INSERT INTO item (body) VALUES (?)", [b"theirs"])
            )
            await asyncio.sleep(0.2)
            assert not insert.done(), "the other writer waits for its turn"
            assert await reader.execute_query_dict("SELECT count(*) AS n FROM item") == [{"n": 0}]
            await raw.commit()
        await asyncio.wait_for(insert, 5)
        assert await other.execute_query_dict("SELECT count(*) AS n FROM item") == [{"n": 2}]
        assert met_sqlites_lock == [], "nobody met SQLite's lock: the turn came first"
        await _until_turn_is_free(client.filename)
    finally:
        await other.close()
        await reader.close()


async def test_a_writer_that_stops_waiting_for_its_turn_leaves_it_free(
    client: InlineSqliteClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_inline, "BUSY_TIMEOUT_MS", 200)
    other = await _second_connection(client, "inline-gives-up")
    try:
        async with client.acquire_connection() as raw:
            await raw.execute(sqlite_inline.BEGIN)
            with pytest.raises(OperationalError, match="database is locked"):
                await other.execute_insert("INSERT INTO item (body) VALUES (?)", [b"timed out"])
            cancelled = asyncio.create_task(
                other.execute_insert("INSERT INTO item (body) VALUES (?)", [b"x"])
            )
            await asyncio.sleep(0.05)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            await raw.execute("INSERT INTO item (body) VALUES (?)", [b"ours"])
            await raw.commit()
        # The threads that still waited got the turn when the transaction ended, and let it go at once.
        await _until_turn_is_free(client.filename)
        await asyncio.wait_for(other.execute_insert("INSERT INTO item (body) VALUES (?)", [b"later"]), 5)
        rows = await client.execute_query_dict("SELECT body FROM item ORDER BY id")
        assert rows == [{"body": b"ours"}, {"body": b"later"}]
    finally:
        await other.close()
