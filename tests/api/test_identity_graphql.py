"""Users, machine identities, product roles, tokens, login and logout over GraphQL."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Cast, GraphQL, GraphQLError, OrgAdmin

from models import ApiToken, AuditEvent, Principal, ProductMembership

CREATE_USER = """mutation($input: CreateUserInput!) {
  createUser(input: $input) { id kind name email isActive productRole } }"""
CREATE_TOKEN = """mutation($input: CreateApiTokenInput!) {
  createApiToken(input: $input) { token apiToken { id name prefix kind expiresAt revokedAt } } }"""
REVOKE = "mutation($id: ID!) { revokeApiToken(id: $id) { id revokedAt } }"
SET_ROLE = """mutation($id: ID!, $role: ProductRole!) {
  setProductRole(principalId: $id, role: $role) { productRole } }"""
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token expiresAt } }"
VIEWER = "{ viewer { id kind name productRole } }"
PASSWORD = "correct horse battery"


async def codes_of(call: Any) -> list[str]:
    with pytest.raises(GraphQLError) as caught:
        await call
    return caught.value.codes


async def create_user(
    gql: GraphQL, token: str, email: str, role: str = "MEMBER", **extra: Any
) -> dict[str, Any]:
    data = await gql(
        CREATE_USER, {"input": {"email": email, "name": "Ann", "productRole": role, **extra}}, token=token
    )
    return dict(data["createUser"])


async def create_token(gql: GraphQL, token: str | None, **input: Any) -> dict[str, Any]:
    data = await gql(CREATE_TOKEN, {"input": {"name": "ci", **input}}, token=token)
    return dict(data["createApiToken"])


async def test_create_user_then_log_in(gql: GraphQL, org_admin: OrgAdmin) -> None:
    user = await create_user(gql, org_admin.token, "  Ann@Example.TEST ", password=PASSWORD)
    assert user == {
        "id": user["id"],
        "kind": "USER",
        "name": "Ann",
        "email": "ann@example.test",
        "isActive": True,
        "productRole": "MEMBER",
    }
    stored = await Principal.get(id=user["id"])
    assert stored.password_hash is not None and stored.password_hash.startswith("$argon2")
    session = (await gql(LOGIN, {"e": "ANN@example.test", "p": PASSWORD}, token=None))["login"]
    viewer = (await gql(VIEWER, token=session["token"]))["viewer"]
    assert viewer == {"id": user["id"], "kind": "user", "name": "ann@example.test", "productRole": "member"}
    event = await AuditEvent.get(action="user.create")
    assert PASSWORD not in str(event.details) and event.details["email"] == "ann@example.test"
    assert await codes_of(gql(LOGIN, {"e": "ann@example.test", "p": "wrong password!"}, token=None)) == [
        "UNAUTHENTICATED"
    ]


async def test_create_user_rejects_bad_input(gql: GraphQL, org_admin: OrgAdmin) -> None:
    await create_user(gql, org_admin.token, "ann@example.test")
    assert await codes_of(create_user(gql, org_admin.token, "ANN@example.test")) == ["CONFLICT"]
    assert await codes_of(create_user(gql, org_admin.token, "admin@acme.test")) == ["CONFLICT"]
    assert await codes_of(create_user(gql, org_admin.token, "not-an-email")) == ["INVALID_INPUT"]
    assert await codes_of(create_user(gql, org_admin.token, "bob@example.test", password="short")) == [
        "INVALID_INPUT"
    ]
    blank = {"input": {"email": "c@example.test", "name": "  ", "productRole": "MEMBER"}}
    assert await codes_of(gql(CREATE_USER, blank, token=org_admin.token)) == ["INVALID_INPUT"]
    assert await Principal.all().count() == 2  # the admin and ann: nothing half-written
    assert await ProductMembership.all().count() == 2


async def test_members_list_names_admins_also_see_roles(gql: GraphQL, cast: Cast) -> None:
    query = "{ users { name email kind isActive } machineIdentities { name } }"
    data = await gql(query, token=cast.token("outsider"))
    assert [u["email"] for u in data["users"]] == sorted(
        [
            "admin@acme.test",
            "app_admin@acme.test",
            "app_auditor@acme.test",
            "app_operator@acme.test",
            "outsider@acme.test",
        ]
    )
    assert data["machineIdentities"] == []
    assert await codes_of(gql("{ users { productRole } }", token=cast.token("outsider"))) == ["FORBIDDEN"] * 5
    roles = await gql("{ users { email productRole } }", token=cast.token("product_admin"))
    assert {u["email"]: u["productRole"] for u in roles["users"]}["admin@acme.test"] == "ADMIN"
    foreign = await gql("{ users { email } organization { name } }", token=cast.token("foreign"))
    assert foreign == {"users": [{"email": "admin@globex.test"}], "organization": {"name": "globex"}}


async def test_machine_identity_with_token(gql: GraphQL, org_admin: OrgAdmin) -> None:
    create = """mutation { createMachineIdentity(input: {name: "deployer", productRole: MEMBER}) {
      id kind email productRole } }"""
    machine = (await gql(create, token=org_admin.token))["createMachineIdentity"]
    assert (machine["kind"], machine["email"], machine["productRole"]) == ("MACHINE", None, "MEMBER")
    created = await create_token(gql, org_admin.token, principalId=machine["id"], expiresInDays=30)
    plaintext = created["token"]
    assert plaintext.startswith("kw_") and created["apiToken"]["prefix"] == plaintext[:10]
    assert created["apiToken"]["kind"] == "API"
    expires = datetime.fromisoformat(created["apiToken"]["expiresAt"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    viewer = (await gql(VIEWER, token=plaintext))["viewer"]
    assert (viewer["id"], viewer["kind"], viewer["name"]) == (machine["id"], "machine", "deployer")
    # Only the hash is stored: no column holds the plaintext.
    row = await ApiToken.get(id=created["apiToken"]["id"])
    assert row.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in str(await ApiToken.filter(id=row.id).values())
    assert plaintext not in str([e.details for e in await AuditEvent.all()])
    listed = (await gql("{ machineIdentities { name } }", token=org_admin.token))["machineIdentities"]
    assert listed == [{"name": "deployer"}]


async def test_viewer_lists_own_tokens_only(gql: GraphQL, cast: Cast) -> None:
    mine = await create_token(gql, cast.token("app_operator"), name="laptop")
    await create_token(gql, cast.token("app_admin"), name="other")
    query = "{ viewer { tokens { id name prefix kind createdAt expiresAt revokedAt lastUsedAt } } }"
    tokens = (await gql(query, token=cast.token("app_operator")))["viewer"]["tokens"]
    assert [t["name"] for t in tokens] == ["laptop", "test"]  # newest first
    assert tokens[0]["id"] == mine["apiToken"]["id"] and tokens[0]["expiresAt"] is None
    # The fixture's token was used for this very request.
    assert tokens[1]["lastUsedAt"] is not None and tokens[0]["lastUsedAt"] is None
    with pytest.raises(GraphQLError) as caught:
        await gql("{ viewer { tokens { tokenHash } } }", token=cast.token("app_operator"))
    assert "Cannot query field 'tokenHash'" in caught.value.errors[0]["message"]


async def test_token_input_is_checked(gql: GraphQL, cast: Cast) -> None:
    member = cast.token("outsider")
    for days in (0, -1, 3651):
        assert await codes_of(create_token(gql, member, expiresInDays=days)) == ["INVALID_INPUT"]
    assert await codes_of(create_token(gql, member, name=" ")) == ["INVALID_INPUT"]
    other = str(cast.principal_ids["app_admin"])
    assert await codes_of(create_token(gql, member, principalId=other)) == ["FORBIDDEN"]
    assert await codes_of(create_token(gql, cast.token("foreign"), principalId=other)) == ["NOT_FOUND"]
    assert await codes_of(create_token(gql, cast.token("product_admin"), principalId="bad")) == ["NOT_FOUND"]
    # The caller's own id counts as "self", not as someone else.
    own = str(cast.principal_ids["outsider"])
    assert (await create_token(gql, member, principalId=own))["token"].startswith("kw_")


async def test_revoked_and_expired_tokens_stop_working(gql: GraphQL, cast: Cast) -> None:
    created = await create_token(gql, cast.token("outsider"))
    token, token_id = created["token"], created["apiToken"]["id"]
    assert (await gql(VIEWER, token=token))["viewer"]["kind"] == "user"
    # Someone else's token does not exist for a product member; it does for a Product Admin.
    assert await codes_of(gql(REVOKE, {"id": token_id}, token=cast.token("app_admin"))) == ["NOT_FOUND"]
    revoked = (await gql(REVOKE, {"id": token_id}, token=token))["revokeApiToken"]
    assert revoked["revokedAt"] is not None
    assert await codes_of(gql(VIEWER, token=token)) == ["UNAUTHENTICATED"]
    assert await codes_of(gql(REVOKE, {"id": token_id}, token=cast.token("product_admin"))) == [
        "INVALID_STATE"
    ]

    second = await create_token(gql, cast.token("outsider"))
    await gql(REVOKE, {"id": second["apiToken"]["id"]}, token=cast.token("product_admin"))
    assert await codes_of(gql(VIEWER, token=second["token"])) == ["UNAUTHENTICATED"]

    third = await create_token(gql, cast.token("outsider"), expiresInDays=1)
    await ApiToken.filter(id=third["apiToken"]["id"]).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert await codes_of(gql(VIEWER, token=third["token"])) == ["UNAUTHENTICATED"]
    actions = [e.action for e in await AuditEvent.filter(action__startswith="api_token.").order_by("id")]
    assert actions == [
        "api_token.create",
        "api_token.revoke",
        "api_token.create",
        "api_token.revoke",
        "api_token.create",
    ]


async def test_logout_revokes_the_session_only(gql: GraphQL, org_admin: OrgAdmin) -> None:
    await create_user(gql, org_admin.token, "ann@example.test", password=PASSWORD)
    first = (await gql(LOGIN, {"e": "ann@example.test", "p": PASSWORD}, token=None))["login"]["token"]
    second = (await gql(LOGIN, {"e": "ann@example.test", "p": PASSWORD}, token=None))["login"]["token"]
    assert (await gql("mutation { logout }", token=first)) == {"logout": True}
    assert await codes_of(gql(VIEWER, token=first)) == ["UNAUTHENTICATED"]
    assert (await gql(VIEWER, token=second))["viewer"]["name"] == "ann@example.test"
    # An API token is not a session: logout refuses rather than silently revoking it.
    assert await codes_of(gql("mutation { logout }", token=org_admin.token)) == ["INVALID_STATE"]
    assert (await gql(VIEWER, token=org_admin.token))["viewer"]["kind"] == "user"
    assert await codes_of(gql("mutation { logout }", token=None)) == ["UNAUTHENTICATED"]


async def test_deactivation_stops_tokens_and_sessions(gql: GraphQL, org_admin: OrgAdmin) -> None:
    user = await create_user(gql, org_admin.token, "ann@example.test", password=PASSWORD)
    api = (await create_token(gql, org_admin.token, principalId=user["id"]))["token"]
    deactivate = "mutation($id: ID!) { deactivatePrincipal(id: $id) { isActive } }"
    reactivate = "mutation($id: ID!) { reactivatePrincipal(id: $id) { isActive } }"
    assert (await gql(deactivate, {"id": user["id"]}, token=org_admin.token))["deactivatePrincipal"] == {
        "isActive": False
    }
    assert await codes_of(gql(VIEWER, token=api)) == ["UNAUTHENTICATED"]
    assert await codes_of(gql(LOGIN, {"e": "ann@example.test", "p": PASSWORD}, token=None)) == [
        "UNAUTHENTICATED"
    ]
    assert await codes_of(gql(deactivate, {"id": user["id"]}, token=org_admin.token)) == ["INVALID_STATE"]
    assert await codes_of(create_token(gql, org_admin.token, principalId=user["id"])) == ["INVALID_STATE"]
    await gql(reactivate, {"id": user["id"]}, token=org_admin.token)
    assert (await gql(VIEWER, token=api))["viewer"]["id"] == user["id"]


async def test_the_last_product_admin_stays(gql: GraphQL, org_admin: OrgAdmin) -> None:
    admin_id = str(org_admin.principal_id)
    deactivate = "mutation($id: ID!) { deactivatePrincipal(id: $id) { isActive } }"
    with pytest.raises(GraphQLError) as caught:
        await gql(SET_ROLE, {"id": admin_id, "role": "MEMBER"}, token=org_admin.token)
    assert caught.value.codes == ["INVALID_STATE"]
    assert "last active Product Admin" in caught.value.errors[0]["message"]
    assert await codes_of(gql(deactivate, {"id": admin_id}, token=org_admin.token)) == ["INVALID_STATE"]

    # A second admin who is deactivated does not count.
    other = await create_user(gql, org_admin.token, "bob@example.test", role="ADMIN")
    await gql(deactivate, {"id": other["id"]}, token=org_admin.token)
    assert await codes_of(gql(SET_ROLE, {"id": admin_id, "role": "MEMBER"}, token=org_admin.token)) == [
        "INVALID_STATE"
    ]
    await gql(
        "mutation($id: ID!) { reactivatePrincipal(id: $id) { id } }",
        {"id": other["id"]},
        token=org_admin.token,
    )
    data = await gql(SET_ROLE, {"id": admin_id, "role": "MEMBER"}, token=org_admin.token)
    assert data == {"setProductRole": {"productRole": "MEMBER"}}
    # The demoted admin lost product management at once.
    assert await codes_of(create_user(gql, org_admin.token, "c@example.test")) == ["FORBIDDEN"]
    event = await AuditEvent.filter(action="product_membership.set_role").order_by("-id").first()
    assert event is not None and event.details == {"previous_role": "admin", "product_role": "member"}


async def test_promotion_grants_product_management(gql: GraphQL, cast: Cast) -> None:
    outsider = cast.token("outsider")
    assert outsider is not None
    assert await codes_of(create_user(gql, outsider, "c@example.test")) == ["FORBIDDEN"]
    await gql(
        SET_ROLE,
        {"id": str(cast.principal_ids["outsider"]), "role": "ADMIN"},
        token=cast.token("product_admin"),
    )
    await create_user(gql, outsider, "c@example.test")
    assert await codes_of(
        gql(SET_ROLE, {"id": str(uuid.uuid4()), "role": "ADMIN"}, token=cast.token("product_admin"))
    ) == ["NOT_FOUND"]
    assert await codes_of(
        gql(
            SET_ROLE,
            {"id": str(cast.principal_ids["app_admin"]), "role": "ADMIN"},
            token=cast.token("foreign"),
        )
    ) == ["NOT_FOUND"]
