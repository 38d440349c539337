"""Relay-style cursor connections over keyset pagination on (created_at, id): stable and index-served."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Generic, TypeVar

import strawberry

from api.graphql.permission import public_field
from core.errors import InvalidInput

MAX_PAGE_SIZE = 500
NodeType = TypeVar("NodeType")

_PAGE_METADATA = "page metadata of a list the caller was already authorized to read"


def encode_cursor(created_at: datetime, row_id: uuid.UUID | int) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_text, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created_text), row_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"cursor {cursor!r} is not one this server returned", field="after") from None


def check_page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"`first` must be between 1 and {MAX_PAGE_SIZE}", field="first")
    return first


@strawberry.type
class PageInfo:
    has_next_page: bool = public_field(_PAGE_METADATA)
    end_cursor: str | None = public_field(_PAGE_METADATA)


@strawberry.type
class Edge(Generic[NodeType]):
    cursor: str = public_field(_PAGE_METADATA)
    node: NodeType = public_field("each node's own fields carry their permission")


@strawberry.type
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]] = public_field(_PAGE_METADATA)
    page_info: PageInfo = public_field(_PAGE_METADATA)
