from __future__ import annotations

import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin


async def test_viewer_is_the_bootstrap_admin(gql: GraphQL, org_admin: OrgAdmin) -> None:
    data = await gql("{ viewer { name kind productRole } }", token=org_admin.token)
    assert data["viewer"] == {"name": "admin@acme.test", "kind": "user", "productRole": "admin"}


async def test_no_token_is_unauthenticated(gql: GraphQL, org_admin: OrgAdmin) -> None:
    with pytest.raises(GraphQLError) as caught:
        await gql("{ viewer { name } }", token=None)
    assert caught.value.codes == ["UNAUTHENTICATED"]


async def test_unknown_token_is_unauthenticated(gql: GraphQL, org_admin: OrgAdmin) -> None:
    with pytest.raises(GraphQLError) as caught:
        await gql("{ viewer { name } }", token="kw_not-a-real-token")
    assert caught.value.codes == ["UNAUTHENTICATED"]
    assert "unknown or revoked" in caught.value.errors[0]["message"]
