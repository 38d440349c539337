"""The authorization matrix (SPEC §2): every operation against every kind of caller, exact error code.

One row per operation: a GraphQL document, how to prepare its variables for a caller (fresh targets each
time, so one caller's success never changes another's outcome), and the expected code per cast role
(`OK` means no error). Add rows for new domains by appending to OPERATIONS; the role patterns below
(APP_READ, APP_ADMIN, ...) cover most of them. The cast is the `cast` fixture of tests/conftest.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import CAST_ROLES, Cast, GraphQL, create_principal_with_token, create_profile_rows

from core import authn
from models import ApiToken, ApplicationMembership, ApplicationProfile, Principal
from models.enums import ApplicationRole, TokenKind

OK = "OK"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
UNAUTHENTICATED = "UNAUTHENTICATED"

APP_ROLES = ("app_admin", "app_operator", "app_auditor")


def expect(default: str, **overrides: str) -> dict[str, str]:
    """`default` for every acme product member; the Product Admin OK; no token UNAUTHENTICATED."""
    codes = {role: default for role in CAST_ROLES}
    codes.update(product_admin=OK, anonymous=UNAUTHENTICATED)
    codes.update(overrides)
    return codes


def app_gate(*allowed: str) -> dict[str, str]:
    """An application resource: allowed app roles OK, other app roles FORBIDDEN, non-members NOT_FOUND."""
    codes = expect(NOT_FOUND)
    for role in APP_ROLES:
        codes[role] = OK if role in allowed else FORBIDDEN
    return codes


APP_READ = app_gate(*APP_ROLES)
APP_ADMIN = app_gate("app_admin")
APP_OPERATE = app_gate("app_admin", "app_operator")
# Anyone signed in; a foreign caller sees their own organization.
ANY_PRINCIPAL = expect(OK, foreign=OK)
# Creations in the caller's own organization: only Product Admins (of acme, or of globex in globex).
PRODUCT_ADMIN_CREATES = expect(FORBIDDEN, foreign=OK)
# Changes to an existing acme object: Product Admin only; to another organization it does not exist.
PRODUCT_ADMIN_CHANGES = expect(FORBIDDEN, foreign=NOT_FOUND)

Prepare = Callable[[Cast, str], Awaitable[dict[str, Any]]]


async def no_variables(cast: Cast, role: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Operation:
    name: str
    document: str
    expected: Mapping[str, str]
    prepare: Prepare = no_variables


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
    for op in OPERATIONS:
        assert set(op.expected) == set(CAST_ROLES), op.name
    assert len({op.name for op in OPERATIONS}) == len(OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    variables = await operation.prepare(cast, role)
    body = await gql.raw(operation.document, variables, token=cast.token(role))
    codes = {error.get("extensions", {}).get("code") for error in body.get("errors") or []}
    got = OK if not codes else ",".join(sorted(str(code) for code in codes))
    assert got == operation.expected[role], body.get("errors")
    if got == OK:
        assert body["data"] is not None and all(value is not None for value in body["data"].values())
