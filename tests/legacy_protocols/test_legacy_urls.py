"""The legacy URLs in-process: each names a legacy profile and reaches its attachment on the project's
container; every URL the server hands out keeps the legacy form; a profile id that is no legacy profile's,
and a container under an application URL, answer as unknown endpoints do; wrong credentials are refused."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from conftest import OrgAdmin
from cryptography.hazmat.primitives.asymmetric import ec
from factories import attach, make_application, make_csr_pem, make_pki
from legacy_protocols_support import LegacyScene, legacy_scene

from core import application as application_service
from core import est as est_service
from core import runtime
from core import scep as scep_service
from core.acme_account import acme_url
from core.authz import Actor
from core.issuance import load_attachment_joined
from core.legacy.rules import importing
from models import AcmeAccount, AcmeOrder, Application, Certificate, Organization
from pki.acme import jws

JOSE = {"Content-Type": "application/jose+json"}


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> LegacyScene:
    return await legacy_scene(org_admin.organization_id)


@pytest.fixture
async def https(app: Any, db: str) -> Any:
    """HTTPS as the EST route sees it (HTTP Basic is refused over plain HTTP)."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        yield http


async def application_with_every_method(organization_id: uuid.UUID) -> tuple[Application, uuid.UUID]:
    """An ordinary Application whose profile has ACME, EST and SCEP on: its profile id is no legacy one."""
    org = await Organization.get(id=organization_id)
    pki = await make_pki(org)
    application = await make_application(org, profiles=[pki.profile])
    actor = Actor.system(org.id, "tests")
    ids = {"actor": actor, "application_id": application.id, "profile_id": pki.profile.id}
    await application_service.enable_acme(**ids)
    await est_service.enable_est(**ids, passphrase="application passphrase")
    await scep_service.enable_scep(**ids, static_challenge="application-challenge")
    return application, pki.profile.id


def _hmac(scene: LegacyScene) -> bytes:
    text = scene.eab_hmac_key
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _nonce(http: httpx.AsyncClient, base: str) -> str:
    return (await http.head(f"{base}new-nonce")).headers["Replay-Nonce"]


async def _post(
    http: httpx.AsyncClient,
    base: str,
    path: str,
    payload: Any,
    *,
    key: Any,
    kid: str | None = None,
    url: str | None = None,
) -> httpx.Response:
    body = jws.sign(key, payload, url=url or f"{base}{path}", nonce=await _nonce(http, base), kid=kid)
    return await http.post(f"{base}{path}", content=json.dumps(body), headers=JOSE)


def _problem(response: httpx.Response, kind: str, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["type"] == f"urn:ietf:params:acme:error:{kind}", response.text


async def test_legacy_acme_directory_hands_out_legacy_urls_only(
    scene: LegacyScene, client: httpx.AsyncClient
) -> None:
    base = scene.acme_base()
    response = await client.get(scene.acme_directory())
    assert response.status_code == 200, response.text
    directory = response.json()
    for name in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
        assert directory[name].startswith(base), directory
    assert directory["meta"]["externalAccountRequired"] is True
    assert response.headers["Link"] == f'<{scene.acme_directory()}>;rel="index"'

    # newAccount with the imported EAB key id and HMAC key: the account URL is in the legacy form.
    key = ec.generate_private_key(ec.SECP256R1())
    binding = jws.sign_eab(
        kid=scene.eab_kid, hmac_key=_hmac(scene), url=f"{base}new-account", account_key=key
    )
    created = await _post(
        client,
        base,
        "new-account",
        {"termsOfServiceAgreed": True, "externalAccountBinding": binding},
        key=key,
    )
    assert created.status_code == 201, created.text
    account = await AcmeAccount.get()
    location = created.headers["Location"]
    assert location == f"{base}account/{account.id}"
    assert created.json()["orders"] == f"{base}account/{account.id}/orders"
    assert account.eab_kid == scene.eab_kid

    # The kid in the legacy form is the account; the same account in an application URL form is not.
    fetched = await _post(client, base, f"account/{account.id}", None, key=key, kid=location)
    assert fetched.status_code == 200, fetched.text
    app_form_kid = f"{runtime.settings().public_url}/acme/applications/{scene.project_id}/profiles/"
    app_form_kid += f"{scene.profile_ids['acme']}/account/{account.id}"
    _problem(
        await _post(client, base, f"account/{account.id}", None, key=key, kid=app_form_kid),
        "accountDoesNotExist",
        400,
    )
    # A JWS whose url is another form of the same resource is refused.
    _problem(
        await _post(client, base, "new-order", {}, key=key, kid=location, url=app_form_kid),
        "unauthorized",
        400,
    )

    # An order's URLs (its own, authorizations, finalize) stay in the legacy form.
    order = await _post(
        client,
        base,
        "new-order",
        {"identifiers": [{"type": "dns", "value": "legacy.example.com"}]},
        key=key,
        kid=location,
    )
    assert order.status_code == 201, order.text
    body = order.json()
    assert order.headers["Location"].startswith(f"{base}order/")
    assert body["finalize"].startswith(base) and body["authorizations"]
    assert all(url.startswith(f"{base}authz/") for url in body["authorizations"])
    authz = await _post(
        client, base, body["authorizations"][0].removeprefix(base), None, key=key, kid=location
    )
    assert authz.status_code == 200, authz.text
    assert all(c["url"].startswith(f"{base}chall/") for c in authz.json()["challenges"])
    assert (await AcmeOrder.get()).account_id == account.id


async def test_legacy_acme_refuses_a_wrong_eab(scene: LegacyScene, client: httpx.AsyncClient) -> None:
    base = scene.acme_base()
    key = ec.generate_private_key(ec.SECP256R1())
    url = f"{base}new-account"
    for binding in (
        jws.sign_eab(kid=scene.eab_kid, hmac_key=b"w" * 32, url=url, account_key=key),
        jws.sign_eab(kid="not-the-legacy-kid", hmac_key=_hmac(scene), url=url, account_key=key),
    ):
        payload = {"termsOfServiceAgreed": True, "externalAccountBinding": binding}
        _problem(await _post(client, base, "new-account", payload, key=key), "unauthorized", 400)
    _problem(
        await _post(client, base, "new-account", {"termsOfServiceAgreed": True}, key=key),
        "externalAccountRequired",
        400,
    )
    assert await AcmeAccount.all().count() == 0


async def test_unknown_and_non_legacy_profiles_are_not_found_on_legacy_urls(
    scene: LegacyScene, client: httpx.AsyncClient, https: httpx.AsyncClient, org_admin: OrgAdmin
) -> None:
    application, profile_id = await application_with_every_method(org_admin.organization_id)
    public = runtime.settings().public_url

    def legacy_urls(name: str) -> tuple[str, str, str]:
        return (
            f"{public}/acme/profiles/{name}/directory",
            f"/.well-known/est/{name}/cacerts",
            f"/scep/{name}/pkiclient.exe?operation=GetCACaps",
        )

    unknown = legacy_urls(str(uuid.uuid4()))
    # The protocols' own not-found answers, as an unknown application URL gets them.
    acme_404 = (
        await client.get(f"{public}/acme/applications/{uuid.uuid4()}/profiles/{uuid.uuid4()}/directory")
    ).json()
    est_404 = (
        await https.get(f"/.well-known/est/applications/{uuid.uuid4()}/profiles/{uuid.uuid4()}/cacerts")
    ).text
    scep_404 = (
        await client.get(
            f"/scep/applications/{uuid.uuid4()}/profiles/{uuid.uuid4()}/pkiclient.exe?operation=GetCACaps"
        )
    ).text
    for acme, est, scep in (unknown, legacy_urls(str(profile_id)), legacy_urls("not-a-uuid")):
        response = await client.get(acme)
        _problem(response, "malformed", 404)
        assert response.json() == acme_404
        response = await https.get(est)
        assert (response.status_code, response.text) == (404, est_404)
        response = await client.get(scep)
        assert response.status_code == 404
        assert response.text in {scep_404, "not found\n"}

    # A legacy profile under an application URL (its container's id) is no endpoint either.
    container, legacy = scene.project_id, scene.profile_ids
    _problem(
        await client.get(f"{public}/acme/applications/{container}/profiles/{legacy['acme']}/directory"),
        "malformed",
        404,
    )
    response = await https.get(f"/.well-known/est/applications/{container}/profiles/{legacy['est']}/cacerts")
    assert response.status_code == 404
    response = await client.get(
        f"/scep/applications/{container}/profiles/{legacy['scep']}/pkiclient.exe?operation=GetCACaps"
    )
    assert response.status_code == 404

    # ... while the legacy URLs answer, and the application's own URLs still do.
    assert (await client.get(scene.acme_directory())).status_code == 200
    assert (await https.get(scene.est_url("cacerts", "https://testserver"))).status_code == 200
    assert (await client.get(f"{scene.scep_url()}?operation=GetCACaps")).status_code == 200
    app_base = f"{public}/acme/applications/{application.id}/profiles/{profile_id}"
    assert (await client.get(f"{app_base}/directory")).status_code == 200
    est_app = f"/.well-known/est/applications/{application.id}/profiles/{profile_id}/cacerts"
    assert (await https.get(est_app)).status_code == 200


async def test_legacy_est_refuses_a_wrong_passphrase(scene: LegacyScene, https: httpx.AsyncClient) -> None:
    pem, _ = make_csr_pem(common_name="device.example.com", sans=["DNS:device.example.com"])
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    body = base64.b64encode(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    url = scene.est_url("simpleenroll", "https://testserver")
    before = await Certificate.all().count()
    for username, passphrase in (
        (scene.est_username, "not the passphrase"),
        ("someone-else", scene.est_passphrase),
    ):
        basic = base64.b64encode(f"{username}:{passphrase}".encode()).decode()
        response = await https.post(
            url,
            content=body,
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/pkcs10"},
        )
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith('Basic realm="')
    assert await Certificate.all().count() == before


async def test_urls_of_a_legacy_attachment_are_in_the_legacy_form(scene: LegacyScene) -> None:
    """What GraphQL and the migration guide show for a legacy profile: the URLs its clients use."""
    public = runtime.settings().public_url
    for method in ("acme", "est", "scep"):
        attachment, _ = await load_attachment_joined(None, scene.profile_ids[method], legacy=True)
        assert attachment is not None and attachment.application_id == scene.project_id
        profile_id = scene.profile_ids[method]
        assert acme_url(attachment, "directory") == f"{public}/acme/profiles/{profile_id}/directory"
        assert est_service.est_url(attachment) == f"{public}/.well-known/est/{profile_id}"
        assert scep_service.scep_url(attachment) == f"{public}/scep/{profile_id}/pkiclient.exe"


async def test_a_non_legacy_profile_on_the_container_is_not_a_legacy_endpoint(
    scene: LegacyScene, client: httpx.AsyncClient, org_admin: OrgAdmin
) -> None:
    """Only a profile of the legacy project (legacy_project_id = the container) answers on a legacy URL."""
    org = await Organization.get(id=org_admin.organization_id)
    pki = await make_pki(org)

    await attach(await Application.get(id=scene.project_id), pki.profile)
    with importing():
        await application_service.enable_acme(
            actor=Actor.system(org.id, "tests"), application_id=scene.project_id, profile_id=pki.profile.id
        )
    _problem(
        await client.get(
            f"{scene.acme_base().rsplit('/profiles/', 1)[0]}/profiles/{pki.profile.id}/directory"
        ),
        "malformed",
        404,
    )
