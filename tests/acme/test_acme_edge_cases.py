"""Edge cases through the Python `acme` library (certbot's own protocol code) against the live server:
a replayed nonce, another account's order, policy-violating CSRs, a wrong EAB MAC."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import josepy as jose
import pytest
from acme import challenges, client, messages
from acme_clients_support import (
    ACME_RULES,
    AcmeTarget,
    Http01Responder,
    acme_settings,
    challtestsrv,
    free_port,
    make_acme_target,
)
from conftest import OrgAdmin, tool_or_skip
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from factories import make_csr_pem

from models import Certificate
from models.acme import AcmeAccount
from pki.key import KeyAlgorithm, generate_private_key

pytestmark = pytest.mark.live

P256_ONLY = {**ACME_RULES, "keyAlgorithms": ["EC_P256"]}


@dataclass
class Session:
    """One account's client, and every response it saw (status, problem type) in order."""

    acme: client.ClientV2
    seen: list[tuple[int, str | None]] = field(default_factory=list)
    nonces_sent: list[str] = field(default_factory=list)


def _recorder(session: Session) -> Callable[..., None]:
    def hook(response: Any, *args: Any, **kwargs: Any) -> None:
        problem = None
        if response.headers.get("Content-Type", "").startswith("application/problem+json"):
            problem = response.json().get("type")
        session.seen.append((response.status_code, problem))

    return hook


def open_session(target: AcmeTarget, *, eab_hmac_key: str | None = None, register: bool = True) -> Session:
    """A fresh P-256 account key; registers with EAB (the target's key unless another is given)."""
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=jose.ES256, user_agent="keyward-tests")
    directory = client.ClientV2.get_directory(target.directory_url, net)
    session = Session(client.ClientV2(directory, net))
    net.session.hooks["response"].append(_recorder(session))
    wrap = net._wrap_in_jws

    def recording_wrap(obj: Any, nonce: str, url: str) -> str:
        session.nonces_sent.append(nonce)
        return wrap(obj, nonce, url)

    net._wrap_in_jws = recording_wrap  # type: ignore[method-assign]
    if register:
        eab = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(),
            kid=target.eab_kid,
            hmac_key=eab_hmac_key or target.eab_hmac_key,
            directory=directory,
        )
        session.acme.new_account(
            messages.NewRegistration.from_data(
                email="ops@edge.example.com", terms_of_service_agreed=True, external_account_binding=eab
            )
        )
    return session


def authorize_http01(session: Session, order: messages.OrderResource, responder: Http01Responder) -> None:
    """Answer every authorization of the order through the http-01 responder."""
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.response_and_validation(session.acme.net.key)
        responder.tokens[challb.chall.encode("token")] = validation
        session.acme.answer_challenge(challb, response)


def deadline(seconds: int = 60) -> datetime.datetime:
    return datetime.datetime.now() + datetime.timedelta(seconds=seconds)


def problem_code(error: BaseException) -> str | None:
    assert isinstance(error, messages.Error), repr(error)
    return error.code


@pytest.fixture
def loopback() -> Iterator[Http01Responder]:
    """pebble-challtestsrv answering A queries with 127.0.0.1, an http-01 responder, ACME settings on both."""
    with (
        challtestsrv(tool_or_skip("pebble-challtestsrv")) as dns,
        Http01Responder(free_port()) as responder,
        acme_settings(http01_port=responder.port, dns_resolver=dns.dns_address),
    ):
        yield responder


async def test_full_flow_baseline(live_server: str, org_admin: OrgAdmin, loopback: Http01Responder) -> None:
    """The control for the refusals below: the same client gets a certificate when nothing is wrong."""
    target = await make_acme_target(org_admin.organization_id)

    def flow() -> str:
        session = open_session(target)
        csr, _ = make_csr_pem(common_name="edge.example.com", sans=["edge.example.com"])
        order = session.acme.new_order(csr.encode())
        authorize_http01(session, order, loopback)
        return session.acme.poll_and_finalize(order, deadline()).fullchain_pem

    fullchain = await asyncio.to_thread(flow)
    assert fullchain.count("BEGIN CERTIFICATE") >= 2
    assert await Certificate.filter(application_id=target.application.id).count() == 1


async def test_replayed_nonce_gets_bad_nonce_and_the_library_recovers(
    live_server: str, org_admin: OrgAdmin
) -> None:
    target = await make_acme_target(org_admin.organization_id)

    def flow() -> Session:
        session = open_session(target)
        regr = session.acme.net.account
        assert regr is not None
        session.acme.query_registration(regr)
        used = session.nonces_sent[-1]
        # Put the spent nonce back: the next request replays it, gets badNonce, and the library retries once.
        session.acme.net._nonces.clear()
        session.acme.net._nonces.add(used)
        before = len(session.seen)
        session.acme.query_registration(regr)
        session.seen[:] = session.seen[before:]
        assert session.nonces_sent[-2] == used
        return session

    session = await asyncio.to_thread(flow)
    problems = [(status, problem) for status, problem in session.seen if status >= 400]
    assert problems == [(400, "urn:ietf:params:acme:error:badNonce")], session.seen
    assert session.seen[-1][0] == 200


async def test_another_accounts_order_is_unauthorized(
    live_server: str, org_admin: OrgAdmin, loopback: Http01Responder
) -> None:
    target = await make_acme_target(org_admin.organization_id)

    def flow() -> list[str | None]:
        owner, intruder = open_session(target), open_session(target)
        csr, _ = make_csr_pem(common_name="mine.example.com", sans=["mine.example.com"])
        order = owner.acme.new_order(csr.encode())
        codes: list[str | None] = []
        finalize = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr.encode()))
        for url, body in (
            (order.uri, None),
            (order.body.authorizations[0], None),
            (order.body.finalize, finalize),
        ):
            try:
                if body is None:
                    intruder.acme._post_as_get(url)
                else:
                    intruder.acme._post(url, body)
            except messages.Error as error:
                codes.append(problem_code(error))
            else:
                codes.append(None)
        return codes

    codes = await asyncio.to_thread(flow)
    assert codes == ["unauthorized", "unauthorized", "unauthorized"]


async def test_policy_violating_requests_are_refused(
    live_server: str, org_admin: OrgAdmin, loopback: Http01Responder
) -> None:
    target = await make_acme_target(org_admin.organization_id, rules=P256_ONLY)

    def flow() -> dict[str, str | None]:
        session = open_session(target)
        codes: dict[str, str | None] = {}
        # A name the policy does not allow: refused at newOrder, or at the latest at finalize.
        csr, _ = make_csr_pem(common_name="shop.example.org", sans=["shop.example.org"])
        try:
            order = session.acme.new_order(csr.encode())
            authorize_http01(session, order, loopback)
            session.acme.poll_and_finalize(order, deadline())
            codes["name"] = None
        except messages.Error as error:
            codes["name"] = problem_code(error)

        # Names in policy and in the order, but a P-384 key where the policy allows P-256 only.
        p384 = generate_private_key(KeyAlgorithm.EC_P384)
        bad_key, _ = make_csr_pem(common_name="keys.example.com", sans=["keys.example.com"], key=p384)
        order = session.acme.new_order(bad_key.encode())
        authorize_http01(session, order, loopback)
        try:
            session.acme.poll_and_finalize(order, deadline())
            codes["key"] = None
        except messages.Error as error:
            codes["key"] = problem_code(error)

        # A CSR for names not in the order (the order itself is authorized and ready).
        ordered, _ = make_csr_pem(common_name="names.example.com", sans=["names.example.com"])
        order = session.acme.new_order(ordered.encode())
        authorize_http01(session, order, loopback)
        other, _ = make_csr_pem(common_name="other.example.com", sans=["other.example.com"])
        try:
            session.acme.poll_and_finalize(order.update(csr_pem=other.encode()), deadline())
            codes["names"] = None
        except messages.Error as error:
            codes["names"] = problem_code(error)
        return codes

    codes = await asyncio.to_thread(flow)
    assert codes["name"] == "rejectedIdentifier"
    assert codes["key"] == "badCSR"
    assert codes["names"] == "badCSR"
    assert await Certificate.filter(application_id=target.application.id).count() == 0


async def test_wrong_or_missing_eab_is_refused(live_server: str, org_admin: OrgAdmin) -> None:
    target = await make_acme_target(org_admin.organization_id)
    wrong = "A" * 43  # 32 zero-ish bytes, base64url: a well-formed key that is not this kid's

    def flow() -> tuple[str | None, str | None]:
        codes: list[str | None] = []
        try:
            open_session(target, eab_hmac_key=wrong)
            codes.append(None)
        except messages.Error as error:
            codes.append(problem_code(error))
        session = open_session(target, register=False)
        try:
            session.acme.new_account(
                messages.NewRegistration.from_data(email="ops@edge.example.com", terms_of_service_agreed=True)
            )
            codes.append(None)
        except messages.Error as error:
            codes.append(problem_code(error))
        return codes[0], codes[1]

    wrong_mac, missing = await asyncio.to_thread(flow)
    assert wrong_mac == "unauthorized"
    assert missing == "externalAccountRequired"
    assert await AcmeAccount.filter(attachment_id=target.attachment.id).count() == 0
