"""core.nonce_ledger: ACME nonces shared by the processes on one SQLite file, each usable once."""

from __future__ import annotations

import base64
import fcntl
import multiprocessing
import os
import struct
import threading
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from core.nonce_ledger import NonceLedger

NOW = 1_800_000_000
LATER = NOW + 3600


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[NonceLedger]:
    opened = NonceLedger(str(tmp_path / "db.sqlite3-nonces"), slots=64)
    yield opened
    opened.close()


def test_a_nonce_is_used_once(ledger: NonceLedger) -> None:
    first, second = ledger.issue(LATER), ledger.issue(LATER)
    assert first != second
    assert ledger.use(first, NOW)
    assert not ledger.use(first, NOW), "a replayed nonce"
    assert ledger.use(second, NOW)


def test_replace_uses_one_and_issues_the_next(ledger: NonceLedger) -> None:
    nonce = ledger.issue(LATER)
    used, fresh = ledger.replace(nonce, NOW, LATER)
    assert used and fresh != nonce
    used_again, fresher = ledger.replace(nonce, NOW, LATER)
    assert not used_again, "the replaced nonce is gone"
    assert ledger.use(fresh, NOW) and ledger.use(fresher, NOW)


def test_an_expired_nonce_is_refused_and_spent(ledger: NonceLedger) -> None:
    nonce = ledger.issue(NOW + 5)
    assert not ledger.use(nonce, NOW + 5)
    assert not ledger.use(nonce, NOW), "refusing it used it up"


def test_a_slot_issued_again_refuses_its_old_nonce(ledger: NonceLedger) -> None:
    oldest = ledger.issue(LATER)
    newer = [ledger.issue(LATER) for _ in range(64)]  # the ring comes round to oldest's slot
    assert not ledger.use(oldest, NOW)
    assert ledger.use(newer[0], NOW) and ledger.use(newer[-1], NOW)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "short",
        "A" * 23,
        "!" * 22,
        "A" * 22,  # slot 0, an all-zero tag: what an empty slot holds
        base64.urlsafe_b64encode(struct.pack(">I12s", 10_000, b"x" * 12)).rstrip(b"=").decode(),  # no slot
    ],
)
def test_malformed_and_unknown_values_are_refused(ledger: NonceLedger, value: str) -> None:
    ledger.issue(LATER)
    assert not ledger.use(value, NOW)


def test_the_same_bytes_spelled_otherwise_are_refused(ledger: NonceLedger) -> None:
    nonce = ledger.issue(LATER)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(nonce[-1])
    # 22 characters carry 132 bits for 128: the last one's low 4 bits are spare.
    respelled = nonce[:-1] + alphabet[(last & ~0xF) | ((last + 1) & 0xF)]
    assert base64.urlsafe_b64decode(respelled + "==") == base64.urlsafe_b64decode(nonce + "==")
    assert not ledger.use(respelled, NOW)
    assert ledger.use(nonce, NOW), "the refused spelling did not spend the real nonce"


def test_processes_opening_one_file_share_its_nonces(tmp_path: Path) -> None:
    path = str(tmp_path / "shared-nonces")
    first = NonceLedger(path, slots=64)
    second = NonceLedger(path, slots=1024)  # adopts the layout the first one made
    try:
        nonce = first.issue(LATER)
        assert second.use(nonce, NOW)
        assert not first.use(nonce, NOW)
        following = second.issue(LATER)
        assert following != nonce and first.use(following, NOW)
    finally:
        first.close()
        second.close()


def test_an_unreadable_file_is_laid_out_afresh(tmp_path: Path) -> None:
    path = tmp_path / "garbage-nonces"
    path.write_bytes(b"not a ledger" * 100)
    ledger = NonceLedger(str(path), slots=16)
    try:
        assert ledger.use(ledger.issue(LATER), NOW)
        assert path.stat().st_size == 64 + 16 * 16
    finally:
        ledger.close()


def test_every_use_waits_for_another_process_holding_the_file(tmp_path: Path) -> None:
    """The check and the clearing of a slot happen under the file's flock: a second process cannot slip
    between them and accept the same nonce."""
    path = tmp_path / "locked-nonces"
    ledger = NonceLedger(str(path), slots=16)
    nonce = ledger.issue(LATER)
    other = os.open(path, os.O_RDWR)  # its own open file: as another process, for flock
    fcntl.flock(other, fcntl.LOCK_EX)
    results: list[bool] = []
    user = threading.Thread(target=lambda: results.append(ledger.use(nonce, NOW)))
    user.start()
    user.join(0.3)
    assert user.is_alive() and not results, "the ledger used a nonce while another holder had the lock"
    fcntl.flock(other, fcntl.LOCK_UN)
    user.join(5)
    os.close(other)
    ledger.close()
    assert results == [True]


def _use_all(path: str, nonces: list[str], start: Event) -> list[str]:
    ledger = NonceLedger(path)
    start.wait()
    try:
        return [nonce for nonce in nonces if ledger.use(nonce, NOW)]
    finally:
        ledger.close()


def test_across_processes_racing_for_the_same_nonces_each_is_used_once(tmp_path: Path) -> None:
    """Four processes (as `serve --workers 4`) present the same 2,000 nonces at once."""
    path = str(tmp_path / "raced-nonces")
    issuer = NonceLedger(path, slots=4096)
    nonces = [issuer.issue(LATER) for _ in range(2000)]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(4) as pool:
            pending = [pool.apply_async(_use_all, (path, nonces, start)) for _ in range(4)]
            start.set()
            accepted = [nonce for result in pending for nonce in result.get(timeout=120)]
    issuer.close()
    assert sorted(accepted) == sorted(nonces), "each nonce accepted exactly once across the processes"
