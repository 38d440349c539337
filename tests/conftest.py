"""Shared fixtures: a real database (SQLite, or PostgreSQL with KEYWARD_TEST_DB=postgres), the ASGI app,
a GraphQL helper, and a live uvicorn server on loopback for tests that use real clients (openssl, curl)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from tortoise import Tortoise
from tortoise.contrib.test import truncate_all_models

from core import runtime
from core.config import Settings
from core.db import create_scratch_database, drop_scratch_database, generate_schema, tortoise_config
from pki.sealing import generate_kek

POSTGRES_ADMIN_URL = os.environ.get("KEYWARD_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LIVE_PORT = _free_port()


def test_backend() -> str:
    backend = os.environ.get("KEYWARD_TEST_DB", "sqlite")
    if backend not in {"sqlite", "postgres"}:
        raise RuntimeError(f"KEYWARD_TEST_DB={backend!r}: use sqlite or postgres")
    return backend


async def create_postgres_database() -> str:
    return await create_scratch_database(POSTGRES_ADMIN_URL, prefix="keyward_test")


async def drop_postgres_database(url: str) -> None:
    await drop_scratch_database(POSTGRES_ADMIN_URL, url)


@pytest_asyncio.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One database for the session, schema generated from the models; tests truncate after themselves."""
    tmp = tmp_path_factory.mktemp("keyward")
    if test_backend() == "postgres":
        url = await create_postgres_database()
    else:
        url = f"sqlite://{tmp / 'keyward.sqlite3'}"
    runtime.configure(
        Settings(database_url=url, public_url=f"http://127.0.0.1:{LIVE_PORT}", kek_file=str(tmp / "kek")),
        kek=generate_kek(),
    )
    await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)
    await generate_schema()
    try:
        yield url
    finally:
        await Tortoise.close_connections()
        if test_backend() == "postgres":
            await drop_postgres_database(url)


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    """A clean database for one test."""
    try:
        yield database_url
    finally:
        await truncate_all_models()


@pytest.fixture(scope="session")
def app() -> Any:
    from api.app import create_app

    return create_app(manage_db=False)


@pytest_asyncio.fixture
async def client(db: str, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


class GraphQLError(AssertionError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors

    @property
    def codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code", "") for e in self.errors]


@dataclass
class GraphQL:
    """Send GraphQL over HTTP as a frontend would; `token=None` sends no Authorization header."""

    http: httpx.AsyncClient

    async def raw(self, query: str, variables: dict[str, Any] | None = None, *, token: str | None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None
    ) -> Any:
        """Return `data`, or raise GraphQLError carrying the errors (with their extension codes)."""
        body = await self.raw(query, variables, token=token)
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]


@pytest.fixture
def gql(client: httpx.AsyncClient) -> GraphQL:
    return GraphQL(client)


@dataclass
class OrgAdmin:
    organization_id: uuid.UUID
    principal_id: uuid.UUID
    token: str


@pytest_asyncio.fixture
async def org_admin(db: str) -> OrgAdmin:
    """A fresh organization `acme` with Product Admin admin@acme.test."""
    from core.bootstrap import init_organization

    org, admin, token = await init_organization(org_name="acme", admin_email="admin@acme.test")
    return OrgAdmin(org.id, admin.id, token)


@pytest_asyncio.fixture
async def live_server(db: str, app: Any) -> AsyncIterator[str]:
    """The app under a real uvicorn on 127.0.0.1, at the URL the settings put in AIA/CRL/OCSP extensions.

    Clients (openssl, curl) must run without blocking the loop: `await asyncio.to_thread(subprocess.run, ...)`
    or `asyncio.create_subprocess_exec`.
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=LIVE_PORT, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield runtime.settings().public_url
    finally:
        server.should_exit = True
        await task


def tool_or_skip(name: str) -> str:
    """Path of an external tool; a missing tool skips locally but fails under CI (CI=true)."""
    import shutil

    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required under CI but is not installed")
    pytest.skip(f"{name} is not installed")


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# The authorization cast ---------------------------------------------------------------------------------

# Everyone whose access the authorization matrix checks. "foreign" is a Product Admin of another
# organization; "outsider" a Product Member of acme in no application; "anonymous" sends no token.
CAST_ROLES = (
    "product_admin",
    "app_admin",
    "app_operator",
    "app_auditor",
    "outsider",
    "foreign",
    "anonymous",
)


@dataclass
class Cast:
    """Org `acme` with application `payments-api` and one principal per role; org `globex` beside it."""

    organization_id: uuid.UUID
    application_id: uuid.UUID
    other_organization_id: uuid.UUID
    other_application_id: uuid.UUID
    principal_ids: dict[str, uuid.UUID]
    tokens: dict[str, str | None]

    def token(self, role: str) -> str | None:
        return self.tokens[role]


async def create_principal_with_token(
    organization_id: uuid.UUID, name: str, product_role: str, *, kind: str = "user"
) -> tuple[uuid.UUID, str]:
    """A principal with a product membership and an API token, written straight through the models."""
    from core import authn
    from models import Principal, ProductMembership
    from models.enums import PrincipalKind, ProductRole, TokenKind

    principal = await Principal.create(
        organization_id=organization_id,
        kind=PrincipalKind(kind),
        name=name,
        email=name if kind == "user" else None,
    )
    await ProductMembership.create(
        organization_id=organization_id, principal=principal, role=ProductRole(product_role)
    )
    token, _ = await authn.create_token(principal=principal, kind=TokenKind.API, name="test")
    return principal.id, token


async def create_profile_rows(organization_id: uuid.UUID, name: str = "tls-server", **profile: Any) -> Any:
    """A CA, policy and profile as bare rows (the CA key is a placeholder): enough to attach, not to issue."""
    from models import CertificateAuthority, CertificatePolicy, CertificateProfile
    from models.enums import CaKind, CaStatus

    ca = await CertificateAuthority.create(
        organization_id=organization_id,
        name=f"{name}-ca",
        kind=CaKind.ROOT,
        status=CaStatus.ACTIVE,
        key_algorithm="EC_P256",
        subject_dn=f"CN={name} CA",
        encrypted_private_key=b"x",
    )
    policy = await CertificatePolicy.create(organization_id=organization_id, name=f"{name}-policy")
    return await CertificateProfile.create(
        organization_id=organization_id, name=name, ca=ca, policy=policy, **profile
    )


@pytest_asyncio.fixture
async def cast(org_admin: OrgAdmin) -> Cast:
    from models import Application, ApplicationMembership, Organization
    from models.enums import ApplicationRole

    org_id = org_admin.organization_id
    app = await Application.create(organization_id=org_id, name="payments-api")
    principal_ids = {"product_admin": org_admin.principal_id}
    tokens: dict[str, str | None] = {"product_admin": org_admin.token, "anonymous": None}
    for role, app_role in (
        ("app_admin", ApplicationRole.ADMIN),
        ("app_operator", ApplicationRole.OPERATOR),
        ("app_auditor", ApplicationRole.AUDITOR),
        ("outsider", None),
    ):
        principal_id, token = await create_principal_with_token(org_id, f"{role}@acme.test", "member")
        if app_role is not None:
            await ApplicationMembership.create(application=app, principal_id=principal_id, role=app_role)
        principal_ids[role], tokens[role] = principal_id, token
    other = await Organization.create(name="globex")
    other_app = await Application.create(organization_id=other.id, name="globex-api")
    principal_ids["foreign"], tokens["foreign"] = await create_principal_with_token(
        other.id, "admin@globex.test", "admin"
    )
    return Cast(org_id, app.id, other.id, other_app.id, principal_ids, tokens)


@pytest.fixture(scope="session")
def hierarchy_for() -> Any:
    """PKI hierarchies for the pure pki tests, built once per algorithm for the whole run.

    Lives here, not in tests/pki/conftest.py: two modules named `conftest` on sys.path would shadow each
    other for `from conftest import ...` depending on which directories a run collects.
    """
    from pki_support import build_hierarchy  # tests/pki is on sys.path once its modules are collected

    built: dict[Any, Any] = {}

    def get(algorithm: Any) -> Any:
        if algorithm not in built:
            built[algorithm] = build_hierarchy(algorithm)
        return built[algorithm]

    return get
