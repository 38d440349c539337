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


async def test_a_body_over_the_limit_is_refused_before_it_is_read(gql: GraphQL, org_admin: OrgAdmin) -> None:
    huge = "x" * (3 * 1024 * 1024)
    response = await gql.http.post(
        "/graphql",
        json={"query": "{ viewer { name } }", "variables": {"pad": huge}},
        headers={"Authorization": f"Bearer {org_admin.token}"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    # The server keeps serving.
    assert (await gql("{ viewer { name } }", token=org_admin.token))["viewer"]["name"] == "admin@acme.test"


async def test_a_streamed_body_over_the_limit_is_refused(gql: GraphQL, org_admin: OrgAdmin) -> None:
    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"x" * (64 * 1024)

    response = await gql.http.post(
        "/graphql",
        content=chunks(),
        headers={"Authorization": f"Bearer {org_admin.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413


async def test_an_absurdly_deep_query_is_refused(gql: GraphQL, org_admin: OrgAdmin) -> None:
    nested = "renewedFrom { " * 12 + "id" + " }" * 12
    deep = "{ applications { edges { node { certificates { edges { node { " + nested + " } } } } } } }"
    body = await gql.raw(deep, token=org_admin.token)
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    assert "depth" in body["errors"][0]["message"]
