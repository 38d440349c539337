"""GraphiQL served entirely by Keyward: our page, vendored GraphiQL/React (api/static/graphiql), our script.

Strawberry's own page loads GraphiQL from a CDN; PKI runs in closed networks, so GET /graphql for a browser
answers this page instead, under a Content-Security-Policy that allows nothing but this origin (data: for
the fonts and icons embedded in GraphiQL's CSS). POST and GET GraphQL requests are untouched.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from api.graphql.view import KeywardGraphQL

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ASSETS = f"{STATIC_PREFIX}/graphiql"
_OWN = f"{STATIC_PREFIX}/keyward"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keyward GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{_ASSETS}/graphiql.min.css">
<link rel="stylesheet" href="{_OWN}/graphiql.css">
</head>
<body>
<form id="keyward-token" class="keyward-token" autocomplete="off">
  <strong>Keyward</strong>
  <label for="keyward-token-input">Bearer token</label>
  <input id="keyward-token-input" name="token" type="password" spellcheck="false"
         placeholder="paste a token; it is sent as Authorization: Bearer &lt;token&gt;">
  <span class="keyward-token-hint">or set an Authorization header in the Headers tab</span>
</form>
<div id="graphiql" class="keyward-graphiql">Loading GraphiQL&hellip;</div>
<script src="{_ASSETS}/react.production.min.js"></script>
<script src="{_ASSETS}/react-dom.production.min.js"></script>
<script src="{_ASSETS}/graphiql.min.js"></script>
<script src="{_OWN}/graphiql.js"></script>
</body>
</html>
"""


def graphiql_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


class KeywardGraphQLWithIDE(KeywardGraphQL):
    """Our GraphQL view, whose IDE page is the offline one."""

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql_page()


def static_mount() -> Mount:
    return Mount(STATIC_PREFIX, app=StaticFiles(directory=STATIC_DIR), name="static")
