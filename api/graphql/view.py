"""Strawberry's ASGI view with our context: the bearer token becomes an Actor once per request."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult

from api.graphql.context import RequestContext
from core import authn
from core.authz import Actor
from core.errors import Unauthenticated


def client_address(request: Request | WebSocket) -> str | None:
    return request.client.host if request.client else None


async def actor_from_request(request: Request | WebSocket) -> tuple[Actor, Unauthenticated | None]:
    address = client_address(request)
    header = request.headers.get("authorization", "")
    if not header:
        return Actor.anonymous(address), None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Actor.anonymous(address), Unauthenticated("use `Authorization: Bearer <token>`")
    try:
        return await authn.authenticate_bearer(token.strip(), source_address=address), None
    except Unauthenticated as error:
        return Actor.anonymous(address), error


class KeywardGraphQL(GraphQL[RequestContext, None]):
    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Every error leaves with a stable `extensions.code`."""
        response = process_result(result)
        for error in response.get("errors") or []:
            extensions: dict[str, Any] = error.setdefault("extensions", {})  # type: ignore[attr-defined]
            # Only errors in the caller's document lack a code: syntax, validation, variable coercion.
            extensions.setdefault("code", "INVALID_INPUT")
        return response

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Any:
        actor, auth_error = await actor_from_request(request)
        return RequestContext(
            request=request if isinstance(request, Request) else None,
            actor=actor,
            auth_error=auth_error,
            response=response,
        )
