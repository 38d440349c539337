"""Tortoise's SQLite backend, with statements run on the event loop's own thread.

Tortoise's stock SQLite client sends every statement to aiosqlite's thread and holds the connection's one
lock until the event loop gets back to the waiting coroutine. A statement costs tens of microseconds, the
trip there and back (queue, GIL hand-over, the loop's queue of ready callbacks) milliseconds under load,
and nothing else reaches the database meanwhile: requests queued on that lock, not on SQLite. Here the
statement runs where it is awaited and the lock is free again as soon as SQLite answers.

A statement that finds the database locked by another process (a CLI command, a second process on the
same file) is not waited for on the loop's thread: it fails at once (busy timeout 0) and is run again in a
thread with the usual busy timeout, so the loop keeps serving while it waits. Statements are serialized by
Tortoise's connection lock, so the thread and the loop never use the connection at the same time.

Disk flushes stay off the loop's thread too, and out of the writer's turn. Commits are durable: on a WAL
file a commit does not wait for the disk (synchronous=OFF), and a durable one is flushed afterwards (the
log's fdatasync, in a thread) before its caller goes on, once the next writer has its turn
(InlineConnection._flush: as safe as synchronous=FULL); with a rollback journal a durable COMMIT runs in
a thread at the configured level. The loop goes on with other requests meanwhile. The WAL is
copied back into the database by a checkpointer thread on its own connection rather than by whichever
commit crosses SQLite's threshold (a checkpoint writes and flushes the database file: milliseconds). And
callers may mark work as bookkeeping (`relaxed`, used for ACME protocol state): its commits are
not flushed on their own; the next durable commit flushes them with it, so a power loss can roll back
only the last bookkeeping, never a certificate.

Several processes may share the file (`keyward serve --workers N`, a CLI command beside the server), so
every transaction begins IMMEDIATE: it takes the write lock first, waiting for it as above. A deferred one
that read before writing would fail outright (SQLITE_BUSY_SNAPSHOT, no waiting helps) whenever another
process had written in between. Keyward's own processes take turns at writing through a lock file beside
the database (`<file>-writer`, flock) before SQLite's lock: SQLite's busy handler sleeps 1, 2, 5, 10 ms...
between tries, so a waiter slept ~3 ms on average for transactions that held the lock under 1 ms, while its
process could not reach the database; a flock waiter wakes the moment the holder lets go. Other programs
writing the file meet SQLite's lock as before.

Selected by core.db.tortoise_config for every sqlite:// URL (engine "core.sqlite_inline").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # not on Windows: there SQLite's busy handler alone takes turns
    fcntl = None  # type: ignore[assignment]

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionContext
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionContext, SqliteTransactionWrapper
from tortoise.exceptions import TransactionManagementError

from core.nonce_ledger import NonceLedger

T = TypeVar("T")

_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

# How long a statement waits for another process's write lock (sqlite3's own default, 5 s).
BUSY_TIMEOUT_MS = 5000
# The checkpointer copies the WAL back this often, and has the log start over once it holds this much.
CHECKPOINT_EVERY_SECONDS = 0.5
CHECKPOINT_WAL_BYTES = 4 << 20
# The log file keeps up to this much of its size when it starts over.
WAL_KEPT_BYTES = 64 << 20
# How long a restarting checkpoint waits for readers to leave the log (writers wait meanwhile).
RESTART_WAIT_MS = 200


# What starts every transaction here (see the module doc).
BEGIN = "BEGIN IMMEDIATE"
_BUSY_SNAPSHOT = 517  # SQLITE_BUSY_SNAPSHOT: this transaction's snapshot is stale; waiting cannot help


# Statements that need no turn at writing: reads, and the ends of a transaction (which holds the turn).
_NO_WRITE = ("SELECT", "PRAGMA", "EXPLAIN", "COMMIT", "ROLLBACK", "END")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY (any variant but a stale snapshot): another connection holds the lock; waiting helps."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "database is locked" in str(exc)
    return bool((code & 0xFF) == sqlite3.SQLITE_BUSY and code != _BUSY_SNAPSHOT)


class InlineCursor:
    """The part of aiosqlite's cursor Tortoise and core.acme_sql use, over a sqlite3 cursor."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def close(self) -> None:
        self._cursor.close()


class WriterTurn:
    """One writer at a time among the processes that open this database file with Keyward (see the module
    doc): an exclusive flock on `<file>-writer`, waited for in a thread so the loop goes on serving."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(f"{path}-writer", os.O_RDWR | os.O_CREAT, 0o600)
        self.held = False

    async def take(self) -> None:
        assert fcntl is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, self._fd, fcntl.LOCK_EX)
            try:
                await asyncio.wait_for(asyncio.shield(waiting), BUSY_TIMEOUT_MS / 1000)
            except (TimeoutError, asyncio.CancelledError) as exc:
                # The thread still waits: whenever it gets the lock, let go of it at once.
                waiting.add_done_callback(self._unlock_once_taken)
                if isinstance(exc, TimeoutError):
                    raise sqlite3.OperationalError("database is locked (another writer's turn)") from None
                raise
        self.held = True

    def take_blocking(self) -> None:
        """For a thread of its own (the checkpointer's): wait here until it is this turn."""
        assert fcntl is not None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._unlock()

    def _unlock_once_taken(self, waited: asyncio.Future[None]) -> None:
        if waited.exception() is None:
            self._unlock()

    def _unlock(self) -> None:
        assert fcntl is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        os.close(self._fd)


class InlineConnection:
    """The part of aiosqlite's connection Tortoise's SQLite client uses, run inline (see module doc)."""

    def __init__(self, path: str) -> None:
        # check_same_thread=False: the busy fallback runs a statement in a worker thread (never two at once).
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        self._synchronous = "FULL"  # the durable level, from the pragmas
        self._level = "FULL"  # the level the connection is at now
        self._relaxing = False
        # WAL at a durable level: commits do not wait for the disk; the log is flushed after them (_flush).
        self._flush_after_commit = False
        self._log_path = ""
        self._log_fd: int | None = None
        self._durable_transaction = False  # the open transaction began outside `relaxed`
        self._checkpointer: Checkpointer | None = None
        self._writer: WriterTurn | None = None
        self._shared_file: str | None = None  # the database file, when other processes may open it too
        self._nonce_ledger: NonceLedger | None = None

    @property
    def total_changes(self) -> int:
        return self._conn.total_changes

    def configured(self, path: str) -> None:
        """Pragmas set: note the durable safety level; WAL databases get their checkpointer thread."""
        level = self._conn.execute("PRAGMA synchronous").fetchone()[0]
        self._synchronous = self._level = ("OFF", "NORMAL", "FULL", "EXTRA")[level]
        if fcntl is not None and path and path != ":memory:" and not path.startswith("file:"):
            self._writer = WriterTurn(path)
            self._shared_file = path
        if str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            return
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer = Checkpointer(path)
        self._checkpointer.start()
        if self._synchronous in ("FULL", "EXTRA"):
            self._flush_after_commit = True
            self._log_path = f"{path}-wal"

    @contextlib.contextmanager
    def relaxed(self) -> Iterator[None]:
        """Commits of statements run in this block are not flushed to disk on their own (see the module doc).

        SQLite fixes a transaction's safety level when it begins, so the level is set before each statement
        that starts one, and only when it changes: back-to-back bookkeeping pays for no pragma."""
        self._relaxing = True
        try:
            yield
        finally:
            self._relaxing = False

    def _apply_level(self) -> None:
        wanted = "OFF" if self._relaxing or self._flush_after_commit else self._synchronous
        if wanted != self._level and not self._conn.in_transaction:
            self._conn.execute(f"PRAGMA synchronous = {wanted}")
            self._level = wanted

    def _waiting(self, call: Callable[[], T]) -> T:
        """In a worker thread: `call` with the busy timeout on, then off again for the loop's thread."""
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            return call()
        finally:
            self._conn.execute("PRAGMA busy_timeout = 0")

    async def _run(self, call: Callable[[], T], sql: str) -> T:
        """`call` runs `sql` (or commits): after this process's turn at writing when it writes outside a
        transaction (a BEGIN, or a statement that commits on its own); the turn ends with the transaction.
        On a WAL file, a durable commit (of a transaction begun outside `relaxed`, or of a write on its
        own) is flushed to disk once the turn is over (_flush)."""
        head = sql.lstrip()[:8].upper()
        writes = not head.startswith(_NO_WRITE)
        alone = not self._conn.in_transaction
        writer = self._writer
        if writer is not None and not writer.held and writes:
            await writer.take()
        try:
            self._apply_level()
            try:
                result = call()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                result = await asyncio.to_thread(self._waiting, call)
        finally:
            self._end_turn_unless_in_transaction()
        if self._conn.in_transaction:
            if alone:  # it began a transaction: durable unless bookkeeping
                self._durable_transaction = not self._relaxing
            return result
        ended_durable = not alone and self._durable_transaction and not head.startswith("ROLLBACK")
        self._durable_transaction = False
        if self._flush_after_commit and (ended_durable or (alone and writes and not self._relaxing)):
            await self._flush()
        return result

    def _end_turn_unless_in_transaction(self) -> None:
        if self._writer is not None and not self._conn.in_transaction:
            self._writer.release()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cursor = await self._run(lambda: self._conn.execute(sql, parameters or ()), sql)
        return InlineCursor(cursor)

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any] | None = None) -> list[Any]:
        def run() -> list[Any]:
            cursor = self._conn.execute(sql, parameters or ())
            try:
                return cursor.fetchall()
            finally:
                cursor.close()

        return await self._run(run, sql)

    async def execute_dicts(self, sql: str, parameters: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts by column name, made from plain tuples (cheaper than sqlite3.Row, then dict)."""

        def run() -> list[dict[str, Any]]:
            cursor = self._conn.cursor()
            cursor.row_factory = None
            try:
                rows = cursor.execute(sql, parameters or ()).fetchall()
                names = [column[0] for column in cursor.description or ()]
            finally:
                cursor.close()
            return [dict(zip(names, row, strict=True)) for row in rows]

        return await self._run(run, sql)

    async def execute_insert(self, sql: str, parameters: Sequence[Any] | None = None) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:
            cursor = self._conn.execute(sql, parameters or ())
            try:
                return (cursor.lastrowid,)
            finally:
                cursor.close()

        return await self._run(run, sql)

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        rows = list(parameters)  # an iterator would be spent by a first attempt that found the lock taken
        return InlineCursor(await self._run(lambda: self._conn.executemany(sql, rows), sql))

    async def executescript(self, script: str) -> InlineCursor:
        return InlineCursor(await self._run(lambda: self._conn.executescript(script), "SCRIPT"))

    async def commit(self) -> None:
        """A transaction's durable commit flushes the WAL to disk: that wait happens in a thread. On a WAL
        file it happens after the commit and the end of the writer's turn (see _flush)."""
        if self._conn.in_transaction and self._synchronous != "OFF" and not self._flush_after_commit:
            try:
                await asyncio.to_thread(self._waiting, self._conn.commit)
            finally:
                self._end_turn_unless_in_transaction()
        else:
            await self._run(self._conn.commit, "COMMIT")

    async def rollback(self) -> None:
        await self._run(self._conn.rollback, "ROLLBACK")

    async def _flush(self) -> None:
        """Wait, in a thread, until what the log holds is on disk: the commits before are durable then.

        Commits on a WAL file run at synchronous=OFF and this flush follows the durable ones, after the
        writer's turn has ended: the other processes write meanwhile instead of queueing behind a disk
        flush (it was 70% of the time the turn was held under ACME load). Flushing the log afterwards is
        what synchronous=FULL does inside the commit; the flushed frames may by then have been copied into
        the database file by a checkpoint, which flushes the log before copying and the file after
        (Checkpointer), before any writer may start the log over. Another process may read a commit
        before its flush ends; the caller learns of it only after. A failed flush fails the caller."""
        try:
            await asyncio.to_thread(self._flush_log)
        except OSError as exc:
            raise sqlite3.OperationalError(f"the commit could not be flushed to disk: {exc}") from exc

    def _flush_log(self) -> None:
        if self._log_fd is None:
            try:
                self._log_fd = os.open(self._log_path, os.O_RDONLY)
            except FileNotFoundError:
                return  # no log: everything is in the database file already
        _fdatasync(self._log_fd)

    def nonce_ledger(self) -> NonceLedger | None:
        """The ACME nonces of the processes on this file (core.nonce_ledger), opened on first use; None
        where no other process shares the database (in memory) or flock is missing (Windows)."""
        if self._nonce_ledger is None and self._shared_file is not None:
            self._nonce_ledger = NonceLedger(f"{self._shared_file}-nonces")
        return self._nonce_ledger

    async def close(self) -> None:
        if self._nonce_ledger is not None:
            self._nonce_ledger.close()
            self._nonce_ledger = None
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        if self._level != self._synchronous:
            # The last connection's close copies the log into the file and deletes it: durably.
            self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._conn.close()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Checkpointer(threading.Thread):
    """Copies a WAL database's log back into its file, on a connection and thread of its own.

    PASSIVE first: it never waits for, nor blocks, the serving connections; whatever it could not copy this
    time it copies next time. But under a steady stream of commits the log never empties by itself (a new
    frame always lands while the copy runs), and SQLite only starts writing at the log's beginning again
    once a checkpoint found nothing left: the file then grows without end, every commit appending to
    fresh disk blocks the kernel must allocate and zero. So once the log holds CHECKPOINT_WAL_BYTES, a
    RESTART follows the passive copy, during this process's turn at writing: the few frames that came
    meanwhile are copied, readers leave the log, and the next commit writes at its beginning again, into
    blocks the file already has. Closing the last connection checkpoints the rest."""

    def __init__(self, path: str) -> None:
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self._path = path
        self._stopping = threading.Event()

    def run(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        writer = WriterTurn(self._path) if fcntl is not None else None
        try:
            # A checkpoint then flushes the log before copying it and the file after, whatever the build's
            # default: what lets commits run at synchronous=OFF (InlineConnection._flush).
            connection.execute("PRAGMA synchronous = FULL")
            page_size = connection.execute("PRAGMA page_size").fetchone()[0]
            restarted_at = 0  # the log's length when it was last made to start over (unchanged: idle)
            while not self._stopping.wait(CHECKPOINT_EVERY_SECONDS):
                _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames * page_size >= CHECKPOINT_WAL_BYTES and frames != restarted_at:
                    if self._restart(connection, writer):
                        restarted_at = frames
        except sqlite3.Error:
            return  # the database went away (deleted, closed): nothing left to copy
        finally:
            connection.close()
            if writer is not None:
                writer.close()

    @staticmethod
    def _restart(connection: sqlite3.Connection, writer: WriterTurn | None) -> bool:
        """RESTART blocks writers while it waits for readers: only briefly (readers here are single
        statements), and if they take longer the log restarts next time instead. Whether it did now."""
        if writer is not None:
            writer.take_blocking()
        try:
            connection.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            return not busy
        finally:
            if writer is not None:
                writer.release()

    def stop(self) -> None:
        self._stopping.set()
        self.join()


class InlineTransactionWrapper(SqliteTransactionWrapper):
    """Tortoise's SQLite transaction, begun IMMEDIATE (see the module doc)."""

    async def begin(self) -> None:
        try:
            await self._connection.commit()
            await self._connection.execute(BEGIN)
        except sqlite3.OperationalError as exc:
            raise TransactionManagementError(exc) from exc


class InlineSqliteClient(SqliteClient):
    """SqliteClient on an InlineConnection, its transactions begun IMMEDIATE; the rest is Tortoise's."""

    def _in_transaction(self) -> TransactionContext:
        return SqliteTransactionContext(InlineTransactionWrapper(self), self._lock)

    async def create_connection(self, with_db: bool) -> None:
        if self._connection:
            return
        connection = InlineConnection(self.filename)
        connection._conn.row_factory = sqlite3.Row
        pragmas = {
            **self.pragmas,
            "synchronous": self.pragmas.get("synchronous", "FULL"),
            # Tortoise's 16 KiB would cut the log back at every restart, and regrowing it costs what the
            # restart saves (fresh blocks to allocate and zero): keep what a busy server's log reaches.
            "journal_size_limit": max(int(self.pragmas.get("journal_size_limit", 0)), WAL_KEPT_BYTES),
        }
        for pragma, value in pragmas.items():
            cursor = await connection.execute(f"PRAGMA {pragma}={value}")
            await cursor.close()
        connection.configured(self.filename)
        self._connection = connection  # type: ignore[assignment]  # aiosqlite's interface, inline
        await self._post_connect()


def nonce_ledger_of(client: BaseDBAsyncClient) -> NonceLedger | None:
    """The nonce ledger beside the SQLite file `client` (or its transaction) works on; None on PostgreSQL
    and wherever InlineConnection.nonce_ledger gives none."""
    raw = getattr(client, "_connection", None)
    return raw.nonce_ledger() if isinstance(raw, InlineConnection) else None


client_class = InlineSqliteClient
