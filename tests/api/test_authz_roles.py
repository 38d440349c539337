"""The authorization matrix (SPEC §2), identity and applications: every operation against every caller.

The rows follow authz_matrix_support (Operation, expect, APP_READ, ...); the shared PKI, certificates and
the audit log have theirs in test_authz_matrix_pki_certificates.py, which also checks that the two lists
together cover every mutation and every secret field of the live schema.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from authz_matrix_support import (
    ANY_PRINCIPAL,
    APP_ADMIN,
    APP_READ,
    FORBIDDEN,
    NOT_FOUND,
    OK,
    PRODUCT_ADMIN_CHANGES,
    PRODUCT_ADMIN_CREATES,
    Operation,
    check_rows,
    expect,
    run_cell,
)
from conftest import CAST_ROLES, Cast, GraphQL, create_principal_with_token, create_profile_rows

from core import authn
from models import ApiToken, ApplicationMembership, ApplicationProfile, Principal
from models.enums import ApplicationRole, TokenKind

# Variables -----------------------------------------------------------------------------------------------


async def the_application(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str(cast.application_id)}


async def fresh_user(cast: Cast, role: str) -> dict[str, Any]:
    principal_id, _ = await create_principal_with_token(
        cast.organization_id, f"target-{role}@acme.test", "member"
    )
    return {"id": str(principal_id)}


async def fresh_deactivated_user(cast: Cast, role: str) -> dict[str, Any]:
    variables = await fresh_user(cast, role)
    await Principal.filter(id=variables["id"]).update(is_active=False)
    return variables


async def own_token(cast: Cast, role: str) -> dict[str, Any]:
    principal_id = cast.principal_ids.get(role)
    if principal_id is None:
        return {"id": str(uuid.uuid4())}
    principal = await Principal.get(id=principal_id)
    _, token = await authn.create_token(principal=principal, kind=TokenKind.API, name="spare")
    return {"id": str(token.id)}


async def someone_elses_token(cast: Cast, role: str) -> dict[str, Any]:
    principal_id, _ = await create_principal_with_token(
        cast.organization_id, "robot", "member", kind="machine"
    )
    token = await ApiToken.get(principal_id=principal_id)
    return {"id": str(token.id)}


LOGIN_PASSWORD = "correct horse battery staple"


async def user_with_password(cast: Cast, role: str) -> dict[str, Any]:
    email = f"login-{role}@acme.test"
    principal_id, _ = await create_principal_with_token(cast.organization_id, email, "member")
    await Principal.filter(id=principal_id).update(password_hash=authn.hash_password(LOGIN_PASSWORD))
    return {"email": email, "password": LOGIN_PASSWORD}


async def own_session_token(cast: Cast, role: str) -> str | None:
    """logout ends a login session: the caller presents a session token, not their API token."""
    principal_id = cast.principal_ids.get(role)
    if principal_id is None:
        return None
    principal = await Principal.get(id=principal_id)
    token, _ = await authn.create_token(
        principal=principal, kind=TokenKind.SESSION, name="login", ttl=timedelta(hours=1)
    )
    return token


def check_login(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert data["login"]["token"].startswith(authn.TOKEN_PREFIX)


async def new_user_input(cast: Cast, role: str) -> dict[str, Any]:
    return {"input": {"email": f"new-{role}@example.test", "name": "New", "productRole": "MEMBER"}}


async def token_for_other(cast: Cast, role: str) -> dict[str, Any]:
    principal_id, _ = await create_principal_with_token(
        cast.organization_id, "robot", "member", kind="machine"
    )
    return {"input": {"principalId": str(principal_id), "name": "ci"}}


async def new_member(cast: Cast, role: str) -> dict[str, Any]:
    principal_id, _ = await create_principal_with_token(cast.organization_id, f"m-{role}@acme.test", "member")
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "principalId": str(principal_id),
            "role": "OPERATOR",
        }
    }


async def existing_member(cast: Cast, role: str) -> dict[str, Any]:
    variables = await new_member(cast, role)
    await ApplicationMembership.create(
        application_id=cast.application_id,
        principal_id=variables["input"]["principalId"],
        role=ApplicationRole.OPERATOR,
    )
    return variables


async def existing_member_ids(cast: Cast, role: str) -> dict[str, Any]:
    member = (await existing_member(cast, role))["input"]
    return {"a": member["applicationId"], "p": member["principalId"]}


async def unattached_profile(cast: Cast, role: str) -> dict[str, Any]:
    profile = await create_profile_rows(cast.organization_id, f"p-{role}".replace("_", "-"))
    return {"input": {"applicationId": str(cast.application_id), "profileId": str(profile.id)}}


async def attached_profile(cast: Cast, role: str) -> dict[str, Any]:
    variables = await unattached_profile(cast, role)
    await ApplicationProfile.create(
        application_id=cast.application_id, profile_id=variables["input"]["profileId"]
    )
    variables["input"]["api"] = {"autoRenew": True}
    return variables


async def attached_profile_ids(cast: Cast, role: str) -> dict[str, Any]:
    attached = (await attached_profile(cast, role))["input"]
    return {"a": attached["applicationId"], "p": attached["profileId"]}


# The matrix ------------------------------------------------------------------------------------------------

OPERATIONS: list[Operation] = [
    # Identity
    # Logging in is public: the credentials decide, whatever bearer token (if any) comes along.
    Operation(
        "login",
        "mutation($email: String!, $password: String!) { login(email: $email, password: $password) "
        "{ token expiresAt } }",
        expect(OK, foreign=OK, anonymous=OK),
        user_with_password,
        check=check_login,
    ),
    Operation("logout", "mutation { logout }", ANY_PRINCIPAL, token=own_session_token),
    Operation("viewer.tokens", "{ viewer { tokens { id prefix } } }", ANY_PRINCIPAL),
    Operation("organization", "{ organization { id name } }", ANY_PRINCIPAL),
    Operation("users", "{ users { id name email kind isActive } }", ANY_PRINCIPAL),
    Operation("users.productRole", "{ users { productRole } }", PRODUCT_ADMIN_CREATES),
    Operation("machineIdentities", "{ machineIdentities { id name } }", ANY_PRINCIPAL),
    Operation(
        "createUser",
        "mutation($input: CreateUserInput!) { createUser(input: $input) { id } }",
        PRODUCT_ADMIN_CREATES,
        new_user_input,
    ),
    Operation(
        "createMachineIdentity",
        'mutation { createMachineIdentity(input: {name: "robot", productRole: MEMBER}) { id } }',
        PRODUCT_ADMIN_CREATES,
    ),
    Operation(
        "setProductRole",
        "mutation($id: ID!) { setProductRole(principalId: $id, role: ADMIN) { id } }",
        PRODUCT_ADMIN_CHANGES,
        fresh_user,
    ),
    Operation(
        "deactivatePrincipal",
        "mutation($id: ID!) { deactivatePrincipal(id: $id) { id } }",
        PRODUCT_ADMIN_CHANGES,
        fresh_user,
    ),
    Operation(
        "reactivatePrincipal",
        "mutation($id: ID!) { reactivatePrincipal(id: $id) { id } }",
        PRODUCT_ADMIN_CHANGES,
        fresh_deactivated_user,
    ),
    Operation(
        "createApiToken.own",
        'mutation { createApiToken(input: {name: "mine"}) { token apiToken { id } } }',
        ANY_PRINCIPAL,
    ),
    Operation(
        "createApiToken.other",
        "mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) { token } }",
        PRODUCT_ADMIN_CHANGES,
        token_for_other,
    ),
    Operation(
        "revokeApiToken.own",
        "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
        ANY_PRINCIPAL,
        own_token,
    ),
    # Someone else's tokens are invisible to everyone but a Product Admin.
    Operation(
        "revokeApiToken.other",
        "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
        expect(NOT_FOUND),
        someone_elses_token,
    ),
    # Applications
    Operation("applications", "{ applications(first: 5) { edges { node { id } } } }", ANY_PRINCIPAL),
    Operation(
        "application", "query($id: ID!) { application(id: $id) { id name } }", APP_READ, the_application
    ),
    Operation(
        "application.members",
        "query($id: ID!) { application(id: $id) { members { role principal { name } } } }",
        APP_READ,
        the_application,
    ),
    Operation(
        "application.profiles",
        "query($id: ID!) { application(id: $id) { profiles { id api { enabled } } } }",
        APP_READ,
        the_application,
    ),
    Operation(
        "application.certificates",
        "query($id: ID!) { application(id: $id) { certificates(first: 5) { edges { cursor } } } }",
        APP_READ,
        the_application,
    ),
    Operation(
        "createApplication",
        'mutation { createApplication(input: {name: "new-app"}) { id } }',
        PRODUCT_ADMIN_CREATES,
    ),
    Operation(
        "updateApplication",
        'mutation($id: ID!) { updateApplication(id: $id, input: {description: "x"}) { id } }',
        APP_ADMIN,
        the_application,
    ),
    # The field itself requires application:delete, so product members learn FORBIDDEN whatever the id.
    Operation(
        "deleteApplication",
        "mutation($id: ID!) { deleteApplication(id: $id) }",
        expect(FORBIDDEN, foreign=NOT_FOUND),
        the_application,
    ),
    Operation(
        "addApplicationMember",
        "mutation($input: AddApplicationMemberInput!) { addApplicationMember(input: $input) { id } }",
        APP_ADMIN,
        new_member,
    ),
    Operation(
        "changeApplicationMemberRole",
        """mutation($input: ChangeApplicationMemberRoleInput!) {
          changeApplicationMemberRole(input: $input) { id } }""",
        APP_ADMIN,
        existing_member,
    ),
    Operation(
        "removeApplicationMember",
        "mutation($a: ID!, $p: ID!) { removeApplicationMember(applicationId: $a, principalId: $p) }",
        APP_ADMIN,
        existing_member_ids,
    ),
    Operation(
        "attachProfile",
        "mutation($input: AttachProfileInput!) { attachProfile(input: $input) { id } }",
        APP_ADMIN,
        unattached_profile,
    ),
    Operation(
        "updateAttachedProfile",
        "mutation($input: UpdateAttachedProfileInput!) { updateAttachedProfile(input: $input) { id } }",
        APP_ADMIN,
        attached_profile,
    ),
    Operation(
        "detachProfile",
        "mutation($a: ID!, $p: ID!) { detachProfile(applicationId: $a, profileId: $p) }",
        APP_ADMIN,
        attached_profile_ids,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in OPERATIONS for role in CAST_ROLES]


def test_every_row_names_every_role() -> None:
    check_rows(OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
