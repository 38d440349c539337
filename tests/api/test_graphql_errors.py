"""Errors in the caller's document get a stable code and a readable message; internals stay hidden."""

from __future__ import annotations

from conftest import GraphQL, OrgAdmin


async def test_wrong_enum_in_variables_is_invalid_input_naming_the_value(
    gql: GraphQL, org_admin: OrgAdmin
) -> None:
    body = await gql.raw(
        "mutation($input: CreateRootCaInput!) { createRootCa(input: $input) { id } }",
        {"input": {"name": "r", "subject": "CN=R", "keyAlgorithm": "DSA_1024", "validity": "1y"}},
        token=org_admin.token,
    )
    error = body["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert "DSA_1024" in error["message"]


async def test_syntax_error_and_unknown_field_are_invalid_input(gql: GraphQL, org_admin: OrgAdmin) -> None:
    broken = await gql.raw("{ viewer { name ", token=org_admin.token)
    assert broken["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    unknown = await gql.raw("{ viewer { shoeSize } }", token=org_admin.token)
    assert unknown["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    assert "shoeSize" in unknown["errors"][0]["message"]


async def test_refused_and_failed_mutations_are_audited(gql: GraphQL, org_admin: OrgAdmin) -> None:
    from models import AuditEvent

    refused = await gql.raw('mutation { createApplication(input: {name: "x"}) { id } }', token=None)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    failed = await gql.raw(
        'mutation { createApplication(input: {name: "Not A Slug"}) { id } }', token=org_admin.token
    )
    assert failed["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    rows = await AuditEvent.filter(action="mutation.createApplication").order_by("id")
    assert [(row.actor_kind, row.outcome.value, row.details["code"]) for row in rows] == [
        ("anonymous", "failure", "UNAUTHENTICATED"),
        ("user", "failure", "INVALID_INPUT"),
    ]
