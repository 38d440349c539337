"""ACME replay nonces in memory shared by the processes of one machine, for Keyward on a SQLite file.

On SQLite every Keyward process (the API processes of `serve --workers N`, a CLI command) runs beside the
database file on one machine. Kept as rows, nonces cost each ACME POST a write transaction of its own: the
writer's turn, SQLite's locks, a WAL commit of four or five pages, for a value that needs neither to survive
a crash nor to reach another machine (bench.acme_load: 12% of the server CPU an order cost). Here they live
in a file beside the database (`<file>-nonces`), mapped into memory by every process: a ring of SLOTS slots,
each holding the random tag of the nonce issued in it and that nonce's expiry. A nonce names its slot and
carries its tag; using it clears the slot under an exclusive flock on the file, so across processes only the
first request with a nonce finds it. A slot is issued again after SLOTS newer nonces (an hour at ~300 new
nonces a second): an older nonce still unused is then refused as badNonce, as an expired one is, and the
client retries with the fresh nonce the problem carries.

core.sqlite_inline opens the ledger of a database file (not for an in-memory database, nor on Windows);
PostgreSQL (several machines) keeps its nonces in the acme_nonce table (core.acme_account).
"""

from __future__ import annotations

import base64
import mmap
import os
import re
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # not on Windows: core.sqlite_inline opens no ledger there, nonces stay in the database
    fcntl = None  # type: ignore[assignment]

SLOTS = 1 << 20  # 16 MiB of slots
_MAGIC = b"KWNONCE1"
_HEADER = struct.Struct("<8sIQ")  # magic, slot count, how many nonces were ever issued
_HEADER_BYTES = 64
_SLOT = struct.Struct("<12sI")  # the tag of the nonce issued in the slot (zeros once used), its expiry
_TAG_BYTES = 12
_EMPTY = bytes(_TAG_BYTES)
_NONCE = struct.Struct(">I12s")  # what a nonce carries: its slot, its tag
_NONCE_TEXT = re.compile(r"[A-Za-z0-9_-]{22}")  # the unpadded base64url of _NONCE's 16 bytes


class NonceLedger:
    """The nonces of one database file; every method is one short critical section under the flock."""

    def __init__(self, path: str, slots: int = SLOTS) -> None:
        assert fcntl is not None
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self._locked_fd():
                self._slots = self._adopt_or_initialize(slots)
            self._map = mmap.mmap(self._fd, _HEADER_BYTES + self._slots * _SLOT.size)
        except BaseException:
            os.close(self._fd)
            raise

    def _adopt_or_initialize(self, slots: int) -> int:
        """A ledger another process made is used as it is (its slot count included); a missing, empty or
        unreadable one is laid out afresh (the file's zeros are empty slots)."""
        header = os.pread(self._fd, _HEADER.size, 0)
        if len(header) == _HEADER.size:
            magic, existing, _ = _HEADER.unpack(header)
            if magic == _MAGIC and existing > 0:
                if os.fstat(self._fd).st_size >= _HEADER_BYTES + existing * _SLOT.size:
                    return int(existing)
        os.ftruncate(self._fd, 0)
        size = _HEADER_BYTES + slots * _SLOT.size
        os.ftruncate(self._fd, size)
        if hasattr(os, "posix_fallocate"):
            # Blocks on disk now: a page of a sparse mapping first written on a full disk kills the process
            # (SIGBUS); here the disk being full fails this call instead.
            os.posix_fallocate(self._fd, 0, size)
        os.pwrite(self._fd, _HEADER.pack(_MAGIC, slots, 0), 0)
        return slots

    @contextmanager
    def _locked_fd(self) -> Iterator[None]:
        assert fcntl is not None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def issue(self, expires: int) -> str:
        """A fresh nonce, valid until `expires` (Unix seconds)."""
        with self._locked_fd():
            return self._issue(expires)

    def use(self, nonce: str, now: int) -> bool:
        """Use `nonce` up: True the first time it is presented before its expiry, False ever after."""
        with self._locked_fd():
            return self._use(nonce, now)

    def replace(self, nonce: str, now: int, expires: int) -> tuple[bool, str]:
        """use(nonce) and a fresh nonce for the answer, in one critical section."""
        with self._locked_fd():
            return self._use(nonce, now), self._issue(expires)

    def _issue(self, expires: int) -> str:
        magic, slots, issued = _HEADER.unpack_from(self._map, 0)
        slot = issued % slots
        tag = _EMPTY
        while tag == _EMPTY:
            tag = secrets.token_bytes(_TAG_BYTES)
        _SLOT.pack_into(self._map, _HEADER_BYTES + slot * _SLOT.size, tag, expires)
        _HEADER.pack_into(self._map, 0, magic, slots, issued + 1)
        return base64.urlsafe_b64encode(_NONCE.pack(slot, tag)).rstrip(b"=").decode("ascii")

    def _use(self, nonce: str, now: int) -> bool:
        if not _NONCE_TEXT.fullmatch(nonce):
            return False
        raw = base64.urlsafe_b64decode(nonce + "==")
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != nonce:
            return False  # the same bytes written otherwise (the last character's spare bits)
        slot, tag = _NONCE.unpack(raw)
        if slot >= self._slots or tag == _EMPTY:
            return False
        offset = _HEADER_BYTES + slot * _SLOT.size
        stored, expires = _SLOT.unpack_from(self._map, offset)
        if stored != tag:
            return False  # used already, or its slot was issued again since
        _SLOT.pack_into(self._map, offset, _EMPTY, 0)
        return bool(expires > now)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
