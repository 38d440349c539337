"""Per-request GraphQL context: the authenticated actor, loaded once."""

from __future__ import annotations

import uuid
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


def actor_organization(context: RequestContext) -> uuid.UUID:
    """The caller's organization, once a guarded field has let the caller in (it has one by then)."""
    organization_id = context.actor.organization_id
    assert organization_id is not None
    return organization_id
