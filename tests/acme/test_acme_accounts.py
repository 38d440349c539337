"""ACME accounts over HTTP through the ASGI app (RFC 8555 §7.1-§7.3), and enabling ACME over GraphQL."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import Cast, GraphQL, GraphQLError, OrgAdmin, create_profile_rows
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from core import acme_account
from core import application as application_service
from core.acme_account import acme_url
from core.authz import Actor
from models import AcmeAccount, AcmeNonce, Application, ApplicationProfile, AuditEvent
from pki.acme import jws
from pki.acme.problem import AcmeProblem

JOSE = {"Content-Type": "application/jose+json"}
PROBLEM = "application/problem+json"

Key = Any


def _key(alg: str = "ES256") -> Key:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Directory:
    """An ACME directory of a fresh attachment, and a tiny client for it."""

    http: httpx.AsyncClient
    attachment: ApplicationProfile
    kid: str
    hmac_key: bytes

    def url(self, path: str) -> str:
        return acme_url(self.attachment, path)

    async def nonce(self) -> str:
        response = await self.http.head(self.url("new-nonce"))
        return response.headers["Replay-Nonce"]

    async def post(
        self,
        path: str,
        payload: dict[str, Any] | None,
        *,
        key: Key,
        kid: str | None = None,
        nonce: str | None = None,
        url: str | None = None,
    ) -> httpx.Response:
        body = jws.sign(key, payload, url=url or self.url(path), nonce=nonce or await self.nonce(), kid=kid)
        return await self.http.post(self.url(path), content=json.dumps(body), headers=JOSE)

    def eab(self, key: Key, *, kid: str | None = None, hmac_key: bytes | None = None) -> dict[str, str]:
        return jws.sign_eab(
            kid=kid or self.kid,
            hmac_key=hmac_key or self.hmac_key,
            url=self.url("new-account"),
            account_key=key,
        )

    async def register(self, key: Key, **payload: Any) -> httpx.Response:
        body = {"termsOfServiceAgreed": True, "externalAccountBinding": self.eab(key), **payload}
        return await self.post("new-account", body, key=key)


async def _enabled_attachment(organization_id: uuid.UUID, application_id: uuid.UUID) -> ApplicationProfile:
    profile = await create_profile_rows(organization_id, name=f"acme-{uuid.uuid4().hex[:6]}")
    await ApplicationProfile.create(application_id=application_id, profile_id=profile.id)
    return await application_service.enable_acme(
        actor=Actor.system(organization_id), application_id=application_id, profile_id=profile.id
    )


async def _reload(attachment: ApplicationProfile) -> ApplicationProfile:
    return await acme_account.load_acme_attachment(str(attachment.application_id), str(attachment.profile_id))


def _hmac_key(attachment: ApplicationProfile, organization_id: uuid.UUID) -> bytes:
    text = application_service.acme_eab_hmac_key(
        actor=Actor.system(organization_id), attachment=attachment, organization_id=organization_id
    )
    assert text is not None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
async def directory(org_admin: OrgAdmin, client: httpx.AsyncClient) -> Directory:
    application = await Application.create(organization_id=org_admin.organization_id, name="shop")
    attachment = await _reload(await _enabled_attachment(org_admin.organization_id, application.id))
    assert attachment.acme_eab_kid is not None
    return Directory(
        client, attachment, attachment.acme_eab_kid, _hmac_key(attachment, org_admin.organization_id)
    )


def _problem(response: httpx.Response, kind: str, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:ietf:params:acme:error:{kind}", body
    assert body["status"] == status
    assert response.headers.get("Replay-Nonce")
    return body


# Directory and nonces ----------------------------------------------------------------------------------


async def test_directory(directory: Directory) -> None:
    response = await directory.http.get(directory.url("directory"))
    assert response.status_code == 200
    body = response.json()
    for name, path in [
        ("newNonce", "new-nonce"),
        ("newAccount", "new-account"),
        ("newOrder", "new-order"),
        ("revokeCert", "revoke-cert"),
        ("keyChange", "key-change"),
    ]:
        assert body[name] == directory.url(path)
    assert body["meta"]["externalAccountRequired"] is True
    assert response.headers["Replay-Nonce"]
    assert response.headers["Link"] == f'<{directory.url("directory")}>;rel="index"'


async def test_directory_says_when_eab_is_optional(directory: Directory, org_admin: OrgAdmin) -> None:
    await application_service.enable_acme(
        actor=Actor.system(org_admin.organization_id),
        application_id=directory.attachment.application_id,
        profile_id=directory.attachment.profile_id,
        eab_required=False,
    )
    body = (await directory.http.get(directory.url("directory"))).json()
    assert body["meta"]["externalAccountRequired"] is False


async def test_unknown_or_disabled_directory_is_404(directory: Directory, org_admin: OrgAdmin) -> None:
    base = directory.url("directory")
    for url in (
        base.replace(str(directory.attachment.profile_id), str(uuid.uuid4())),
        base.replace(str(directory.attachment.profile_id), "not-a-uuid"),
    ):
        _problem(await directory.http.get(url), "malformed", 404)
    await application_service.disable_acme(
        actor=Actor.system(org_admin.organization_id),
        application_id=directory.attachment.application_id,
        profile_id=directory.attachment.profile_id,
    )
    _problem(await directory.http.get(base), "malformed", 404)
    _problem(
        await directory.http.post(directory.url("new-account"), content=b"{}", headers=JOSE), "malformed", 404
    )


async def test_new_nonce(directory: Directory) -> None:
    head = await directory.http.head(directory.url("new-nonce"))
    get = await directory.http.get(directory.url("new-nonce"))
    assert head.status_code == 200 and get.status_code == 204
    for response in (head, get):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Link"] == f'<{directory.url("directory")}>;rel="index"'
    assert head.headers["Replay-Nonce"] != get.headers["Replay-Nonce"]
    # Stored where every process finds it (the table, or a SQLite file's ledger), usable once.
    await acme_account.consume_nonce(head.headers["Replay-Nonce"])
    with pytest.raises(AcmeProblem, match="already used"):
        await acme_account.consume_nonce(head.headers["Replay-Nonce"])


# newAccount --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "EdDSA"])
async def test_new_account_with_each_algorithm(directory: Directory, alg: str) -> None:
    key = _key(alg)
    response = await directory.register(key, contact=["mailto:ops@shop.test"])
    assert response.status_code == 201, response.text
    location = response.headers["Location"]
    account = await AcmeAccount.get(key_thumbprint=jws.thumbprint(jws.public_key_to_jwk(key)))
    assert location == directory.url(f"account/{account.id}")
    body = response.json()
    assert body["status"] == "valid"
    assert body["contact"] == ["mailto:ops@shop.test"]
    assert body["orders"] == directory.url(f"account/{account.id}/orders")
    assert account.eab_kid == directory.kid
    assert response.headers["Replay-Nonce"]
    entry = await AuditEvent.get(action="acme_account.create", resource_id=str(account.id))
    assert entry.actor_name == f"acme:{account.id}"
    assert entry.application_id == directory.attachment.application_id
    assert directory.hmac_key.hex() not in json.dumps(entry.details)

    # The same key again: the same account, 200, no EAB needed.
    again = await directory.post("new-account", {"termsOfServiceAgreed": True}, key=key)
    assert again.status_code == 200, again.text
    assert again.headers["Location"] == location
    assert await AcmeAccount.filter(attachment_id=directory.attachment.id).count() == 1

    # POST-as-GET of the account with its kid.
    fetched = await directory.post(f"account/{account.id}", None, key=key, kid=location)
    assert fetched.status_code == 200 and fetched.json()["status"] == "valid"


async def test_eab_is_required(directory: Directory) -> None:
    key = _key()
    _problem(
        await directory.post("new-account", {"termsOfServiceAgreed": True}, key=key),
        "externalAccountRequired",
    )
    wrong_mac = {"externalAccountBinding": directory.eab(key, hmac_key=b"w" * 32)}
    _problem(await directory.post("new-account", wrong_mac, key=key), "unauthorized")
    wrong_kid = {"externalAccountBinding": directory.eab(key, kid="kw-unknown")}
    _problem(await directory.post("new-account", wrong_kid, key=key), "unauthorized")
    other_key = {"externalAccountBinding": directory.eab(_key())}
    _problem(await directory.post("new-account", other_key, key=key), "unauthorized")
    assert await AcmeAccount.all().count() == 0
    assert not await AuditEvent.filter(action="acme_account.create").exists()


async def test_eab_optional_when_not_required(directory: Directory, org_admin: OrgAdmin) -> None:
    await application_service.enable_acme(
        actor=Actor.system(org_admin.organization_id),
        application_id=directory.attachment.application_id,
        profile_id=directory.attachment.profile_id,
        eab_required=False,
    )
    directory.attachment = await _reload(directory.attachment)
    plain = await directory.post("new-account", {"termsOfServiceAgreed": True}, key=_key())
    assert plain.status_code == 201, plain.text
    # A binding that is sent is still checked.
    key = _key()
    _problem(
        await directory.post(
            "new-account", {"externalAccountBinding": directory.eab(key, hmac_key=b"w" * 32)}, key=key
        ),
        "unauthorized",
    )


async def test_only_return_existing_needs_no_eab(directory: Directory) -> None:
    """cert-manager looks accounts up this way without sending EAB (PITFALLS)."""
    key = _key()
    lookup = {"onlyReturnExisting": True}
    _problem(await directory.post("new-account", lookup, key=key), "accountDoesNotExist")
    assert await AcmeAccount.all().count() == 0
    created = await directory.register(key)
    assert created.status_code == 201
    found = await directory.post("new-account", lookup, key=key)
    assert found.status_code == 200, found.text
    assert found.headers["Location"] == created.headers["Location"]


async def test_contact_validation(directory: Directory) -> None:
    for contact, kind in [
        (["tel:+1555"], "unsupportedContact"),
        (["mailto:not an address"], "invalidContact"),
        (["mailto:a@example.com?subject=x"], "invalidContact"),
        (["mailto:a@example.com,b@example.com"], "invalidContact"),
        ("mailto:a@example.com", "malformed"),
    ]:
        _problem(await directory.register(_key(), contact=contact), kind)
    assert await AcmeAccount.all().count() == 0


async def test_new_account_must_use_jwk(directory: Directory) -> None:
    key = _key()
    location = (await directory.register(key)).headers["Location"]
    _problem(await directory.post("new-account", {}, key=key, kid=location), "malformed")


# Request verification ----------------------------------------------------------------------------------


async def test_replayed_nonce_gets_bad_nonce_and_a_fresh_one(directory: Directory) -> None:
    key = _key()
    location = (await directory.register(key)).headers["Location"]
    account_path = location.rsplit("/", 2)[-2] + "/" + location.rsplit("/", 1)[-1]
    nonce = await directory.nonce()
    first = await directory.post(account_path, None, key=key, kid=location, nonce=nonce)
    assert first.status_code == 200
    replay = await directory.post(account_path, None, key=key, kid=location, nonce=nonce)
    _problem(replay, "badNonce")
    fresh = replay.headers["Replay-Nonce"]
    assert fresh != nonce
    retried = await directory.post(account_path, None, key=key, kid=location, nonce=fresh)
    assert retried.status_code == 200
    _problem(await directory.post(account_path, None, key=key, kid=location, nonce="made-up"), "badNonce")


async def test_wrong_url_header_is_unauthorized(directory: Directory) -> None:
    key = _key()
    response = await directory.post(
        "new-account", {"externalAccountBinding": directory.eab(key)}, key=key, url=directory.url("new-order")
    )
    _problem(response, "unauthorized")
    assert await AcmeAccount.all().count() == 0


async def test_unknown_kid_is_account_does_not_exist(directory: Directory) -> None:
    key = _key()
    ghost = directory.url(f"account/{uuid.uuid4()}")
    _problem(
        await directory.post(f"account/{ghost.rsplit('/', 1)[1]}", None, key=key, kid=ghost),
        "accountDoesNotExist",
    )
    _problem(
        await directory.post("new-order", {"identifiers": []}, key=key, kid="not-a-url"),
        "accountDoesNotExist",
    )


async def test_account_of_another_directory_is_unknown(directory: Directory, org_admin: OrgAdmin) -> None:
    key = _key()
    location = (await directory.register(key)).headers["Location"]
    other = Directory(
        directory.http,
        await _reload(
            await _enabled_attachment(org_admin.organization_id, directory.attachment.application_id)
        ),
        "",
        b"",
    )
    account_id = location.rsplit("/", 1)[1]
    foreign_kid = other.url(f"account/{account_id}")
    _problem(await other.post(f"account/{account_id}", None, key=key, kid=foreign_kid), "accountDoesNotExist")


async def test_tampered_signature_over_http(directory: Directory) -> None:
    key = _key()
    body = jws.sign(
        key,
        {"externalAccountBinding": directory.eab(key)},
        url=directory.url("new-account"),
        nonce=await directory.nonce(),
    )
    body["payload"] = jws.b64u_encode(json.dumps({"termsOfServiceAgreed": True}).encode())
    response = await directory.http.post(directory.url("new-account"), content=json.dumps(body), headers=JOSE)
    _problem(response, "malformed")
    assert await AcmeAccount.all().count() == 0


async def test_unsupported_algorithm_over_http(directory: Directory) -> None:
    key = _key()
    protected = {
        "alg": "HS256",
        "nonce": await directory.nonce(),
        "url": directory.url("new-account"),
        "jwk": jws.public_key_to_jwk(key),
    }
    body = {"protected": jws.b64u_encode(json.dumps(protected).encode()), "payload": "", "signature": "AAAA"}
    response = await directory.http.post(directory.url("new-account"), content=json.dumps(body), headers=JOSE)
    assert _problem(response, "badSignatureAlgorithm")["algorithms"] == list(jws.SIGNATURE_ALGORITHMS)


async def test_body_limits_and_content_type(directory: Directory) -> None:
    huge = b"{" + b" " * (70 * 1024) + b"}"
    _problem(
        await directory.http.post(directory.url("new-account"), content=huge, headers=JOSE), "malformed", 413
    )
    key = _key()
    body = jws.sign(key, {}, url=directory.url("new-account"), nonce=await directory.nonce())
    response = await directory.http.post(directory.url("new-account"), json=body)
    _problem(response, "malformed", 415)
    _problem(
        await directory.http.post(directory.url("new-account"), content=b"{nope", headers=JOSE), "malformed"
    )
    # The server keeps serving.
    assert (await directory.register(key)).status_code == 201


async def test_unexpected_failure_is_server_internal(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(attachment: ApplicationProfile) -> dict[str, Any]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(acme_account, "directory", explode)
    body = _problem(await directory.http.get(directory.url("directory")), "serverInternal", 500)
    assert "secret internals" not in json.dumps(body)


# Account update, deactivation, key change --------------------------------------------------------------


async def _account(directory: Directory, key: Key) -> tuple[str, str]:
    response = await directory.register(key)
    assert response.status_code == 201, response.text
    location = response.headers["Location"]
    return location, "account/" + location.rsplit("/", 1)[1]


async def test_contact_update(directory: Directory) -> None:
    key = _key()
    location, path = await _account(directory, key)
    response = await directory.post(path, {"contact": ["mailto:new@shop.test"]}, key=key, kid=location)
    assert response.status_code == 200 and response.json()["contact"] == ["mailto:new@shop.test"]
    assert (await AcmeAccount.get(id=path.split("/")[1])).contact == ["mailto:new@shop.test"]
    _problem(await directory.post(path, {"contact": ["ftp:x"]}, key=key, kid=location), "unsupportedContact")
    _problem(await directory.post(path, {"status": "revoked"}, key=key, kid=location), "malformed")


async def test_other_accounts_url_is_unauthorized(directory: Directory) -> None:
    key, other = _key(), _key()
    location, _ = await _account(directory, key)
    _, other_path = await _account(directory, other)
    _problem(await directory.post(other_path, None, key=key, kid=location), "unauthorized")
    _problem(
        await directory.post(other_path, {"status": "deactivated"}, key=key, kid=location), "unauthorized"
    )
    assert (await AcmeAccount.get(id=other_path.split("/")[1])).status == "valid"


async def test_deactivate(directory: Directory) -> None:
    key = _key()
    location, path = await _account(directory, key)
    response = await directory.post(path, {"status": "deactivated"}, key=key, kid=location)
    assert response.status_code == 200 and response.json()["status"] == "deactivated"
    entry = await AuditEvent.get(action="acme_account.deactivate")
    assert entry.resource_id == path.split("/")[1]
    _problem(await directory.post(path, None, key=key, kid=location), "unauthorized")
    _problem(await directory.post("new-order", {"identifiers": []}, key=key, kid=location), "unauthorized")
    _problem(await directory.post("new-account", {"onlyReturnExisting": True}, key=key), "unauthorized")


async def test_account_orders_list(directory: Directory) -> None:
    key = _key()
    location, path = await _account(directory, key)
    response = await directory.post(f"{path}/orders", None, key=key, kid=location)
    assert response.status_code == 200 and response.json() == {"orders": []}


def _key_change(
    directory: Directory, *, account_url: str, old: Key, new: Key, url: str | None = None, **extra: Any
) -> dict[str, str]:
    payload = {"account": account_url, "oldKey": jws.public_key_to_jwk(old), **extra}
    return jws.sign(new, payload, url=url or directory.url("key-change"))


@pytest.mark.parametrize("new_alg", ["RS256", "EdDSA"])
async def test_key_change(directory: Directory, new_alg: str) -> None:
    old, new = _key(), _key(new_alg)
    location, path = await _account(directory, old)
    inner = _key_change(directory, account_url=location, old=old, new=new)
    response = await directory.post("key-change", inner, key=old, kid=location)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["Location"] == location
    account = await AcmeAccount.get(id=path.split("/")[1])
    assert account.key_thumbprint == jws.thumbprint(jws.public_key_to_jwk(new))
    assert await AuditEvent.filter(action="acme_account.key_change", resource_id=str(account.id)).exists()
    # The old key no longer signs for the account; the new one does.
    stale = await directory.post(path, None, key=old, kid=location)
    assert stale.status_code == 400 and stale.json()["type"] in (
        "urn:ietf:params:acme:error:malformed",  # same alg, other key
        "urn:ietf:params:acme:error:badSignatureAlgorithm",  # the new key takes another alg
    )
    assert (await directory.post(path, None, key=new, kid=location)).status_code == 200
    lookup = await directory.post("new-account", {"onlyReturnExisting": True}, key=new)
    assert lookup.status_code == 200 and lookup.headers["Location"] == location


async def test_key_change_refusals(directory: Directory) -> None:
    old, new, stranger = _key(), _key(), _key()
    location, path = await _account(directory, old)
    other_location, _ = await _account(directory, stranger)
    cases = [
        # oldKey is not the account's key
        (_key_change(directory, account_url=location, old=stranger, new=new), "unauthorized", 400),
        # account names another account
        (_key_change(directory, account_url=other_location, old=old, new=new), "unauthorized", 400),
        # inner url differs from the outer one
        (
            _key_change(directory, account_url=location, old=old, new=new, url=directory.url("new-order")),
            "malformed",
            400,
        ),
        # the new key already belongs to another account
        (_key_change(directory, account_url=location, old=old, new=stranger), "malformed", 409),
        # the new key is the current key
        (_key_change(directory, account_url=location, old=old, new=old), "malformed", 400),
    ]
    for inner, kind, status in cases:
        response = await directory.post("key-change", inner, key=old, kid=location)  # type: ignore[arg-type]
        _problem(response, kind, status)
        if status == 409:
            assert response.headers["Location"] == other_location
    # An inner JWS whose signature is not by the key it names.
    forged = _key_change(directory, account_url=location, old=old, new=new)
    forged["signature"] = _key_change(directory, account_url=location, old=old, new=_key())["signature"]
    _problem(await directory.post("key-change", forged, key=old, kid=location), "malformed")  # type: ignore[arg-type]
    # Signed with a jwk instead of the account's kid.
    _problem(
        await directory.post(
            "key-change", _key_change(directory, account_url=location, old=old, new=new), key=old
        ),
        "malformed",
    )  # type: ignore[arg-type]
    account = await AcmeAccount.get(id=path.split("/")[1])
    assert account.key_thumbprint == jws.thumbprint(jws.public_key_to_jwk(old))
    assert not await AuditEvent.filter(action="acme_account.key_change").exists()


# EAB rotation ------------------------------------------------------------------------------------------


async def test_rotated_eab_stops_the_old_key_at_once(directory: Directory, org_admin: OrgAdmin) -> None:
    kept = _key()
    kept_location, kept_path = await _account(directory, kept)
    rotated = await application_service.rotate_acme_eab(
        actor=Actor.system(org_admin.organization_id),
        application_id=directory.attachment.application_id,
        profile_id=directory.attachment.profile_id,
    )
    assert rotated.acme_eab_kid != directory.kid
    _problem(await directory.register(_key()), "unauthorized")
    directory.kid, directory.hmac_key = (
        str(rotated.acme_eab_kid),
        _hmac_key(rotated, org_admin.organization_id),
    )
    directory.attachment = await _reload(directory.attachment)
    assert (await directory.register(_key())).status_code == 201
    # Accounts bound with the old key stay valid.
    assert (await directory.post(kept_path, None, key=kept, kid=kept_location)).status_code == 200


# GraphQL -----------------------------------------------------------------------------------------------

ACME_FIELDS = "enabled eabRequired directoryUrl eabKid eabHmacKey"


async def _cast_attachment(cast: Cast) -> ApplicationProfile:
    profile = await create_profile_rows(cast.organization_id, name="acme-tls")
    return await ApplicationProfile.create(application_id=cast.application_id, profile_id=profile.id)


async def test_enable_rotate_disable_over_graphql(
    gql: GraphQL, cast: Cast, client: httpx.AsyncClient
) -> None:
    attachment = await _cast_attachment(cast)
    ids = {"applicationId": str(cast.application_id), "profileId": str(attachment.profile_id)}
    enabled = (
        await gql(
            "mutation($input: EnableAcmeInput!) { enableAcme(input: $input) "
            f"{{ id acme {{ {ACME_FIELDS} }} }} }}",
            {"input": ids},
            token=cast.token("app_admin"),
        )
    )["enableAcme"]["acme"]
    assert enabled["enabled"] is True and enabled["eabRequired"] is True
    assert enabled["directoryUrl"] == acme_url(attachment, "directory")
    assert enabled["eabKid"] and len(base64.urlsafe_b64decode(enabled["eabHmacKey"] + "=")) == 32
    assert (await client.get(enabled["directoryUrl"])).status_code == 200

    # Enabling again keeps the credentials.
    again = (
        await gql(
            "mutation($input: EnableAcmeInput!) { enableAcme(input: $input) { acme { eabKid eabHmacKey } } }",
            {"input": ids},
            token=cast.token("product_admin"),
        )
    )["enableAcme"]["acme"]
    assert again == {"eabKid": enabled["eabKid"], "eabHmacKey": enabled["eabHmacKey"]}

    # Operators and auditors see the settings, never the key id or the key.
    for role in ("app_operator", "app_auditor"):
        query = (
            "query($id: ID!) { application(id: $id) "
            "{ profiles { acme { enabled eabRequired directoryUrl } } } }"
        )
        data = await gql(query, {"id": str(cast.application_id)}, token=cast.token(role))
        assert data["application"]["profiles"][0]["acme"]["enabled"] is True
        for secret in ("eabHmacKey", "eabKid"):
            with pytest.raises(GraphQLError) as excinfo:
                await gql(
                    f"query($id: ID!) {{ application(id: $id) {{ profiles {{ acme {{ {secret} }} }} }} }}",
                    {"id": str(cast.application_id)},
                    token=cast.token(role),
                )
            assert excinfo.value.codes == ["FORBIDDEN"]
        with pytest.raises(GraphQLError) as excinfo:
            await gql(
                "mutation($a: ID!, $p: ID!) { rotateAcmeEab(applicationId: $a, profileId: $p) { id } }",
                {"a": ids["applicationId"], "p": ids["profileId"]},
                token=cast.token(role),
            )
        assert excinfo.value.codes == ["FORBIDDEN"]

    rotated = (
        await gql(
            "mutation($a: ID!, $p: ID!) { rotateAcmeEab(applicationId: $a, profileId: $p) "
            "{ acme { eabKid eabHmacKey } } }",
            {"a": ids["applicationId"], "p": ids["profileId"]},
            token=cast.token("app_admin"),
        )
    )["rotateAcmeEab"]["acme"]
    assert rotated["eabKid"] != enabled["eabKid"] and rotated["eabHmacKey"] != enabled["eabHmacKey"]

    optional = (
        await gql(
            "mutation($input: EnableAcmeInput!) { enableAcme(input: $input) "
            "{ acme { eabRequired eabKid } } }",
            {"input": {**ids, "eabRequired": False}},
            token=cast.token("app_admin"),
        )
    )["enableAcme"]["acme"]
    assert optional == {"eabRequired": False, "eabKid": rotated["eabKid"]}

    disabled = (
        await gql(
            "mutation($a: ID!, $p: ID!) { disableAcme(applicationId: $a, profileId: $p) "
            "{ acme { enabled } } }",
            {"a": ids["applicationId"], "p": ids["profileId"]},
            token=cast.token("app_admin"),
        )
    )["disableAcme"]["acme"]
    assert disabled == {"enabled": False}
    assert (await client.get(enabled["directoryUrl"])).status_code == 404

    actions = (
        await AuditEvent.filter(resource_id=str(attachment.id))
        .order_by("id")
        .values_list("action", "details")
    )
    assert [action for action, _ in actions] == [
        "application_profile.acme_enable",
        "application_profile.acme_rotate_eab",
        "application_profile.acme_enable",
        "application_profile.acme_disable",
    ]
    logged = json.dumps([details for _, details in actions])
    for secret in (enabled["eabHmacKey"], rotated["eabHmacKey"], enabled["eabKid"], rotated["eabKid"]):
        assert secret not in logged


async def test_expired_nonce_is_refused(directory: Directory, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _key()
    with monkeypatch.context() as patch:
        patch.setattr(acme_account, "NONCE_TTL", timedelta(seconds=-1))
        nonce = await directory.nonce()  # expired as it was made
    expired = await directory.post(
        "new-account", {"externalAccountBinding": directory.eab(key)}, key=key, nonce=nonce
    )
    _problem(expired, "badNonce")
    assert await AcmeAccount.all().count() == 0


async def test_expired_nonces_are_purged_from_the_table(directory: Directory) -> None:
    """The table keeps PostgreSQL's nonces (a SQLite file's ledger reuses its slots instead)."""
    now = datetime.now(UTC)
    live = (await AcmeNonce.create(value="live-nonce", expires_at=now + timedelta(hours=1))).value
    stale = (await AcmeNonce.create(value="stale-nonce", expires_at=now - timedelta(seconds=1))).value
    assert await acme_account.purge_expired_nonces() >= 1
    assert not await AcmeNonce.filter(value=stale).exists()
    assert await AcmeNonce.filter(value=live).exists()
