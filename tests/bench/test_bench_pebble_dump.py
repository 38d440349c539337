"""bench.acme_load's reading of a stalled Pebble's goroutine dump (SIGQUIT), on the shape Go prints."""

from __future__ import annotations

from bench.acme_load import pebble_lock_waits

WAITING_READER = """goroutine {n} [semacquire]:
sync.runtime_SemacquireMutex(0xc0000de084?, 0x0?, 0x0?)
\truntime/sema.go:77 +0x25
sync.(*RWMutex).RLock(...)
\tsync/rwmutex.go:71
github.com/letsencrypt/pebble/db.(*MemoryStore).GetAccountByID(0xc0000de080?, {{0xc00064ab63?, 0x10?}})
\tgithub.com/letsencrypt/pebble/db/memorystore.go:86 +0x5d
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).lookupJWK(0xc0000241e0, 0xc000109a00?, 0x189?)
\tgithub.com/letsencrypt/pebble/wfe/wfe.go:690 +0x2a"""

WAITING_WRITER = """goroutine 9 [semacquire]:
sync.runtime_SemacquireMutex(0xc000491b80?, 0x63?, 0x203000?)
\truntime/sema.go:77 +0x25
sync.(*Mutex).lockSlow(0xc0000de080)
\tsync/mutex.go:171 +0x165
sync.(*RWMutex).Lock(0x0?)
\tsync/rwmutex.go:147 +0x36
github.com/letsencrypt/pebble/db.(*MemoryStore).AddChallenge(0xc0000de080, 0xc000311900)
\tgithub.com/letsencrypt/pebble/db/memorystore.go:281 +0x5d"""

LISTENING = """goroutine 1 [IO wait]:
internal/poll.(*FD).Accept(0xc0000de480)
\tinternal/poll/fd_unix.go:614 +0x234"""


def test_a_deadlocked_pebble_is_told_by_where_its_goroutines_wait() -> None:
    log = "Pebble 2026/12/05 06:12:52 POST /my-order/ -> calling handler()\nSIGQUIT: quit\n\n"
    log += "\n\n".join([LISTENING, *(WAITING_READER.format(n=n) for n in range(10, 13)), WAITING_WRITER])
    assert pebble_lock_waits(log) == (
        "4 of its 5 goroutines wait for a lock (3 in db.(*MemoryStore).GetAccountByID, "
        "1 in db.(*MemoryStore).AddChallenge): Pebble deadlocked"
    )


def test_a_dump_without_lock_waits_says_so() -> None:
    assert pebble_lock_waits(LISTENING) == "its goroutine dump shows no goroutine waiting for a lock"
