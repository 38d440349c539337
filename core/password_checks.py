"""argon2 verification off the event loop, a few at a time.

One check costs about 0.1 s of CPU and 64 MiB, and EST (HTTP Basic) and SCEP (challenge passwords) let callers
who are not yet authenticated ask for one: without a bound, a flood of wrong passwords would stall the process
or exhaust its memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

CONCURRENT_CHECKS = 2

_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


async def verify_off_loop(check: Callable[[], bool]) -> bool:
    """Run `check` (an argon2 verify) in a thread once one of this loop's slots is free."""
    # A semaphore belongs to the loop it first waits on: one per loop.
    slots = _slots.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(CONCURRENT_CHECKS))
    async with slots:
        return await asyncio.to_thread(check)
