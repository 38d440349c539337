"""Per-request GraphQL context: the authenticated actor, loaded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from core.authz import Actor
from core.errors import Unauthenticated


@dataclass
class RequestContext:
    request: Request | None
    actor: Actor
    # Why the bearer token was refused, raised by the first guarded field (public fields still work).
    auth_error: Unauthenticated | None = None
    # Per-request caches (dataloaders) keyed by name.
    loaders: dict[str, Any] = field(default_factory=dict)
    response: Any = None
