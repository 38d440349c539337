"""The ACME hot path's own pieces (issue #4, throughput): rows built without the ORM, statements run in one
trip, the http-01 fetcher, nonces used with the request's first query, reads made with it, and polls that
wait for a validation running here."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from acme_order_support import (
    DnsServer,
    HttpResponder,
    Scene,
    acme_csr,
    make_authorizations_valid,
    make_scene,
    settings_override,
)
from conftest import OrgAdmin
from conftest import test_backend as backend_name
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import acme_account, acme_fetch, acme_order, acme_sql, acme_validation
from core.acme_account import acme_url
from core.issuance import attachment_statement
from core.rows import from_row, from_row_cached
from models import AcmeAuthorization, AcmeChallenge, AcmeOrder, CertificatePolicy, attachment_generation
from pki.acme import jws
from pki.acme.challenge import key_authorization
from pki.key import KeyAlgorithm, generate_private_key

PROBLEM = "urn:ietf:params:acme:error:"


@pytest.fixture
def allow_private() -> Iterator[None]:
    apply = settings_override()
    apply(acme_allow_private_identifiers=True)
    yield
    apply()


@pytest.fixture
async def scene(org_admin: OrgAdmin, allow_private: None) -> AsyncIterator[Scene]:
    yield await make_scene(org_admin.organization_id)
    await acme_validation.wait_for_validations()


def _fields(instance: Any) -> dict[str, Any]:
    return {name: getattr(instance, name) for name in instance._meta.fields_db_projection}


# ---------------------------------------------------------------- rows


async def test_rows_are_what_the_orm_builds(scene: Scene) -> None:
    view = await acme_order.new_order(
        attachment=scene.attachment,
        account=scene.account,
        payload={"identifiers": [{"type": "dns", "value": "www.example.com"}]},
    )
    conn = AcmeOrder._meta.db
    mark = "?" if conn.capabilities.dialect == "sqlite" else "$1"
    value: Any = str(view.order.id) if mark == "?" else view.order.id
    row = (await conn.execute_query_dict(f'SELECT * FROM "acme_order" WHERE "id" = {mark}', [value]))[0]
    by_orm = await AcmeOrder.get(id=view.order.id)
    built = from_row(AcmeOrder, row)
    assert _fields(built) == _fields(by_orm)
    assert built.created_at.tzinfo is not None and built._saved_in_db and not built._partial

    policy_row = (
        await conn.execute_query_dict(
            f'SELECT * FROM "certificate_policy" WHERE "id" = {mark}',
            [str(scene.pki.policy.id) if mark == "?" else scene.pki.policy.id],
        )
    )[0]
    first = from_row_cached(CertificatePolicy, policy_row)
    second = from_row_cached(CertificatePolicy, policy_row)
    assert _fields(first) == _fields(await CertificatePolicy.get(id=scene.pki.policy.id)) == _fields(second)
    assert first is not second and first.rules is not second.rules  # JSON values are never shared
    first.rules["sans"] = []
    assert from_row_cached(CertificatePolicy, policy_row).rules == second.rules != first.rules


# ---------------------------------------------------------------- several statements in one trip


async def test_steps_in_a_transaction_are_all_or_nothing(scene: Scene) -> None:
    authorization = AcmeAuthorization(
        id=uuid.uuid4(),
        account_id=scene.account.id,
        identifier_type="dns",
        identifier_value="www.example.com",
        status="pending",
        expires_at=scene.account.created_at,
    )
    duplicate = AcmeAuthorization(
        id=authorization.id,  # the same primary key: the second insert fails
        account_id=scene.account.id,
        identifier_type="dns",
        identifier_value="api.example.com",
        status="pending",
        expires_at=scene.account.created_at,
    )
    with pytest.raises(IntegrityError):
        await acme_sql.run_steps(
            [acme_sql.insert_step([authorization]), acme_sql.insert_step([duplicate])], transaction=True
        )
    assert not await AcmeAuthorization.filter(account_id=scene.account.id).exists()

    results = await acme_sql.run_steps(
        [acme_sql.insert_step([authorization]), acme_sql.authorization_step(authorization.id)],
        transaction=True,
    )
    stored, challenges = acme_sql.authorization_from_rows(results[1])
    assert stored is not None and stored.id == authorization.id and challenges == []


# ---------------------------------------------------------------- the http-01 fetcher


class RawServer:
    """Answers every connection with the bytes of `answer` (after reading the request head), then closes."""

    def __init__(self, answer: bytes, *, delay: float = 0.0) -> None:
        self.answer, self.delay = answer, delay
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            await asyncio.sleep(self.delay)
            writer.write(self.answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _fetch(port: int, *, limit: int = 100, seconds: float = 5.0) -> acme_fetch.Answer:
    return await acme_fetch.fetch(
        scheme="http",
        address="127.0.0.1",
        port=port,
        path="/.well-known/acme-challenge/tok",
        host_header="www.example.com:80",
        server_name="www.example.com",
        seconds=seconds,
        limit=limit,
    )


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
            b"hello",
        ),
        (b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nhello", b"hello"),  # until the connection closes
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    ],
)
async def test_the_fetcher_reads_the_usual_bodies(answer: bytes, body: bytes) -> None:
    async with RawServer(answer) as server:
        got = await _fetch(server.port)
    assert got.status == 200 and got.body == body and got.location is None
    request = server.requests[0].decode()
    assert request.startswith("GET /.well-known/acme-challenge/tok HTTP/1.1\r\n")
    assert "\r\nHost: www.example.com:80\r\n" in request and "Connection: close" in request


async def test_the_fetcher_reports_redirects_and_refuses_oversized_or_broken_answers() -> None:
    async with RawServer(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n") as server:
        moved = await _fetch(server.port)
    assert moved.status == 302 and moved.location == "/next"
    for answer in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n80\r\n" + b"x" * 128 + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 500,
    ):
        async with RawServer(answer) as server:
            with pytest.raises(acme_fetch.FetchError) as caught:
                await _fetch(server.port)
        assert caught.value.too_large
    for answer in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"):
        async with RawServer(answer) as server:
            with pytest.raises(acme_fetch.FetchError) as caught:
                await _fetch(server.port)
        assert not caught.value.too_large
    async with RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", delay=5) as server:
        with pytest.raises(TimeoutError):
            await _fetch(server.port, seconds=0.2)
    closed = RawServer(b"")
    async with closed:
        port = closed.port
    with pytest.raises(acme_fetch.FetchError):
        await _fetch(port)


# ---------------------------------------------------------------- over HTTP


class Client:
    """An ACME client over the ASGI app that keeps the nonce each answer gives."""

    def __init__(self, http: httpx.AsyncClient, scene: Scene) -> None:
        self.http, self.scene = http, scene
        self.key = generate_private_key(KeyAlgorithm.EC_P256)
        self.nonce: str | None = None
        self.kid: str | None = None

    def url(self, path: str) -> str:
        return acme_url(self.scene.attachment, path)

    async def post(
        self,
        url: str,
        payload: Any,
        *,
        use_jwk: bool = False,
        tamper: Callable[[dict[str, str]], None] | None = None,
    ) -> httpx.Response:
        if self.nonce is None:
            head = await self.http.head(urlsplit(self.url("new-nonce")).path)
            self.nonce = head.headers["Replay-Nonce"]
        body = jws.sign(self.key, payload, url=url, nonce=self.nonce, kid=None if use_jwk else self.kid)
        if tamper is not None:
            tamper(body)
        response = await self.http.post(
            urlsplit(url).path, json=body, headers={"Content-Type": "application/jose+json"}
        )
        self.nonce = response.headers.get("Replay-Nonce")
        return response

    async def register(self) -> None:
        response = await self.post(self.url("new-account"), {"termsOfServiceAgreed": True}, use_jwk=True)
        assert response.status_code == 201, response.text
        self.kid = response.headers["Location"]


def _break_signature(body: dict[str, str]) -> None:
    body["signature"] = body["signature"][:-4] + (
        "AAAA" if not body["signature"].endswith("AAAA") else "BBBB"
    )


async def test_a_request_that_fails_verification_has_spent_its_nonce(
    scene: Scene, client: httpx.AsyncClient
) -> None:
    acme = Client(client, scene)
    await acme.register()
    spent = acme.nonce
    forged = await acme.post(
        acme.url(f"account/{acme.kid.rsplit('/', 1)[-1]}"), None, tamper=_break_signature
    )
    assert forged.status_code == 400 and forged.json()["type"] == PROBLEM + "malformed"
    fresh = acme.nonce
    assert fresh and fresh != spent
    acme.nonce = spent
    replayed = await acme.post(acme.url(f"account/{acme.kid.rsplit('/', 1)[-1]}"), None)
    assert replayed.json()["type"] == PROBLEM + "badNonce"
    acme.nonce = fresh  # the forged request's answer carried a usable one
    assert (await acme.post(acme.url(f"account/{acme.kid.rsplit('/', 1)[-1]}"), None)).status_code == 200


async def test_reads_made_with_the_request_still_check_the_owner(
    scene: Scene, client: httpx.AsyncClient
) -> None:
    owner, intruder = Client(client, scene), Client(client, scene)
    await owner.register()
    await intruder.register()
    created = await owner.post(
        owner.url("new-order"), {"identifiers": [{"type": "dns", "value": "www.example.com"}]}
    )
    order = created.json()
    authz = (await owner.post(order["authorizations"][0], None)).json()
    for url in (created.headers["Location"], order["authorizations"][0], authz["challenges"][0]["url"]):
        refused = await intruder.post(url, None)
        assert refused.status_code == 403 and refused.json()["type"] == PROBLEM + "unauthorized", url
    await make_authorizations_valid([url.rsplit("/", 1)[-1] for url in order["authorizations"]])
    ready = await owner.post(created.headers["Location"], None)
    assert ready.json()["status"] == "ready"
    assert (
        await AcmeOrder.get(id=uuid.UUID(created.headers["Location"].rsplit("/", 1)[-1]))
    ).status == "ready"
    done = await owner.post(order["finalize"], {"csr": acme_csr(["www.example.com"])})
    assert done.json()["status"] == "valid", done.text
    refused = await intruder.post(done.json()["certificate"], None)
    assert refused.status_code == 403 and refused.json()["type"] == PROBLEM + "unauthorized"
    assert "BEGIN CERTIFICATE" in (await owner.post(done.json()["certificate"], None)).text


async def test_a_poll_answers_with_the_outcome_of_a_validation_running_here(
    scene: Scene, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acme_validation, "SETTLE_WAIT", 60.0)
    monkeypatch.setattr(acme_validation, "CHALLENGE_SETTLE_WAIT", 0.0)  # the poll, not the answer, waits
    dns_server = await DnsServer().start()
    responder = await HttpResponder().start()
    apply = settings_override()
    apply(
        acme_allow_private_identifiers=True,
        acme_dns_resolver=("127.0.0.1", dns_server.port),
        acme_http01_port=responder.port,
    )
    try:
        acme = Client(client, scene)
        await acme.register()
        created = await acme.post(
            acme.url("new-order"), {"identifiers": [{"type": "dns", "value": "www.example.com"}]}
        )
        authz_url = created.json()["authorizations"][0]
        http01 = next(
            c for c in (await acme.post(authz_url, None)).json()["challenges"] if c["type"] == "http-01"
        )
        thumb = jws.thumbprint(jws.public_key_to_jwk(acme.key))
        responder.routes[f"/.well-known/acme-challenge/{http01['token']}"] = (
            200,
            key_authorization(http01["token"], thumb).encode(),
            {},
        )
        answered = await acme.post(http01["url"], {})
        assert answered.json()["status"] == "processing"
        polled = await acme.post(created.headers["Location"], None)  # no wait for validations in between
        assert polled.json()["status"] == "ready" and "Retry-After" not in polled.headers
        challenge = await AcmeChallenge.get(id=uuid.UUID(http01["url"].rsplit("/", 1)[-1]))
        assert challenge.status == "valid" and challenge.attempts == 1
    finally:
        await acme_validation.wait_for_validations()
        apply()


# ---------------------------------------------------------------- attachment rows kept (SQLite)

sqlite_only = pytest.mark.skipif(
    backend_name() != "sqlite", reason="the attachment generation is SQLite's (models.attachment_generation)"
)


def _tables_read(sql: str) -> set[str]:
    return set(re.findall(r'(?:FROM|JOIN) "([a-z_]+)"', sql))


def test_every_table_the_attachment_statement_reads_moves_the_generation(database_url: str) -> None:
    """A table added to the join unwatched would let a process serve rows that are no longer true.
    (`database_url`: the models are set up, so the statement has its columns.)"""
    read: set[str] = set()
    for legacy in (False, True):
        for with_account in (False, True):
            sql, _ = attachment_statement(
                "sqlite",
                None if legacy else uuid.uuid4(),
                uuid.uuid4(),
                with_application=True,
                account_id=uuid.uuid4() if with_account else None,
                with_account=with_account,
                legacy=legacy,
                with_generation=True,
            )
            read |= _tables_read(sql)
    assert read - {attachment_generation.TABLE} == set(attachment_generation.WATCHED_TABLES)


@sqlite_only
async def test_the_schema_built_for_tests_has_the_generation_triggers(db: str) -> None:
    with contextlib.closing(sqlite3.connect(db[len("sqlite://") :])) as conn:
        triggers = {row[0]: row[1] for row in conn.execute("SELECT tbl_name, name FROM sqlite_master")}
        on = {table for (table,) in conn.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'")}
    assert attachment_generation.TABLE in triggers
    assert on == set(attachment_generation.WATCHED_TABLES)


@sqlite_only
async def test_a_change_another_process_commits_is_seen_by_the_next_request(
    scene: Scene, client: httpx.AsyncClient, database_url: str
) -> None:
    """The rows a process keeps stand only while the generation is theirs: a commit by any other connection
    to the file (here a plain sqlite3 one, as another process's) moves it, in the same transaction."""
    acme = Client(client, scene)
    await acme.register()
    account_url = acme.kid
    assert account_url is not None
    assert (await acme.post(account_url, None)).status_code == 200
    assert (await acme.post(account_url, None)).status_code == 200  # the second read only the generation
    assert any(key[2] == scene.attachment.profile_id for key in acme_account._attachment_rows)

    def other_process(sql: str, *values: str) -> None:
        with contextlib.closing(sqlite3.connect(database_url[len("sqlite://") :], timeout=5)) as conn:
            with conn:
                assert conn.execute(sql, values).rowcount == 1

    other_process(
        'UPDATE "application_profile" SET "acme_enabled" = 0 WHERE "id" = ?', str(scene.attachment.id)
    )
    disabled = await acme.post(account_url, None)
    assert disabled.status_code == 404 and "not enabled" in disabled.json()["detail"]
    other_process(
        'UPDATE "application_profile" SET "acme_enabled" = 1 WHERE "id" = ?', str(scene.attachment.id)
    )
    assert (await acme.post(account_url, None)).status_code == 200
    other_process(
        'UPDATE "acme_account" SET "status" = \'deactivated\' WHERE "id" = ?', account_url.rsplit("/", 1)[-1]
    )
    refused = (await acme.post(account_url, None)).json()
    assert refused["type"] == PROBLEM + "unauthorized" and "deactivated" in refused["detail"]


# ---------------------------------------------------------------- indexes


async def test_every_statement_of_an_order_uses_an_index(scene: Scene) -> None:
    """The hot path's reads and writes find their rows through an index, never a scan of the table (which
    grows with every order): PostgreSQL with sequential scans priced out, SQLite's plan without SCAN."""
    some, other = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    sqlite = acme_sql._dialect(acme_sql.connection()) == "sqlite"
    attachment_sql, attachment_values = attachment_statement(
        acme_sql._dialect(acme_sql.connection()),
        scene.application.id,
        scene.attachment.profile_id,
        with_application=True,
        account_id=some,
        with_account=True,
        with_generation=sqlite,
    )
    with acme_account.reply_nonce_scope():
        nonce = acme_account._replace_nonce_step("n" * 32, acme_sql._dialect(acme_sql.connection()))
    assert nonce is not None
    steps: list[acme_sql.Step] = [
        ("rows", attachment_sql, attachment_values),
        nonce[0],
        acme_sql.order_step(some),
        acme_sql.update_order_step(some, expected_status="ready", status="processing", updated_at=now),
        acme_sql.reusable_step(some, ["a.example.com"], now),
        acme_sql.authorization_step(some),
        acme_sql.update_authorization_step(some, expected_status="pending", status="valid", updated_at=now),
        acme_sql.challenge_step(some),
        acme_sql.update_challenge_step(
            some, where={"status": "pending"}, status="processing", updated_at=now
        ),
        acme_sql.certificate_step(some, other),
    ]
    if sqlite:
        steps.append(("rows", attachment_generation.READ_SQL, []))
    postgres = backend_name() == "postgres"
    for _, sql, values in steps:
        async with in_transaction() as conn:
            if postgres:
                await conn.execute_script("SET LOCAL enable_seqscan = off")
                _, plan = await conn.execute_query(f"EXPLAIN {sql}", values)
                details = " | ".join(str(row["QUERY PLAN"]) for row in plan)
                assert "Seq Scan" not in details, (sql, details)
            else:
                _, plan = await conn.execute_query(f"EXPLAIN QUERY PLAN {sql}", values)
                details = " | ".join(str(row["detail"]) for row in plan)
                scans = [
                    part for part in details.split(" | ") if part.startswith("SCAN") and "VIRTUAL" not in part
                ]
                assert not scans, (sql, details)
