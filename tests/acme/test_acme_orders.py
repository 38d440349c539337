"""ACME orders at the core: identifiers and policy, authorization reuse, ownership, finalize through the one
issuance path, certificate download and revocation (by the account and by the certificate's key)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from acme_order_support import (
    DnsServer,
    HttpResponder,
    Scene,
    acme_csr,
    b64url_der,
    make_authorizations_valid,
    make_scene,
    settings_override,
)
from conftest import OrgAdmin
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from factories import DEFAULT_RULES, cached_key, row_counts

from core import acme_order, acme_validation
from core.acme_account import acme_url
from core.authz import Actor
from core.certificate import list_certificates
from models import (
    AcmeAuthorization,
    AcmeChallenge,
    AcmeOrder,
    AuditEvent,
    Certificate,
    OutboxEvent,
)
from pki.acme import jws
from pki.acme.challenge import b64url, key_authorization, public_key_jwk
from pki.acme.problem import AcmeProblem
from pki.key import KeyAlgorithm, generate_private_key

PROBLEM = "urn:ietf:params:acme:error:"


@pytest.fixture
def allow_private() -> Iterator[None]:
    apply = settings_override()
    apply(acme_allow_private_identifiers=True)
    yield
    apply()


@pytest.fixture
async def scene(org_admin: OrgAdmin, allow_private: None) -> Scene:
    return await make_scene(org_admin.organization_id)


def dns(*names: str) -> list[dict[str, str]]:
    return [{"type": "dns", "value": name} for name in names]


async def order_for(scene: Scene, identifiers: list[dict[str, str]], **extra: Any) -> acme_order.OrderView:
    return await acme_order.new_order(
        attachment=scene.attachment, account=scene.account, payload={"identifiers": identifiers, **extra}
    )


async def ready_order(scene: Scene, *names: str) -> acme_order.OrderView:
    view = await order_for(scene, dns(*names))
    await make_authorizations_valid(view.order.authorization_ids)
    view = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert view.status == "ready"
    return view


async def finalize(scene: Scene, view: acme_order.OrderView, csr: str) -> acme_order.OrderView:
    return await acme_order.finalize_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id), payload={"csr": csr}
    )


async def issued(scene: Scene, *names: str) -> Certificate:
    view = await ready_order(scene, *names)
    view = await finalize(scene, view, acme_csr(list(names)))
    assert view.status == "valid"
    return await Certificate.get(id=view.order.certificate_id)


# ---------------------------------------------------------------- new orders


async def test_new_order_creates_authorizations_with_the_right_challenges(scene: Scene) -> None:
    view = await order_for(
        scene,
        [
            {"type": "dns", "value": "WWW.Example.com"},
            {"type": "dns", "value": "*.example.com"},
            {"type": "ip", "value": "10.1.2.3"},
            {"type": "dns", "value": "www.example.com"},  # a duplicate once normalized
        ],
    )
    assert view.status == "pending"
    assert view.identifiers == [
        {"type": "dns", "value": "www.example.com"},
        {"type": "dns", "value": "*.example.com"},
        {"type": "ip", "value": "10.1.2.3"},
    ]
    assert view.order.expires_at > datetime.now(UTC) + timedelta(days=6)
    challenge_types = {}
    for authorization in view.authorizations:
        rows = await AcmeChallenge.filter(authorization_id=authorization.id)
        challenge_types[(authorization.identifier_value, authorization.wildcard)] = sorted(
            r.type for r in rows
        )
        for row in rows:
            assert len(row.token) == 22 and "=" not in row.token  # 128 bits, base64url
    assert challenge_types == {
        ("www.example.com", False): ["dns-01", "http-01", "tls-alpn-01"],
        ("example.com", True): ["dns-01"],  # wildcard: dns-01 only
        ("10.1.2.3", False): ["http-01", "tls-alpn-01"],  # IP (RFC 8738): no dns-01
    }
    tokens = await AcmeChallenge.all().values_list("token", flat=True)
    assert len(set(tokens)) == len(tokens)


async def test_unsupported_identifier_type_is_refused(scene: Scene) -> None:
    with pytest.raises(AcmeProblem) as caught:
        await order_for(scene, [{"type": "email", "value": "a@example.com"}])
    assert caught.value.kind == "unsupportedIdentifier"
    assert caught.value.subproblems and caught.value.subproblems[0]["identifier"]["type"] == "email"
    assert await AcmeOrder.all().count() == 0


async def test_names_outside_the_policy_are_rejected_with_subproblems(scene: Scene) -> None:
    with pytest.raises(AcmeProblem) as caught:
        await order_for(
            scene,
            [
                {"type": "dns", "value": "www.example.com"},
                {"type": "dns", "value": "www.evil.test"},
                {"type": "ip", "value": "192.168.1.1"},
            ],
        )
    problem = caught.value
    assert problem.kind == "rejectedIdentifier"
    rejected = {sub["identifier"]["value"]: sub for sub in problem.subproblems or []}
    assert set(rejected) == {"www.evil.test", "192.168.1.1"}
    assert all(sub["type"] == PROBLEM + "rejectedIdentifier" for sub in rejected.values())
    assert "www.evil.test" in problem.detail
    assert problem.to_dict()["subproblems"]
    assert await AcmeOrder.all().count() == 0 and await AcmeAuthorization.all().count() == 0


async def test_malformed_names_and_private_addresses_are_rejected(org_admin: OrgAdmin) -> None:
    scene = await make_scene(org_admin.organization_id)
    with pytest.raises(AcmeProblem) as caught:
        await order_for(
            scene, [{"type": "dns", "value": "a..example.com"}, {"type": "dns", "value": "10.0.0.1"}]
        )
    assert caught.value.kind == "rejectedIdentifier" and len(caught.value.subproblems or []) == 2
    # KEYWARD_ACME_ALLOW_PRIVATE_IDENTIFIERS is off here: a private IP identifier is refused (PITFALLS).
    with pytest.raises(AcmeProblem) as caught:
        await order_for(scene, [{"type": "ip", "value": "10.0.0.1"}])
    assert caught.value.kind == "rejectedIdentifier"
    assert "private" in caught.value.detail
    with pytest.raises(AcmeProblem) as caught:
        await order_for(scene, [])
    assert caught.value.kind == "malformed"


async def test_not_after_beyond_the_policy_is_refused(scene: Scene) -> None:
    too_late = (datetime.now(UTC) + timedelta(days=500)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(AcmeProblem) as caught:
        await order_for(scene, dns("www.example.com"), notAfter=too_late)
    assert caught.value.kind == "malformed" and "397d" in caught.value.detail
    fine = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    view = await order_for(scene, dns("www.example.com"), notAfter=fine)
    await make_authorizations_valid(view.order.authorization_ids)
    view = await finalize(scene, view, acme_csr(["www.example.com"]))
    certificate = await Certificate.get(id=view.order.certificate_id)
    assert abs(certificate.not_after - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)


# ---------------------------------------------------------------- authorizations


async def test_valid_authorizations_are_reused_for_the_same_account_only(scene: Scene) -> None:
    first = await order_for(scene, dns("www.example.com", "api.example.com"))
    await make_authorizations_valid(first.order.authorization_ids[:1])  # www only
    second = await order_for(scene, dns("www.example.com", "api.example.com"))
    assert second.order.authorization_ids[0] == first.order.authorization_ids[0]  # valid: reused
    assert second.order.authorization_ids[1] != first.order.authorization_ids[1]  # pending: new
    assert second.status == "pending"
    await make_authorizations_valid(second.order.authorization_ids)
    third = await order_for(scene, dns("api.example.com", "www.example.com"))
    assert third.status == "ready"  # every authorization reused
    assert set(third.order.authorization_ids) == set(second.order.authorization_ids)
    # Another account proves control itself.
    theirs = await acme_order.new_order(
        attachment=scene.attachment, account=scene.other, payload={"identifiers": dns("www.example.com")}
    )
    assert theirs.order.authorization_ids[0] not in first.order.authorization_ids
    # A wildcard is not covered by the name's own authorization, nor an expired one reused.
    wildcard = await order_for(scene, dns("*.www.example.com", "*.example.com"))
    assert wildcard.status == "pending"
    await AcmeAuthorization.filter(id=uuid.UUID(first.order.authorization_ids[0])).update(
        expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    fourth = await order_for(scene, dns("www.example.com"))
    assert fourth.order.authorization_ids[0] != first.order.authorization_ids[0]


async def test_order_status_follows_its_authorizations(scene: Scene) -> None:
    view = await order_for(scene, dns("www.example.com", "api.example.com"))
    ids = view.order.authorization_ids
    await make_authorizations_valid(ids[:1])
    again = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert again.status == "pending"
    await AcmeAuthorization.filter(id=uuid.UUID(ids[1])).update(status="invalid")
    again = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert again.status == "invalid" and again.order.error["type"] == PROBLEM + "unauthorized"
    # An order past its expiry is invalid; an authorization past its expiry is expired.
    late = await order_for(scene, dns("late.example.com"))
    await AcmeOrder.filter(id=late.order.id).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await AcmeAuthorization.filter(id=uuid.UUID(late.order.authorization_ids[0])).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    late = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(late.order.id)
    )
    assert late.status == "invalid" and "expired" in late.order.error["detail"]
    authz = await acme_order.get_authorization(
        attachment=scene.attachment, account=scene.account, authz_id=late.order.authorization_ids[0]
    )
    assert authz.status == "expired"


async def test_an_authorization_can_be_deactivated(scene: Scene) -> None:
    view = await order_for(scene, dns("www.example.com"))
    authz_id = view.order.authorization_ids[0]
    result = await acme_order.get_authorization(
        attachment=scene.attachment,
        account=scene.account,
        authz_id=authz_id,
        payload={"status": "deactivated"},
    )
    assert result.status == "deactivated"
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.get_authorization(
            attachment=scene.attachment, account=scene.account, authz_id=authz_id, payload={"status": "valid"}
        )
    assert caught.value.kind == "malformed"
    again = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert again.status == "invalid"


async def test_another_accounts_objects_are_unauthorized(scene: Scene) -> None:
    certificate = await issued(scene, "www.example.com")
    order = await AcmeOrder.get(certificate_id=certificate.id)
    authz_id = order.authorization_ids[0]
    challenge = await AcmeChallenge.filter(authorization_id=uuid.UUID(authz_id)).first()
    assert challenge is not None
    attempts = [
        acme_order.get_order(attachment=scene.attachment, account=scene.other, order_id=str(order.id)),
        acme_order.finalize_order(
            attachment=scene.attachment, account=scene.other, order_id=str(order.id), payload={"csr": "x"}
        ),
        acme_order.get_authorization(attachment=scene.attachment, account=scene.other, authz_id=authz_id),
        acme_validation.respond_challenge(
            attachment=scene.attachment, account=scene.other, challenge_id=str(challenge.id)
        ),
        acme_order.certificate_chain(
            attachment=scene.attachment, account=scene.other, certificate_id=str(certificate.id)
        ),
    ]
    for attempt in attempts:
        with pytest.raises(AcmeProblem) as caught:
            await attempt
        assert (caught.value.kind, caught.value.status) == ("unauthorized", 403)
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.get_order(
            attachment=scene.attachment, account=scene.account, order_id=str(uuid.uuid4())
        )
    assert caught.value.status == 404
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.get_order(attachment=scene.attachment, account=scene.account, order_id="not-a-uuid")
    assert caught.value.status == 404


# ---------------------------------------------------------------- finalize


async def test_finalize_before_ready_is_order_not_ready(scene: Scene) -> None:
    view = await order_for(scene, dns("www.example.com"))
    with pytest.raises(AcmeProblem) as caught:
        await finalize(scene, view, acme_csr(["www.example.com"]))
    assert (caught.value.kind, caught.value.status) == ("orderNotReady", 403)
    assert await Certificate.all().count() == 0


@pytest.mark.parametrize(
    ("names", "common_name", "fragment"),
    [
        (
            ["www.example.com", "api.example.com", "extra.example.com"],
            None,
            "not in the order: extra.example.com",
        ),
        (["www.example.com"], None, "missing api.example.com"),
        (["www.example.com", "api.example.com"], "other.example.com", "common name"),
        (["www.example.com", "api.example.com", "EMAIL:a@example.com"], None, "EMAIL"),
    ],
)
async def test_a_csr_must_name_exactly_the_orders_identifiers(
    scene: Scene, names: list[str], common_name: str | None, fragment: str
) -> None:
    view = await ready_order(scene, "www.example.com", "api.example.com")
    before = await row_counts()
    with pytest.raises(AcmeProblem) as caught:
        await finalize(scene, view, acme_csr(names, common_name=common_name))
    assert caught.value.kind == "badCSR"
    assert fragment in caught.value.detail
    assert await row_counts() == before
    again = await acme_order.get_order(
        attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
    )
    assert again.status == "ready"  # the client may finalize again with a right CSR


async def test_malformed_csr_is_bad_csr(scene: Scene) -> None:
    view = await ready_order(scene, "www.example.com")
    for csr in ("AAAA", "not base64 !", "MIIB+/=="):
        with pytest.raises(AcmeProblem) as caught:
            await finalize(scene, view, csr)
        assert caught.value.kind == "badCSR"
    assert await Certificate.all().count() == 0


async def test_a_policy_violation_at_finalize_is_refused_and_issues_nothing(org_admin: OrgAdmin) -> None:
    apply = settings_override()
    apply(acme_allow_private_identifiers=True)
    try:
        scene = await make_scene(
            org_admin.organization_id, rules={**DEFAULT_RULES, "keyAlgorithms": ["EC_P384"]}
        )
        view = await ready_order(scene, "www.example.com")
        before = await row_counts()
        with pytest.raises(AcmeProblem) as caught:
            await finalize(scene, view, acme_csr(["www.example.com"]))  # a P-256 key
        assert caught.value.kind == "badCSR"
        assert "key algorithm EC_P256 is not allowed" in caught.value.detail
        assert await row_counts() == before
        again = await acme_order.get_order(
            attachment=scene.attachment, account=scene.account, order_id=str(view.order.id)
        )
        assert again.status == "ready" and again.order.certificate_id is None
        p384 = cached_key(KeyAlgorithm.EC_P384, "leaf")
        view = await finalize(scene, again, acme_csr(["www.example.com"], key=p384))
        assert view.status == "valid"
    finally:
        apply()


async def test_finalize_issues_into_the_application_inventory(scene: Scene) -> None:
    view = await ready_order(scene, "www.example.com", "api.example.com")
    view = await finalize(
        scene, view, acme_csr(["api.example.com", "www.example.com"], common_name="www.example.com")
    )
    assert view.status == "valid" and view.order.certificate_id is not None
    stored = await AcmeOrder.get(id=view.order.id)
    assert stored.status == "valid" and stored.certificate_id == view.order.certificate_id
    certificate = await Certificate.get(id=view.order.certificate_id)
    assert certificate.enrollment_method == "acme"
    assert (
        certificate.application_id == scene.application.id and certificate.profile_id == scene.pki.profile.id
    )
    assert {san["value"] for san in certificate.sans} == {"www.example.com", "api.example.com"}
    page = await list_certificates(actor=Actor.system(scene.org.id), application_id=scene.application.id)
    assert [c.id for c in page.items] == [certificate.id]
    audit = await AuditEvent.get(action="certificate.issue", resource_id=str(certificate.id))
    assert audit.actor_name == f"acme:{scene.account.id}"
    assert audit.details["enrollment_method"] == "acme"
    event = await OutboxEvent.get(certificate_id=certificate.id)
    assert event.event_type == "certificate.issued"
    # Download: leaf, then the issuing CA; not the root.
    pem = await acme_order.certificate_chain(
        attachment=scene.attachment, account=scene.account, certificate_id=str(certificate.id)
    )
    chain = x509.load_pem_x509_certificates(pem.encode())
    assert [c.subject for c in chain] == [
        x509.load_pem_x509_certificate(certificate.certificate_pem.encode()).subject,
        scene.pki.intermediate_certificate.subject,
    ]
    # A second finalize of a valid order issues nothing more.
    with pytest.raises(AcmeProblem) as caught:
        await finalize(scene, view, acme_csr(["api.example.com", "www.example.com"]))
    assert caught.value.kind == "orderNotReady"
    assert await Certificate.all().count() == 1


async def test_ip_and_wildcard_identifiers_are_issued_in_the_right_san_types(scene: Scene) -> None:
    view = await order_for(
        scene, [{"type": "ip", "value": "10.9.8.7"}, {"type": "dns", "value": "*.example.com"}]
    )
    await make_authorizations_valid(view.order.authorization_ids)
    view = await finalize(scene, view, acme_csr(["IP:10.9.8.7", "*.example.com"]))
    certificate = await Certificate.get(id=view.order.certificate_id)
    assert sorted((s["type"], s["value"]) for s in certificate.sans) == [
        ("DNS", "*.example.com"),
        ("IP", "10.9.8.7"),
    ]


# ---------------------------------------------------------------- revocation


async def test_revoke_by_the_ordering_account(scene: Scene) -> None:
    certificate = await issued(scene, "www.example.com")
    payload = {"certificate": b64url_der(certificate.certificate_pem), "reason": 1}
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.revoke_certificate(
            attachment=scene.attachment, account=scene.other, jwk=None, payload=payload
        )
    assert (caught.value.kind, caught.value.status) == ("unauthorized", 403)
    revoked = await acme_order.revoke_certificate(
        attachment=scene.attachment, account=scene.account, jwk=None, payload=payload
    )
    assert revoked.status == "revoked"
    row = await Certificate.get(id=certificate.id)
    assert row.status == "revoked" and row.revocation_reason == "keyCompromise"
    audit = await AuditEvent.get(action="certificate.revoke", resource_id=str(certificate.id))
    assert audit.actor_name == f"acme:{scene.account.id}"
    assert (
        await OutboxEvent.filter(certificate_id=certificate.id, event_type="certificate.revoked").count() == 1
    )
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.revoke_certificate(
            attachment=scene.attachment, account=scene.account, jwk=None, payload=payload
        )
    assert caught.value.kind == "alreadyRevoked"
    assert await AuditEvent.filter(action="certificate.revoke", outcome="success").count() == 1


async def test_revoke_with_the_certificates_own_key(scene: Scene) -> None:
    certificate = await issued(scene, "www.example.com")
    payload = {"certificate": b64url_der(certificate.certificate_pem)}
    stranger = public_key_jwk(generate_private_key(KeyAlgorithm.EC_P256).public_key())
    assert stranger is not None
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.revoke_certificate(
            attachment=scene.attachment, account=None, jwk=stranger, payload=payload
        )
    assert (caught.value.kind, caught.value.status) == ("unauthorized", 403)
    own = public_key_jwk(cached_key(KeyAlgorithm.EC_P256, "leaf").public_key())  # make_csr_pem's key
    assert own is not None
    await acme_order.revoke_certificate(attachment=scene.attachment, account=None, jwk=own, payload=payload)
    row = await Certificate.get(id=certificate.id)
    assert row.status == "revoked" and row.revocation_reason == "unspecified"
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.revoke_certificate(
            attachment=scene.attachment, account=None, jwk=own, payload=payload
        )
    assert caught.value.kind == "alreadyRevoked"


async def test_revoke_refuses_bad_reasons_and_unknown_certificates(scene: Scene) -> None:
    certificate = await issued(scene, "www.example.com")
    der = b64url_der(certificate.certificate_pem)
    for reason in (7, 8, 2, "1", -1):
        with pytest.raises(AcmeProblem) as caught:
            await acme_order.revoke_certificate(
                attachment=scene.attachment,
                account=scene.account,
                jwk=None,
                payload={"certificate": der, "reason": reason},
            )
        assert caught.value.kind == "badRevocationReason"
    unknown = b64url_der(scene.pki.intermediate.certificate_pem)
    with pytest.raises(AcmeProblem) as caught:
        await acme_order.revoke_certificate(
            attachment=scene.attachment, account=scene.account, jwk=None, payload={"certificate": unknown}
        )
    assert caught.value.status == 404
    assert (await Certificate.get(id=certificate.id)).status == "active"


# ---------------------------------------------------------------- over HTTP, through the ACME routes


class Client:
    """A minimal ACME client over the ASGI app: signs with a fresh nonce, keeps the next one."""

    def __init__(self, http: httpx.AsyncClient, scene: Scene, key: Any) -> None:
        self.http, self.scene, self.key = http, scene, key
        self.nonce: str | None = None
        self.kid: str | None = None

    def url(self, path: str) -> str:
        return acme_url(self.scene.attachment, path)

    async def post(self, url: str, payload: Any, *, use_jwk: bool = False) -> httpx.Response:
        if self.nonce is None:
            head = await self.http.head(urlsplit(self.url("new-nonce")).path)
            self.nonce = head.headers["Replay-Nonce"]
        body = jws.sign(self.key, payload, url=url, nonce=self.nonce, kid=None if use_jwk else self.kid)
        response = await self.http.post(
            urlsplit(url).path, json=body, headers={"Content-Type": "application/jose+json"}
        )
        self.nonce = response.headers.get("Replay-Nonce")
        return response

    async def register(self) -> None:
        response = await self.post(self.url("new-account"), {"termsOfServiceAgreed": True}, use_jwk=True)
        assert response.status_code == 201, response.text
        self.kid = response.headers["Location"]


async def test_the_whole_flow_over_http(
    org_admin: OrgAdmin, client: httpx.AsyncClient, allow_private: None
) -> None:
    dns_server = await DnsServer().start()
    responder = await HttpResponder().start()
    apply = settings_override()
    apply(
        acme_allow_private_identifiers=True,
        acme_dns_resolver=("127.0.0.1", dns_server.port),
        acme_http01_port=responder.port,
    )
    try:
        scene = await make_scene(org_admin.organization_id)
        acme = Client(client, scene, generate_private_key(KeyAlgorithm.EC_P256))
        await acme.register()
        created = await acme.post(acme.url("new-order"), {"identifiers": dns("www.example.com")})
        assert created.status_code == 201, created.text
        order_location = created.headers["Location"]
        order = created.json()
        assert order["status"] == "pending" and order["identifiers"] == dns("www.example.com")
        assert order["finalize"] == order_location + "/finalize" and "certificate" not in order
        assert order["expires"].endswith("Z")

        authz = await acme.post(order["authorizations"][0], None)
        assert authz.status_code == 200 and authz.headers["Retry-After"] == "1"
        body = authz.json()
        assert body["identifier"] == {"type": "dns", "value": "www.example.com"} and "wildcard" not in body
        assert sorted(c["type"] for c in body["challenges"]) == ["dns-01", "http-01", "tls-alpn-01"]
        http01 = next(c for c in body["challenges"] if c["type"] == "http-01")
        thumb = jws.thumbprint(jws.public_key_to_jwk(acme.key))
        responder.routes[f"/.well-known/acme-challenge/{http01['token']}"] = (
            200,
            key_authorization(http01["token"], thumb).encode(),
            {},
        )
        answered = await acme.post(http01["url"], {})  # answered once the first attempt is over
        assert answered.status_code == 200 and answered.json()["status"] == "valid"
        assert answered.json()["validated"].endswith("Z") and "Retry-After" not in answered.headers
        assert f'<{order["authorizations"][0]}>;rel="up"' in answered.headers["Link"]
        await acme_validation.wait_for_validations()
        authz = await acme.post(order["authorizations"][0], None)
        assert authz.json()["status"] == "valid" and "Retry-After" not in authz.headers
        assert [c["type"] for c in authz.json()["challenges"]] == ["http-01"]
        assert authz.json()["challenges"][0]["validated"].endswith("Z")

        assert (await acme.post(order_location, None)).json()["status"] == "ready"
        finalized = await acme.post(order["finalize"], {"csr": acme_csr(["www.example.com"])})
        assert finalized.status_code == 200, finalized.text
        assert finalized.json()["status"] == "valid"
        certificate_url = finalized.json()["certificate"]
        downloaded = await acme.post(certificate_url, None)
        assert downloaded.headers["Content-Type"].startswith("application/pem-certificate-chain")
        assert len(x509.load_pem_x509_certificates(downloaded.content)) == 2

        intruder = Client(client, scene, generate_private_key(KeyAlgorithm.EC_P256))
        await intruder.register()
        refused = await intruder.post(order_location, None)
        assert refused.status_code == 403
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert refused.json()["type"] == PROBLEM + "unauthorized"

        leaf = x509.load_pem_x509_certificates(downloaded.content)[0]
        payload = {"certificate": b64url(leaf.public_bytes(serialization.Encoding.DER)), "reason": 4}
        revoked = await acme.post(acme.url("revoke-cert"), payload)
        assert revoked.status_code == 200, revoked.text
        again = await acme.post(acme.url("revoke-cert"), payload)
        assert again.status_code == 400 and again.json()["type"] == PROBLEM + "alreadyRevoked"
        row = await Certificate.get(fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex())
        assert row.status == "revoked" and row.revocation_reason == "superseded"
    finally:
        await acme_validation.wait_for_validations()
        apply()
        await responder.stop()
        dns_server.stop()
