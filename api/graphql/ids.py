"""GraphQL ids are UUID strings; a malformed id answers exactly as an unknown one."""

from __future__ import annotations

import uuid

from core.errors import NotFound


def parse_id(value: str, kind: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"{kind} {value!r} not found") from None
