"""Logs: one line per request (JSON or text), the request id round-trips and reaches other loggers'
records, and no secret (bearer token, password, EAB key, query string) ever reaches a log line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import OrgAdmin

from core.logs import QUIET_LOGGERS, REQUEST_ID, bound_request_id, configure_logging

_TOUCHED = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "apscheduler",
    "strawberry.execution",
    *QUIET_LOGGERS,
)


@pytest.fixture
def captured() -> Iterator[Any]:
    """configure_logging() into a buffer; the logging state (pytest's capture included) restored after."""
    saved = {}
    for name in _TOUCHED:
        logger = logging.getLogger(name)
        saved[name] = (
            list(logger.handlers),
            logger.level,
            logger.propagate,
            logger.disabled,
            list(logger.filters),
        )

    def start(log_format: str = "json", level: str = "info") -> io.StringIO:
        buffer = io.StringIO()
        configure_logging(level=level, log_format=log_format, stream=buffer)
        return buffer

    try:
        yield start
    finally:
        for name, (handlers, level, propagate, disabled, filters) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
            logger.filters[:] = filters


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def request_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [entry for entry in json_lines(buffer) if entry["logger"] == "keyward.http"]


async def test_one_json_line_per_request_with_request_id(client: httpx.AsyncClient, captured: Any) -> None:
    buffer = captured("json")
    response = await client.get("/healthz", headers={"X-Request-Id": "lb-7f3a.42:x_y"})
    assert response.headers["x-request-id"] == "lb-7f3a.42:x_y"
    generated = await client.get("/readyz")
    new_id = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", new_id)

    lines = request_lines(buffer)
    assert len(lines) == 2
    first, second = lines
    assert first["message"].startswith("GET /healthz 200 ")
    assert {k: first[k] for k in ("level", "method", "path", "status", "request_id", "remote_addr")} == {
        "level": "info",
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "request_id": "lb-7f3a.42:x_y",
        "remote_addr": "127.0.0.1",
    }
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert first["time"].endswith("Z")
    assert second["request_id"] == new_id


@pytest.mark.parametrize(
    "incoming",
    ["has space", "x" * 65, "semi;colon", "new\\nline", "<script>", "ünïcode"],
)
async def test_unsafe_request_id_is_replaced(client: httpx.AsyncClient, captured: Any, incoming: str) -> None:
    buffer = captured("json")
    response = await client.get("/healthz", headers={"X-Request-Id": incoming.encode("utf-8")})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert request_lines(buffer)[0]["request_id"] == response.headers["x-request-id"]
    assert incoming not in buffer.getvalue()


async def test_other_loggers_records_carry_the_request_id(
    client: httpx.AsyncClient, captured: Any, org_admin: OrgAdmin
) -> None:
    buffer = captured("json")
    # A GraphQL error is logged by strawberry while the request runs: it carries the request's id.
    response = await client.post(
        "/graphql",
        json={"query": '{ certificateAuthority(id: "00000000-0000-0000-0000-000000000000") { id } }'},
        headers={"Authorization": f"Bearer {org_admin.token}", "X-Request-Id": "trace-1"},
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    entries = json_lines(buffer)
    graphql_entries = [e for e in entries if e["logger"] == "strawberry.execution"]
    assert graphql_entries and all(e["request_id"] == "trace-1" for e in graphql_entries)
    assert graphql_entries[0]["level"] == "info"  # the caller's miss, not a server error
    assert "certificateAuthority" in graphql_entries[0]["message"]
    # Outside a request nothing is attached; inside bound_request_id (a worker job run) it is.
    logging.getLogger("keyward.core.example").warning("outside")
    with bound_request_id("job-run-9"):
        logging.getLogger("keyward.core.example").warning("inside")
    outside, inside = [e for e in json_lines(buffer) if e["logger"] == "keyward.core.example"]
    assert "request_id" not in outside and inside["request_id"] == "job-run-9"
    assert REQUEST_ID.get() is None


async def test_no_secret_reaches_the_logs(
    client: httpx.AsyncClient, captured: Any, org_admin: OrgAdmin
) -> None:
    buffer = captured("json", level="debug")
    password = "Hunter2-correct-horse-battery"
    eab_hmac = "c2VjcmV0LWVhYi1obWFjLWtleS1ieXRlcy0xMjM0NTY3OA"
    query_secret = "qs-secret-0123456789"
    # A password inline in the document (strawberry would log the document excerpt around an error) ...
    await client.post(
        "/graphql",
        json={"query": f'mutation {{ login(email: "admin@acme.test", password: "{password}") {{ token }} }}'},
    )
    # ... a bearer token, a secret in the query string, and an EAB key in a variable that fails coercion ...
    await client.post(
        f"/graphql?token={query_secret}",
        json={
            "query": "mutation($input: RenewCertificateInput!) "
            "{ renewCertificate(input: $input) { certificate { id } } }",
            "variables": {"input": {"certificateId": "x", "mode": eab_hmac}},
        },
        headers={"Authorization": f"Bearer {org_admin.token}"},
    )
    # ... a syntax error in a document holding a password, and a GET with the secret in the query string.
    await client.post("/graphql", json={"query": f'mutation {{ login(password: "{password}" '})
    await client.get(
        f"/healthz?password={query_secret}", headers={"Authorization": f"Bearer {org_admin.token}"}
    )

    text = buffer.getvalue()
    assert len(request_lines(buffer)) == 4
    for secret in (password, eab_hmac, query_secret, org_admin.token, org_admin.token.split("_", 1)[-1]):
        assert secret not in text
    assert "Bearer" not in text and "authorization" not in text.lower()
    paths = [entry["path"] for entry in request_lines(buffer)]
    assert paths == ["/graphql", "/graphql", "/graphql", "/healthz"]


async def test_text_format_is_one_line_per_request(client: httpx.AsyncClient, captured: Any) -> None:
    buffer = captured("text")
    await client.get("/healthz", headers={"X-Request-Id": "abc-1"})
    await client.get("/no/such%0Apath")  # an encoded newline cannot split the line
    lines = [line for line in buffer.getvalue().splitlines() if " keyward.http " in line]
    assert len(lines) == 2
    assert re.fullmatch(r"\S+Z INFO keyward\.http GET /healthz 200 [0-9.]+ms request_id=abc-1", lines[0])
    assert " GET /no/such%0Apath 404 " in lines[1]


async def test_level_filters_request_lines(client: httpx.AsyncClient, captured: Any) -> None:
    buffer = captured("json", level="warning")
    await client.get("/healthz")
    assert request_lines(buffer) == []
