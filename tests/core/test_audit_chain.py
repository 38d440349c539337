from __future__ import annotations

import uuid

from tortoise import connections

from core import audit
from core.authz import Actor
from models import AuditEvent


async def _write_three() -> list[AuditEvent]:
    actor = Actor.system(uuid.uuid4(), "test")
    return [
        await audit.record(actor=actor, action=f"test.step{i}", resource_type="test", details={"i": i})
        for i in range(3)
    ]


async def test_untouched_chain_verifies(db: str) -> None:
    events = await _write_three()
    assert events[1].previous_hash == events[0].entry_hash
    report = await audit.verify_chain()
    assert report.ok and report.checked == 3


async def test_a_changed_row_is_detected(db: str) -> None:
    events = await _write_three()
    # Tamper below the ORM, as someone with database access would.
    await connections.get("default").execute_query(
        "UPDATE audit_event SET actor_name = 'someone-else' WHERE id = " + str(events[1].id)
    )
    report = await audit.verify_chain()
    assert not report.ok
    assert report.first_bad_id == events[1].id
    assert "does not match its hash" in (report.reason or "")


async def test_a_deleted_row_is_detected(db: str) -> None:
    events = await _write_three()
    await AuditEvent.filter(id=events[1].id).delete()
    report = await audit.verify_chain()
    assert report.first_bad_id == events[2].id


async def test_removing_the_newest_rows_is_detected(db: str) -> None:
    events = await _write_three()
    await AuditEvent.filter(id=events[2].id).delete()
    report = await audit.verify_chain()
    assert not report.ok and report.reason == "the newest entries were removed"


async def test_concurrent_writers_never_fork_the_chain(db: str) -> None:
    import asyncio

    actor = Actor.system(uuid.uuid4(), "test")
    await asyncio.gather(
        *(audit.record(actor=actor, action="test.concurrent", resource_type="test") for _ in range(25))
    )
    report = await audit.verify_chain()
    assert report.ok and report.checked == 25
