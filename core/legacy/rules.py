"""The legacy rules (SPEC §12), enforced in core: a legacy profile's enrollment is read-only, and new
alerts, syncs and approval policies are created inside Applications only. The legacy importer is the one
writer allowed to create them in a legacy project's container, inside `importing()`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from core.errors import CreateInsideApplication, LegacyReadOnly
from models import Application

_importing: ContextVar[bool] = ContextVar("keyward_legacy_importing", default=False)


@contextmanager
def importing() -> Iterator[None]:
    """Marks the legacy importer's own writes (and only those) as allowed inside a legacy container."""
    token = _importing.set(True)
    try:
        yield
    finally:
        _importing.reset(token)


def refuse_enrollment_change(application: Application) -> None:
    """Enable, disable, update, attach, detach or rotate enrollment of a legacy profile: LEGACY_READ_ONLY."""
    if application.legacy and not _importing.get():
        raise LegacyReadOnly(
            "the enrollment configuration of a legacy profile cannot be changed; attach the profile to an "
            "Application and configure its enrollment methods there (the migration assistant does it for you)"
        )


def refuse_create_outside_application(application: Application, what: str) -> None:
    """Create an alert, sync or approval policy in a legacy project: CREATE_INSIDE_APPLICATION."""
    if application.legacy and not _importing.get():
        raise CreateInsideApplication(
            f"a new {what} cannot be created in a legacy project; create it inside an Application "
            "(legacy ones can still be modified and deleted)"
        )
