"""The Starlette application: GraphQL, protocol routes, health."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Route
from tortoise import Tortoise

from api.body_limit import BodyLimit
from api.graphiql import KeywardGraphQLWithIDE, static_mount
from api.graphql.schema import schema
from api.metrics import metrics_endpoint
from api.middleware import http_middleware
from api.routes import acme as acme_routes
from api.routes import est as est_routes
from api.routes import pki as pki_routes
from api.routes import scep as scep_routes
from core import runtime
from core.db import close_db, init_db


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> JSONResponse:
    try:
        await Tortoise.get_connection("default").execute_query("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "unavailable", "reason": type(error).__name__}, status_code=503)
    return JSONResponse({"status": "ok"})


def create_app(*, manage_db: bool = True) -> Starlette:
    """`manage_db=False` when the caller (tests, an embedding process) already initialized Tortoise."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_db:
            await init_db(runtime.settings().database_url)
        try:
            yield
        finally:
            if manage_db:
                await close_db()

    # 2 MiB is ample for any mutation, a PKCS#12 import included, and keeps a flood of bytes out of memory.
    graphql_app = BodyLimit(KeywardGraphQLWithIDE(schema, graphql_ide="graphiql"), max_bytes=2 * 1024 * 1024)
    routes: list[BaseRoute] = [
        # First: Starlette tries routes in order, and ACME clients send the most requests by far.
        *acme_routes.routes,
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        static_mount(),  # GraphiQL's vendored assets (api/graphiql.py): nothing loads from another origin
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        *pki_routes.routes,
        *scep_routes.routes,
        *est_routes.routes,
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=http_middleware())
