"""Who am I, logging in, and tokens."""

from __future__ import annotations

from datetime import timedelta

import strawberry
from strawberry.types import Info

from api.graphql.permission import guard_type, guarded_field, public_mutation, public_type
from core import authn, runtime
from core.authz import Permission


@guard_type(Permission.SELF)
@strawberry.type
class Viewer:
    id: strawberry.ID | None
    kind: str
    name: str
    organization_id: strawberry.ID | None
    product_role: str | None


@public_type("the caller's own new session token")
@strawberry.type
class LoginPayload:
    token: str
    expires_at: str


@strawberry.type
class Query:
    @guarded_field(Permission.SELF, description="The authenticated caller and their product role.")
    def viewer(self, info: Info) -> Viewer:
        actor = info.context.actor
        return Viewer(
            id=strawberry.ID(str(actor.principal_id)) if actor.principal_id else None,
            kind=actor.kind,
            name=actor.name,
            organization_id=strawberry.ID(str(actor.organization_id)) if actor.organization_id else None,
            product_role=actor.product_role.value if actor.product_role else None,
        )


@strawberry.type
class Mutation:
    @public_mutation("logging in is how a caller gets a token")
    async def login(self, email: str, password: str) -> LoginPayload:
        ttl = timedelta(hours=runtime.settings().session_ttl_hours)
        plaintext, token = await authn.login(email=email, password=password, session_ttl=ttl)
        assert token.expires_at is not None
        return LoginPayload(token=plaintext, expires_at=token.expires_at.isoformat())
