"""ACME challenge validation against real peers on loopback: an HTTP responder (http-01), a DNS server
(A/AAAA and TXT, dns-01) and a TLS server with ALPN acme-tls/1 (tls-alpn-01, RFC 8737)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from acme_order_support import (
    DnsServer,
    HttpResponder,
    Scene,
    acme_csr,
    make_scene,
    settings_override,
    tls_alpn_server,
)
from conftest import OrgAdmin
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from core import acme_order, acme_validation
from core.config import load_settings
from core.errors import ConfigurationError
from models import AcmeAuthorization, AcmeChallenge
from pki.acme.challenge import (
    ACME_IDENTIFIER_OID,
    b64url,
    build_tls_alpn01_certificate,
    check_tls_alpn01_certificate,
    dns01_txt_value,
    key_authorization,
)
from pki.acme.problem import AcmeProblem
from pki.key import KeyAlgorithm, generate_private_key
from worker import acme as acme_jobs
from worker.jobs import all_jobs

PROBLEM = "urn:ietf:params:acme:error:"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = await DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
async def http_responder() -> AsyncIterator[HttpResponder]:
    responder = await HttpResponder().start()
    yield responder
    await responder.stop()


@pytest.fixture
def configure(
    dns_server: DnsServer, http_responder: HttpResponder, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """Validation aimed at the loopback peers, private addresses allowed, attempts a moment apart."""
    monkeypatch.setattr(acme_validation, "ATTEMPT_SPACING", 0.05)
    apply = settings_override()
    base = {
        "acme_dns_resolver": ("127.0.0.1", dns_server.port),
        "acme_http01_port": http_responder.port,
        "acme_allow_private_identifiers": True,
    }
    apply(**base)

    def change(**changes: Any) -> None:
        apply(**{**base, **changes})

    yield change
    apply()


@pytest.fixture
async def scene(org_admin: OrgAdmin, configure: Callable[..., None]) -> AsyncIterator[Scene]:
    yield await make_scene(org_admin.organization_id)
    await acme_validation.wait_for_validations()  # nothing may touch the database after the test


async def authorization_of(
    scene: Scene, identifier: dict[str, str]
) -> tuple[acme_order.OrderView, AcmeAuthorization]:
    view = await acme_order.new_order(
        attachment=scene.attachment, account=scene.account, payload={"identifiers": [identifier]}
    )
    return view, view.authorizations[0]


async def challenge_of(authorization: AcmeAuthorization, challenge_type: str) -> AcmeChallenge:
    return await AcmeChallenge.get(authorization_id=authorization.id, type=challenge_type)


def key_authz(scene: Scene, challenge: AcmeChallenge) -> str:
    return key_authorization(challenge.token, scene.account.key_thumbprint)


def serve_key_authorization(responder: HttpResponder, scene: Scene, challenge: AcmeChallenge) -> None:
    responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (
        200,
        key_authz(scene, challenge).encode(),
        {},
    )


async def answer(scene: Scene, challenge: AcmeChallenge) -> AcmeChallenge:
    """The challenge as the answer to a client's POST {} shows it."""
    view = await acme_validation.respond_challenge(
        attachment=scene.attachment, account=scene.account, challenge_id=str(challenge.id)
    )
    return view.challenge


async def respond(scene: Scene, challenge: AcmeChallenge) -> AcmeChallenge:
    """Respond as a client would, then wait for the background validation to finish."""
    answered = await answer(scene, challenge)
    await acme_validation.wait_for_validations()
    done = await AcmeChallenge.get(id=challenge.id)
    # The answer showed the first attempt's outcome, or `processing` while more attempts were to come.
    assert answered.status == done.status or answered.status == "processing"
    return done


# ---------------------------------------------------------------- pure pieces


def test_key_authorization_and_dns_value() -> None:
    assert key_authorization("tok", "thumb") == "tok.thumb"
    assert dns01_txt_value("tok.thumb") == b64url(hashlib.sha256(b"tok.thumb").digest())


def test_tls_alpn_certificate_check() -> None:
    key = generate_private_key(KeyAlgorithm.EC_P256)
    good = build_tls_alpn01_certificate(
        key, identifier_type="dns", identifier_value="www.example.com", key_authorization_text="a.b"
    )
    der = good.public_bytes(serialization.Encoding.DER)
    extension = good.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert isinstance(extension.value, x509.UnrecognizedExtension) and extension.critical
    assert extension.value.value == b"\x04\x20" + hashlib.sha256(b"a.b").digest()
    assert (
        check_tls_alpn01_certificate(
            der, identifier_type="dns", identifier_value="www.example.com", key_authorization_text="a.b"
        )
        is None
    )
    wrong_authz = check_tls_alpn01_certificate(
        der, identifier_type="dns", identifier_value="www.example.com", key_authorization_text="a.c"
    )
    assert wrong_authz is not None and "does not match" in wrong_authz
    wrong_name = check_tls_alpn01_certificate(
        der, identifier_type="dns", identifier_value="api.example.com", key_authorization_text="a.b"
    )
    assert wrong_name is not None and "subjectAltName" in wrong_name
    # Not critical: refused.
    builder = x509.CertificateBuilder(
        issuer_name=good.issuer,
        subject_name=good.subject,
        public_key=key.public_key(),
        serial_number=1,
        not_valid_before=good.not_valid_before_utc,
        not_valid_after=good.not_valid_after_utc,
        extensions=[],
    )
    lax = (
        builder.add_extension(
            good.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False
        )
        .add_extension(extension.value, critical=False)
        .sign(key, hashes.SHA256())
    )
    problem = check_tls_alpn01_certificate(
        lax.public_bytes(serialization.Encoding.DER),
        identifier_type="dns",
        identifier_value="www.example.com",
        key_authorization_text="a.b",
    )
    assert problem is not None and "critical" in problem


def test_the_validation_job_is_registered() -> None:
    job = next(job for job in all_jobs() if job.id == "acme.validate")
    assert job is acme_jobs.VALIDATE


# ---------------------------------------------------------------- http-01


async def test_http01_valid_then_finalize(
    scene: Scene, http_responder: HttpResponder, dns_server: DnsServer
) -> None:
    view, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "http-01")
    http_responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (
        200,
        (key_authz(scene, challenge) + "\n").encode(),  # trailing whitespace is ignored
        {},
    )
    done = await respond(scene, challenge)
    assert done.status == "valid" and done.validated_at is not None and done.attempts == 1
    assert http_responder.hosts == [f"www.example.com:{http_responder.port}"]
    assert ("www.example.com", "A") in dns_server.queries  # resolved through the configured resolver
    stored = await AcmeAuthorization.get(id=authorization.id)
    assert stored.status == "valid" and stored.expires_at > datetime.now(UTC) + timedelta(days=29)
    order = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert order.status == "ready"
    order = await acme_order.finalize_order(
        attachment=scene.attachment,
        account=scene.account,
        order_id=str(view.order.id),
        payload={"csr": acme_csr(["www.example.com"])},
    )
    assert order.status == "valid"


async def test_http01_follows_a_redirect(scene: Scene, http_responder: HttpResponder) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "http-01")
    http_responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (
        302,
        b"",
        {"Location": "/elsewhere"},
    )
    http_responder.routes["/elsewhere"] = (200, key_authz(scene, challenge).encode(), {})
    assert (await respond(scene, challenge)).status == "valid"


async def test_the_challenge_answer_shows_the_first_attempts_outcome(
    scene: Scene, http_responder: HttpResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The POST that starts validating waits for the first attempt: valid, or invalid when it was the last
    (lego goes on without polling, or stops, on what the answer says); a failed attempt with more to come
    answers processing with its error."""
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "good.example.com"})
    good = await challenge_of(authorization, "http-01")
    serve_key_authorization(http_responder, scene, good)
    answered = await answer(scene, good)
    assert answered.status == "valid" and answered.validated_at is not None
    assert (await AcmeChallenge.get(id=good.id)).validated_at == answered.validated_at

    _, authorization = await authorization_of(scene, {"type": "dns", "value": "retry.example.com"})
    answered = await answer(scene, await challenge_of(authorization, "http-01"))  # the responder: 404
    assert answered.status == "processing" and answered.error["type"] == PROBLEM + "incorrectResponse"
    await acme_validation.wait_for_validations()

    monkeypatch.setattr(acme_validation, "MAX_ATTEMPTS", 1)
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "bad.example.com"})
    bad = await challenge_of(authorization, "http-01")
    answered = await answer(scene, bad)
    assert answered.status == "invalid" and answered.error["type"] == PROBLEM + "incorrectResponse"
    assert (await AcmeChallenge.get(id=bad.id)).status == "invalid"


async def test_the_challenge_answer_waits_for_the_first_attempt_only_so_long(
    scene: Scene, http_responder: HttpResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acme_validation, "CHALLENGE_SETTLE_WAIT", 0.05)
    http_responder.delay = 0.5
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "slow.example.com"})
    slow = await challenge_of(authorization, "http-01")
    serve_key_authorization(http_responder, scene, slow)
    answered = await answer(scene, slow)
    assert answered.status == "processing" and answered.error is None
    await acme_validation.wait_for_validations()
    assert (await AcmeChallenge.get(id=slow.id)).status == "valid"


async def test_http01_wrong_body_is_invalid_after_the_attempts(
    scene: Scene, http_responder: HttpResponder
) -> None:
    view, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "http-01")
    http_responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (200, b"something else", {})
    done = await respond(scene, challenge)
    assert done.status == "invalid" and done.attempts == acme_validation.MAX_ATTEMPTS == 3
    assert done.error["type"] == PROBLEM + "incorrectResponse"
    assert "something else" in done.error["detail"]
    assert len(http_responder.hosts) == 3  # every attempt reached the responder
    assert (await AcmeAuthorization.get(id=authorization.id)).status == "invalid"
    order = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert order.status == "invalid"
    # A finished challenge stays as it is when the client responds again.
    again = await acme_validation.respond_challenge(
        attachment=scene.attachment, account=scene.account, challenge_id=str(challenge.id)
    )
    assert again.challenge.status == "invalid"


async def test_http01_not_found_is_incorrect_response(scene: Scene) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    done = await respond(scene, await challenge_of(authorization, "http-01"))
    assert done.status == "invalid" and "HTTP 404" in done.error["detail"]


async def test_http01_connection_refused_is_a_connection_error(
    scene: Scene, configure: Callable[..., None]
) -> None:
    configure(acme_http01_port=_closed_port())
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    done = await respond(scene, await challenge_of(authorization, "http-01"))
    assert done.status == "invalid" and done.attempts == 3
    assert done.error["type"] == PROBLEM + "connection"
    assert done.error["identifier"] == {"type": "dns", "value": "www.example.com"}


async def test_http01_for_an_ip_identifier(scene: Scene, http_responder: HttpResponder) -> None:
    _, authorization = await authorization_of(scene, {"type": "ip", "value": "127.0.0.1"})
    challenge = await challenge_of(authorization, "http-01")
    http_responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (
        200,
        key_authz(scene, challenge).encode(),
        {},
    )
    assert (await respond(scene, challenge)).status == "valid"
    assert http_responder.hosts == [f"127.0.0.1:{http_responder.port}"]


async def test_loopback_addresses_are_refused_unless_allowed(
    scene: Scene, configure: Callable[..., None], http_responder: HttpResponder
) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "http-01")
    http_responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (
        200,
        key_authz(scene, challenge).encode(),
        {},
    )
    configure(acme_allow_private_identifiers=False)
    done = await respond(scene, challenge)
    assert done.status == "invalid" and done.error["type"] == PROBLEM + "dns"
    assert "loopback" in done.error["detail"]
    assert http_responder.hosts == []  # never connected


async def test_unknown_name_is_a_dns_error(scene: Scene, dns_server: DnsServer) -> None:
    dns_server.nx.add("gone.example.com")
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "gone.example.com"})
    done = await respond(scene, await challenge_of(authorization, "http-01"))
    assert done.status == "invalid" and done.error["type"] == PROBLEM + "dns"
    assert "NXDOMAIN" in done.error["detail"]


# ---------------------------------------------------------------- dns-01


async def test_dns01_valid_for_a_wildcard(scene: Scene, dns_server: DnsServer) -> None:
    view, authorization = await authorization_of(scene, {"type": "dns", "value": "*.example.com"})
    assert authorization.wildcard and authorization.identifier_value == "example.com"
    challenge = await challenge_of(authorization, "dns-01")
    dns_server.txt["_acme-challenge.example.com"] = [
        "unrelated",
        dns01_txt_value(key_authz(scene, challenge)),
    ]
    done = await respond(scene, challenge)
    assert done.status == "valid", done.error
    assert ("_acme-challenge.example.com", "TXT") in dns_server.queries
    order = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert order.status == "ready"


async def test_dns01_wrong_or_missing_record_is_invalid(scene: Scene, dns_server: DnsServer) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "dns-01")
    dns_server.txt["_acme-challenge.www.example.com"] = ["not-the-digest"]
    done = await respond(scene, challenge)
    assert done.status == "invalid" and done.error["type"] == PROBLEM + "incorrectResponse"
    assert "1 found" in done.error["detail"]
    _, other = await authorization_of(scene, {"type": "dns", "value": "api.example.com"})
    dns_server.nx.add("_acme-challenge.api.example.com")
    missing = await respond(scene, await challenge_of(other, "dns-01"))
    assert missing.status == "invalid" and missing.error["type"] == PROBLEM + "dns"


# ---------------------------------------------------------------- tls-alpn-01


async def test_tls_alpn01_valid(scene: Scene, configure: Callable[..., None]) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "tls-alpn-01")
    server = await tls_alpn_server("dns", "www.example.com", key_authz(scene, challenge)).start()
    try:
        configure(acme_tlsalpn01_port=server.port)
        done = await respond(scene, challenge)
    finally:
        await server.stop()
    assert done.status == "valid", done.error
    assert server.server_names == ["www.example.com"]  # SNI is the identifier


async def test_tls_alpn01_for_an_ip_identifier(scene: Scene, configure: Callable[..., None]) -> None:
    _, authorization = await authorization_of(scene, {"type": "ip", "value": "127.0.0.1"})
    challenge = await challenge_of(authorization, "tls-alpn-01")
    server = await tls_alpn_server("ip", "127.0.0.1", key_authz(scene, challenge)).start()
    try:
        configure(acme_tlsalpn01_port=server.port)
        done = await respond(scene, challenge)
    finally:
        await server.stop()
    assert done.status == "valid", done.error
    assert server.server_names == ["1.0.0.127.in-addr.arpa"]  # RFC 8738 §6


async def test_tls_alpn01_wrong_certificate_or_no_alpn_is_invalid(
    scene: Scene, configure: Callable[..., None]
) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "tls-alpn-01")
    wrong = await tls_alpn_server("dns", "www.example.com", "some.other-key-authorization").start()
    try:
        configure(acme_tlsalpn01_port=wrong.port)
        done = await respond(scene, challenge)
    finally:
        await wrong.stop()
    assert done.status == "invalid" and done.error["type"] == PROBLEM + "incorrectResponse"
    assert "acmeIdentifier" in done.error["detail"]

    _, other = await authorization_of(scene, {"type": "dns", "value": "api.example.com"})
    challenge = await challenge_of(other, "tls-alpn-01")
    plain = tls_alpn_server("dns", "api.example.com", key_authz(scene, challenge))
    plain.alpn = None  # an ordinary TLS server: no acme-tls/1
    await plain.start()
    try:
        configure(acme_tlsalpn01_port=plain.port)
        done = await respond(scene, challenge)
    finally:
        await plain.stop()
    assert done.status == "invalid" and done.error["type"] == PROBLEM + "tls"


# ---------------------------------------------------------------- outside the request


async def test_post_as_get_does_not_start_validation(scene: Scene) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "http-01")
    view = await acme_validation.respond_challenge(
        attachment=scene.attachment, account=scene.account, challenge_id=str(challenge.id), trigger=False
    )
    assert view.challenge.status == "pending"
    assert (await AcmeChallenge.get(id=challenge.id)).status == "pending"


async def test_the_worker_finishes_what_a_stopped_server_left_processing(
    scene: Scene, http_responder: HttpResponder
) -> None:
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "http-01")
    http_responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (
        200,
        key_authz(scene, challenge).encode(),
        {},
    )
    # As a server that died mid-validation leaves it: processing, one attempt spent, its lease run out.
    await AcmeChallenge.filter(id=challenge.id).update(
        status="processing", attempts=1, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    # Not due yet: untouched.
    _, other = await authorization_of(scene, {"type": "dns", "value": "api.example.com"})
    leased = await challenge_of(other, "http-01")
    await AcmeChallenge.filter(id=leased.id).update(
        status="processing", next_attempt_at=datetime.now(UTC) + timedelta(minutes=1)
    )
    assert await acme_jobs.validate() == 1
    done = await AcmeChallenge.get(id=challenge.id)
    assert done.status == "valid" and done.attempts == 2
    assert (await AcmeAuthorization.get(id=authorization.id)).status == "valid"
    assert (await AcmeChallenge.get(id=leased.id)).status == "processing"
    assert await acme_jobs.validate() == 0


async def test_a_claimed_attempt_runs_once(
    scene: Scene, http_responder: HttpResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The next attempt further off than the claim tolerance (as in production): otherwise a validator that
    # comes after the first one's failed attempt may rightly claim the next attempt already.
    monkeypatch.setattr(acme_validation, "ATTEMPT_SPACING", 5.0)
    _, authorization = await authorization_of(scene, {"type": "dns", "value": "www.example.com"})
    challenge = await challenge_of(authorization, "http-01")
    http_responder.routes[f"/.well-known/acme-challenge/{challenge.token}"] = (200, b"wrong", {})
    await AcmeChallenge.filter(id=challenge.id).update(
        status="processing", attempts=0, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    # Two validators (say the worker and the API) reach the same attempt: one claims it.
    results = await asyncio.gather(
        acme_validation.attempt_validation(challenge.id), acme_validation.attempt_validation(challenge.id)
    )
    assert sorted(r is None for r in results) == [False, True]
    assert (await AcmeChallenge.get(id=challenge.id)).attempts == 1
    assert len(http_responder.hosts) == 1


async def test_unknown_challenge_is_not_found(scene: Scene) -> None:
    with pytest.raises(AcmeProblem) as caught:
        await acme_validation.respond_challenge(
            attachment=scene.attachment, account=scene.account, challenge_id=str(uuid.uuid4())
        )
    assert caught.value.status == 404


def test_acme_settings_are_read_and_checked() -> None:
    defaults = load_settings({})
    assert (defaults.acme_dns_resolver, defaults.acme_http01_port, defaults.acme_tlsalpn01_port) == (
        None,
        80,
        443,
    )
    assert defaults.acme_allow_private_identifiers is False
    settings = load_settings(
        {
            "KEYWARD_ACME_DNS_RESOLVER": "127.0.0.1:8053",
            "KEYWARD_ACME_HTTP01_PORT": "5002",
            "KEYWARD_ACME_TLSALPN01_PORT": "5001",
            "KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS": "true",
        }
    )
    assert settings.acme_dns_resolver == ("127.0.0.1", 8053)
    assert (settings.acme_http01_port, settings.acme_tlsalpn01_port) == (5002, 5001)
    assert settings.acme_allow_private_identifiers is True
    assert load_settings({"KEYWARD_ACME_DNS_RESOLVER": "[::1]:53"}).acme_dns_resolver == ("::1", 53)
    assert load_settings({"KEYWARD_ACME_DNS_RESOLVER": "10.0.0.53"}).acme_dns_resolver == ("10.0.0.53", 53)
    for variable, value in (
        ("KEYWARD_ACME_DNS_RESOLVER", "ns1.example.com:53"),
        ("KEYWARD_ACME_DNS_RESOLVER", "127.0.0.1:99999"),
        ("KEYWARD_ACME_HTTP01_PORT", "http"),
        ("KEYWARD_ACME_TLSALPN01_PORT", "0"),
        ("KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS", "maybe"),
    ):
        with pytest.raises(ConfigurationError) as caught:
            load_settings({variable: value})
        assert variable in caught.value.message
