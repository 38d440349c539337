"""CORS: exact origins from KEYWARD_CORS_ORIGINS may call the API with a bearer token; nobody else, and
no CORS header at all by default."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from conftest import OrgAdmin

from core import runtime
from core.config import load_settings
from core.errors import ConfigurationError

ALLOWED = "https://console.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest_asyncio.fixture
async def cors_client(db: str) -> AsyncIterator[httpx.AsyncClient]:
    from api.app import create_app

    previous = runtime.settings()
    runtime.configure(
        dataclasses.replace(previous, cors_origins=(ALLOWED, "http://localhost:3000")), kek=runtime.kek()
    )
    try:
        app = create_app(manage_db=False)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
    finally:
        runtime.configure(previous, kek=runtime.kek())


async def test_allowed_origin_preflight_and_request(
    cors_client: httpx.AsyncClient, org_admin: OrgAdmin
) -> None:
    preflight = await cors_client.options("/graphql", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    allowed_headers = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed_headers
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers  # bearer tokens, not cookies
    assert preflight.headers["x-request-id"]  # the preflight is logged and answered like any request

    response = await cors_client.post(
        "/graphql",
        json={"query": "{ viewer { name } }"},
        headers={"Origin": ALLOWED, "Authorization": f"Bearer {org_admin.token}"},
    )
    assert response.json()["data"]["viewer"]["name"] == "admin@acme.test"
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "https://console.example.com.evil.net",
        "http://console.example.com",
        "null",
    ],
)
async def test_other_origins_get_no_cors_grant(cors_client: httpx.AsyncClient, origin: str) -> None:
    preflight = await cors_client.options("/graphql", headers={"Origin": origin, **PREFLIGHT})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    response = await cors_client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Origin": origin}
    )
    assert "access-control-allow-origin" not in response.headers


async def test_no_cors_headers_by_default(client: httpx.AsyncClient) -> None:
    assert runtime.settings().cors_origins == ()
    preflight = await client.options("/graphql", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert preflight.status_code == 405
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers={"Origin": ALLOWED})
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_origins_are_exact() -> None:
    settings = load_settings(
        {
            "KEYWARD_CORS_ORIGINS": " https://A.example.com:8443/ ,http://localhost:3000,https://a.example.com:8443"
        }
    )
    assert settings.cors_origins == ("https://a.example.com:8443", "http://localhost:3000")
    assert load_settings({}).cors_origins == ()
    for bad in ["*", "https://*.example.com", "https://example.com/app", "example.com", "ftp://x.example"]:
        with pytest.raises(ConfigurationError, match="KEYWARD_CORS_ORIGINS"):
            load_settings({"KEYWARD_CORS_ORIGINS": bad})
