"""ACME response helpers: every answer carries a fresh Replay-Nonce and the directory Link."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import Response

from core.acme_account import acme_url, new_nonce
from models.application import ApplicationProfile
from pki.acme.problem import AcmeProblem

logger = logging.getLogger(__name__)


async def _protocol_headers(attachment: ApplicationProfile | None) -> dict[str, str]:
    headers = {"Cache-Control": "no-store"}
    try:
        headers["Replay-Nonce"] = await new_nonce()
    except Exception:  # noqa: BLE001 - an answer without a nonce beats no answer; the client asks newNonce
        logger.exception("could not mint an ACME nonce")
    if attachment is not None:
        headers["Link"] = f'<{acme_url(attachment, "directory")}>;rel="index"'
    return headers


async def acme_response(
    attachment: ApplicationProfile,
    body: dict[str, Any] | list[Any] | str | bytes | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Response:
    """A response with Replay-Nonce, Link rel="index" and Cache-Control: no-store."""
    if body is None:
        content = b""
    elif isinstance(body, bytes):
        content = body
    elif isinstance(body, str):
        content = body.encode()
    else:
        content = json.dumps(body).encode()
    all_headers = await _protocol_headers(attachment)
    if headers:
        all_headers.update(headers)
    return Response(
        content, status_code=status, headers=all_headers, media_type=content_type if content else None
    )


async def problem_response(attachment: ApplicationProfile | None, problem: AcmeProblem) -> Response:
    """An application/problem+json response (with Retry-After where the problem gives one)."""
    headers = await _protocol_headers(attachment)
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    headers.update(problem.headers)
    return Response(
        json.dumps(problem.to_dict()).encode(),
        status_code=problem.status,
        headers=headers,
        media_type="application/problem+json",
    )
