"""Domain errors with stable codes; the API turns them into GraphQL `extensions.code` or protocol errors."""

from __future__ import annotations

from typing import Any


class KeywardError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def extensions(self) -> dict[str, Any]:
        """Read by graphql-core when it wraps the error, so the code reaches the client."""
        return {"code": self.code, **self.details}


class ConfigurationError(KeywardError):
    code = "CONFIGURATION_ERROR"


class Unauthenticated(KeywardError):
    code = "UNAUTHENTICATED"


class Forbidden(KeywardError):
    code = "FORBIDDEN"


class NotFound(KeywardError):
    code = "NOT_FOUND"


class InvalidInput(KeywardError):
    code = "INVALID_INPUT"


class InvalidCsr(KeywardError):
    code = "INVALID_CSR"


class PolicyViolation(KeywardError):
    code = "POLICY_VIOLATION"


class Conflict(KeywardError):
    code = "CONFLICT"


class InvalidState(KeywardError):
    """The object exists but is in a state that forbids the action (disabled CA, revoked certificate)."""

    code = "INVALID_STATE"


class LegacyReadOnly(KeywardError):
    """A legacy profile's enrollment configuration cannot change: enrollment lives in Applications."""

    code = "LEGACY_READ_ONLY"


class CreateInsideApplication(KeywardError):
    """New alerts, syncs and approval policies are created inside Applications, not legacy projects."""

    code = "CREATE_INSIDE_APPLICATION"


class InvalidImport(KeywardError):
    """A legacy export that cannot be imported; `problems` lists each one with its JSON path in the file."""

    code = "INVALID_IMPORT"


class StalePlan(KeywardError):
    """A migration plan made before the legacy project changed; `changes` says what changed."""

    code = "STALE_PLAN"
