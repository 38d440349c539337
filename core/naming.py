"""Display names of product objects (CAs, policies, profiles, principals): trimmed, non-empty, bounded."""

from __future__ import annotations

from core.errors import InvalidInput

MAX_NAME_LENGTH = 100


def clean_name(name: str, *, field: str = "name", max_length: int = MAX_NAME_LENGTH) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(cleaned) > max_length:
        raise InvalidInput(f"{field} must be at most {max_length} characters", field=field)
    return cleaned
