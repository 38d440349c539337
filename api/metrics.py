"""GET /metrics: Prometheus text format. Public by default (scrapers rarely hold a token); with
KEYWARD_METRICS_TOKEN set it answers only `Authorization: Bearer <that token>`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from core import metrics, runtime


async def metrics_endpoint(request: Request) -> Response:
    if not metrics.authorized(runtime.settings().metrics_token, request.headers.get("authorization")):
        return PlainTextResponse(
            "metrics need `Authorization: Bearer <KEYWARD_METRICS_TOKEN>`\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="keyward-metrics"'},
        )
    body, content_type = await metrics.exposition(request.headers.get("accept", ""), inventory=True)
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
