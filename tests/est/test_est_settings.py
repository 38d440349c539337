"""EST settings through GraphQL (enableEst, updateEst, disableEst and AttachedProfile.est) and the protocol's
own answers in-process: the passphrase is write-only and never audited, refusals leave nothing behind,
404/405/413/415/401/403/202 as RFC 7030 has them."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from cryptography.hazmat.primitives import serialization
from est_support import PASSPHRASE, USERNAME, make_ca, make_est_target, make_leaf
from factories import make_application, make_csr_pem, make_org, make_pki

from core import est as est_service
from core import runtime
from models import ApplicationProfile, AuditEvent, Certificate, Organization
from pki.est import EstPending

EST_FIELDS = "est { enabled url aliasUrl username passphraseSet clientCaSubjects }"
ENABLE = f"mutation($input: EnableEstInput!) {{ enableEst(input: $input) {{ {EST_FIELDS} }} }}"
UPDATE = f"mutation($input: UpdateEstInput!) {{ updateEst(input: $input) {{ {EST_FIELDS} }} }}"
DISABLE = f"mutation($a: ID!, $p: ID!) {{ disableEst(applicationId: $a, profileId: $p) {{ {EST_FIELDS} }} }}"


def _basic(username: str = USERNAME, passphrase: str = PASSPHRASE) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{passphrase}".encode()).decode()}


def _csr(common_name: str = "device.example.com") -> bytes:
    pem, _ = make_csr_pem(common_name=common_name, sans=[f"DNS:{common_name}"])
    from cryptography import x509

    return base64.b64encode(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))


@pytest.fixture
async def https(app: Any) -> Any:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        yield http


async def test_enable_update_disable_through_graphql(gql: GraphQL, org_admin: OrgAdmin, https: Any) -> None:
    org = await Organization.get(id=org_admin.organization_id)
    pki = await make_pki(org)
    application = await make_application(org, name="meters", profiles=[pki.profile])
    ids = {"applicationId": str(application.id), "profileId": str(pki.profile.id)}
    token = org_admin.token

    # no authentication method: refused, nothing written
    with pytest.raises(GraphQLError) as refused:
        await gql(ENABLE, {"input": ids}, token=token)
    assert refused.value.codes == ["INVALID_INPUT"]
    with pytest.raises(GraphQLError) as short:
        await gql(ENABLE, {"input": {**ids, "passphrase": "short"}}, token=token)
    assert short.value.codes == ["INVALID_INPUT"]
    leaf, _ = make_leaf(make_ca("Not a bootstrap"), "x.example.com")
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(GraphQLError) as not_ca:
        await gql(ENABLE, {"input": {**ids, "clientCaPem": leaf_pem}}, token=token)
    assert not_ca.value.codes == ["INVALID_INPUT"]
    attachment = await ApplicationProfile.get(application_id=application.id, profile_id=pki.profile.id)
    assert not attachment.est_enabled and attachment.est_passphrase_hash is None

    secret = "a long EST passphrase"
    bootstrap = make_ca("Factory Bootstrap")[0].public_bytes(serialization.Encoding.PEM).decode()
    data = await gql(
        ENABLE,
        {"input": {**ids, "username": "meters", "passphrase": secret, "clientCaPem": bootstrap}},
        token=token,
    )
    est = data["enableEst"]["est"]
    assert est["enabled"] and est["passphraseSet"] and est["username"] == "meters"
    assert est["clientCaSubjects"] == ["CN=Factory Bootstrap"]
    assert est["url"] == (
        f"{runtime.settings().public_url}/.well-known/est/applications/{application.id}/profiles/{pki.profile.id}"
    )
    assert est["aliasUrl"] == f"{runtime.settings().public_url}/.well-known/est/meters.{pki.profile.name}"
    attachment = await ApplicationProfile.get(id=attachment.id)
    assert attachment.est_passphrase_hash and attachment.est_passphrase_hash.startswith("$argon2")

    # the passphrase works; it is nowhere in the audit log, nor its hash
    response = await https.post(
        f"/.well-known/est/meters.{pki.profile.name}/simpleenroll",
        content=_csr(),
        headers={**_basic("meters", secret), "Content-Type": "application/pkcs10"},
    )
    assert response.status_code == 200, response.text
    audit_text = json.dumps(await AuditEvent.all().values("details", "action"))
    assert secret not in audit_text and attachment.est_passphrase_hash not in audit_text
    assert "application_profile.est_enable" in audit_text

    # a new passphrase replaces the old one at once (the verified-passphrase cache keys on the stored hash)
    await gql(UPDATE, {"input": {**ids, "passphrase": "the next passphrase"}}, token=token)
    response = await https.post(
        f"/.well-known/est/meters.{pki.profile.name}/simpleenroll",
        content=_csr(),
        headers={**_basic("meters", secret), "Content-Type": "application/pkcs10"},
    )
    assert response.status_code == 401
    # clearing both methods while enabled is refused; clearing one is fine
    with pytest.raises(GraphQLError) as both:
        await gql(UPDATE, {"input": {**ids, "clearPassphrase": True, "clearClientCa": True}}, token=token)
    assert both.value.codes == ["INVALID_INPUT"]
    data = await gql(UPDATE, {"input": {**ids, "clearPassphrase": True}}, token=token)
    assert data["updateEst"]["est"]["passphraseSet"] is False

    data = await gql(DISABLE, {"a": ids["applicationId"], "p": ids["profileId"]}, token=token)
    assert data["disableEst"]["est"]["enabled"] is False
    response = await https.get(f"/.well-known/est/meters.{pki.profile.name}/cacerts")
    assert response.status_code == 404


async def test_protocol_answers(org_admin: OrgAdmin, https: Any, app: Any, monkeypatch: Any) -> None:
    target = await make_est_target(org_admin.organization_id)
    enroll = target.path("simpleenroll")
    pkcs10 = {"Content-Type": "application/pkcs10"}

    # unknown application, profile, label; disabled; wrong methods; unknown op
    assert (await https.get("/.well-known/est/applications/x/profiles/y/cacerts")).status_code == 404
    assert (await https.get("/.well-known/est/nolabel/cacerts")).status_code == 404
    assert (await https.get("/.well-known/est/nope.nothing/cacerts")).status_code == 404
    assert (await https.get(target.path("fullcmc"))).status_code == 404
    wrong = await https.get(enroll)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert (await https.post(target.path("cacerts"))).status_code == 405

    # 401 with a Basic challenge, 415, 413, 400 with a plain-text reason
    missing = await https.post(enroll, content=_csr(), headers=pkcs10)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith('Basic realm="')
    assert (
        await https.post(enroll, content=_csr(), headers={**_basic(), "Content-Type": "text/plain"})
    ).status_code == 415
    huge = await https.post(enroll, content=b"A" * 70000, headers={**_basic(), **pkcs10})
    assert huge.status_code == 413
    bad = await https.post(enroll, content=b"bm90IGEgQ1NS", headers={**_basic(), **pkcs10})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/plain")
    # the policy refuses names outside example.com: 400 naming the violation, nothing issued
    policy = await https.post(enroll, content=_csr("evil.test"), headers={**_basic(), **pkcs10})
    assert policy.status_code == 400 and "violates policy" in policy.text
    assert await Certificate.filter(application_id=target.application.id).count() == 0

    # HTTP Basic (and serverkeygen's private key) never over plain HTTP unless explicitly allowed
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as plain:
        refused = await plain.post(enroll, content=_csr(), headers={**_basic(), **pkcs10})
        assert refused.status_code == 403
        import dataclasses

        settings = runtime.settings()
        monkeypatch.setattr(runtime, "_settings", dataclasses.replace(settings, est_allow_plain_http=True))
        allowed = await plain.post(enroll, content=_csr(), headers={**_basic(), **pkcs10})
        assert allowed.status_code == 200, allowed.text

    # approvals (issue 6) answer 202 with Retry-After; the path is ready
    async def pending(*args: Any, **kwargs: Any) -> Any:
        raise EstPending(retry_after=30)

    monkeypatch.setattr(est_service, "simple_enroll", pending)
    waiting = await https.post(enroll, content=_csr(), headers={**_basic(), **pkcs10})
    assert waiting.status_code == 202 and waiting.headers["retry-after"] == "30"


async def test_alias_names_shared_by_two_organizations_are_ambiguous(org_admin: OrgAdmin, https: Any) -> None:
    first = await make_est_target(org_admin.organization_id)
    other_org, _ = await make_org()
    other_pki = await make_pki(other_org, name=first.pki.profile.name.removeprefix("profile-"))
    other_app = await make_application(other_org, name=first.application.name, profiles=[other_pki.profile])
    assert other_pki.profile.name == first.pki.profile.name
    from core.authz import Actor

    await est_service.enable_est(
        actor=Actor.system(other_org.id),
        application_id=other_app.id,
        profile_id=other_pki.profile.id,
        passphrase="another passphrase",
    )
    response = await https.get(first.alias_path("cacerts"))
    assert response.status_code == 404 and "several organizations" in response.text
    # the id form still names each one
    assert (await https.get(first.path("cacerts"))).status_code == 200


async def test_demo_prints_working_est_credentials(db: str, https: Any) -> None:
    from core.demo import setup_demo

    first = (await setup_demo())["est"]
    demo = (await setup_demo())["est"]  # idempotent; each run sets (and prints) a fresh passphrase
    assert set(demo) == {"base_url", "username", "password"} and demo["password"] != first["password"]
    path = demo["base_url"].removeprefix(runtime.settings().public_url)
    response = await https.post(
        f"{path}/simpleenroll",
        content=_csr("est-demo.example.com"),
        headers={**_basic(demo["username"], demo["password"]), "Content-Type": "application/pkcs10"},
    )
    assert response.status_code == 200, response.text
    stale = await https.post(
        f"{path}/simpleenroll",
        content=_csr("est-demo.example.com"),
        headers={**_basic(first["username"], first["password"]), "Content-Type": "application/pkcs10"},
    )
    assert stale.status_code == 401
