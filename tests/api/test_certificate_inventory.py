"""The inventory: keyset pagination, filters by status, profile, name and expiry, and who sees what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import factories
import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from conftest import test_backend as backend_name
from factories import Scene
from tortoise.transactions import in_transaction

from core.authz import Actor
from core.certificate import inventory_query, renew_certificate, revoke_certificate
from core.issuance import issue_certificate
from models import Certificate

INVENTORY = """
query($id: ID!, $first: Int!, $after: String, $filter: CertificateFilter) {
  application(id: $id) {
    certificates(first: $first, after: $after, filter: $filter) {
      edges { cursor node { id commonName status profile { id } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

RENEWED = {1, 2, 4}
REVOKED = {7, 8, 10, 11}
EXPIRED = {13, 14, 16}
COUNT = 30


def common_name(index: int) -> str:
    return f"host{index:02d}.{'shop' if index % 5 == 0 else 'svc'}.example.com"


@pytest.fixture
async def inventory(org_admin: OrgAdmin) -> tuple[Scene, Any]:
    """30 certificates over two profiles, lifetimes 10..39 days; some renewed, revoked or expired."""
    scene = await factories.make_scene(org_admin.organization_id, org_admin.token)
    second = await factories.make_pki(scene.org)
    await factories.attach(scene.application, second.profile)
    actor = Actor.system(scene.org.id)
    ids: list[Any] = []
    for index in range(COUNT):
        profile = second.profile if index % 3 == 0 else scene.pki.profile
        cert = await issue_certificate(
            actor=actor,
            application_id=scene.application.id,
            profile_id=profile.id,
            subject=[("CN", common_name(index))],
            sans=[common_name(index)],
            validity=f"{10 + index}d",
        )
        ids.append(cert.id)
    for index in RENEWED:
        await renew_certificate(actor=actor, certificate_id=ids[index], mode="new_key")
    for index in REVOKED:
        await revoke_certificate(actor=actor, certificate_id=ids[index], reason="superseded")
    past = datetime.now(UTC) - timedelta(hours=1)
    await Certificate.filter(id__in=[ids[i] for i in EXPIRED]).update(not_after=past)
    return scene, second


async def page_through(
    gql: GraphQL, scene: Scene, token: str, first: int, flt: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], int]:
    nodes: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        data = await gql(
            INVENTORY,
            {"id": str(scene.application.id), "first": first, "after": after, "filter": flt},
            token=token,
        )
        connection = data["application"]["certificates"]
        pages += 1
        nodes += [edge["node"] for edge in connection["edges"]]
        assert len(connection["edges"]) <= first
        if not connection["pageInfo"]["hasNextPage"]:
            return nodes, pages
        after = connection["pageInfo"]["endCursor"]
        assert after == connection["edges"][-1]["cursor"]


async def test_pages_of_seven_cover_everything_once_newest_first(
    gql: GraphQL, inventory: tuple[Scene, Any]
) -> None:
    scene, _ = inventory
    nodes, pages = await page_through(gql, scene, scene.auditor.token, 7)
    expected = [
        str(row.id)
        for row in await Certificate.filter(application_id=scene.application.id).order_by(
            "-created_at", "-id"
        )
    ]
    assert len(expected) == COUNT + len(RENEWED)
    assert [n["id"] for n in nodes] == expected
    assert pages == 5  # 7+7+7+7+5
    # The newest are the three renewals.
    assert [n["commonName"] for n in nodes[:3]] == [common_name(i) for i in sorted(RENEWED, reverse=True)]


async def test_status_filters(gql: GraphQL, inventory: tuple[Scene, Any]) -> None:
    scene, _ = inventory
    counts = {}
    for status in ("ACTIVE", "RENEWED", "REVOKED", "EXPIRED"):
        nodes, _ = await page_through(gql, scene, scene.operator.token, 7, {"status": status})
        assert {n["status"] for n in nodes} == {status}
        counts[status] = len(nodes)
    assert counts == {
        "ACTIVE": COUNT + len(RENEWED) - len(RENEWED) - len(REVOKED) - len(EXPIRED),
        "RENEWED": len(RENEWED),
        "REVOKED": len(REVOKED),
        "EXPIRED": len(EXPIRED),
    }
    expired, _ = await page_through(gql, scene, scene.operator.token, 50, {"status": "EXPIRED"})
    assert sorted(n["commonName"] for n in expired) == sorted(common_name(i) for i in EXPIRED)


async def test_profile_name_and_expiry_filters(gql: GraphQL, inventory: tuple[Scene, Any]) -> None:
    scene, second = inventory
    token = scene.operator.token
    nodes, _ = await page_through(gql, scene, token, 7, {"profileId": str(second.profile.id)})
    assert sorted(n["commonName"] for n in nodes) == sorted(
        common_name(i) for i in range(COUNT) if i % 3 == 0
    )
    assert {n["profile"]["id"] for n in nodes} == {str(second.profile.id)}
    shops = {common_name(i) for i in range(COUNT) if i % 5 == 0}
    for text in ("shop", "SHOP.example", ".shop."):
        nodes, _ = await page_through(gql, scene, token, 7, {"nameContains": text})
        assert {n["commonName"] for n in nodes} == shops
    nodes, _ = await page_through(gql, scene, token, 7, {"nameContains": "100%"})
    assert nodes == []
    horizon = (datetime.now(UTC) + timedelta(days=20, hours=12)).isoformat()
    nodes, _ = await page_through(gql, scene, token, 7, {"expiresBefore": horizon})
    expected = {common_name(i) for i in range(11)} | {common_name(i) for i in EXPIRED}
    assert len(nodes) == len(expected)  # the successors of renewals live 90 days
    assert {n["commonName"] for n in nodes} == expected
    combined, _ = await page_through(
        gql, scene, token, 2, {"status": "ACTIVE", "expiresBefore": horizon, "nameContains": "shop"}
    )
    assert sorted(n["commonName"] for n in combined) == [common_name(0), common_name(5)]


async def test_bad_pages_and_who_sees_the_inventory(gql: GraphQL, inventory: tuple[Scene, Any]) -> None:
    scene, _ = inventory
    variables = {"id": str(scene.application.id), "first": 7}
    for bad in ({"first": 0}, {"first": 501}, {"after": "bm90IGEgY3Vyc29y"}, {"after": "???"}):
        with pytest.raises(GraphQLError) as caught:
            await gql(INVENTORY, {**variables, **bad}, token=scene.operator.token)
        assert caught.value.codes == ["INVALID_INPUT"], bad
    with pytest.raises(GraphQLError) as caught:
        await gql(INVENTORY, variables, token=scene.outsider.token)
    assert caught.value.codes == ["NOT_FOUND"]
    _, foreign = await factories.make_org()
    with pytest.raises(GraphQLError) as caught:
        await gql(INVENTORY, variables, token=foreign.token)
    assert caught.value.codes == ["NOT_FOUND"]
    data = await gql(INVENTORY, variables, token=scene.admin_token)
    assert len(data["application"]["certificates"]["edges"]) == 7
    # Another application's inventory stays separate.
    other = await factories.make_application(scene.org, profiles=[scene.pki.profile])
    data = await gql(INVENTORY, {"id": str(other.id), "first": 7}, token=scene.admin_token)
    assert data["application"]["certificates"]["edges"] == []


async def test_inventory_queries_use_an_application_index(inventory: tuple[Scene, Any]) -> None:
    """No filter combination scans the whole table (PostgreSQL: with sequential scans priced out)."""
    scene, second = inventory
    now = datetime.now(UTC)
    postgres = backend_name() == "postgres"
    for filters in (
        {},
        {"status": "active"},
        {"status": "expired"},
        {"profile_id": second.profile.id},
        {"name_contains": "shop"},
        {"expires_before": now},
        {"after": (now, scene.application.id)},
    ):
        sql = (
            inventory_query(application_id=scene.application.id, now=now, **filters)
            .limit(8)
            .sql(params_inline=True)
        )
        async with in_transaction() as conn:
            if postgres:
                await conn.execute_script("SET LOCAL enable_seqscan = off")
                _, plan = await conn.execute_query(f"EXPLAIN {sql}")
                details = " | ".join(str(row["QUERY PLAN"]) for row in plan)
                assert "Index" in details and "Seq Scan" not in details, (filters, details)
            else:
                _, plan = await conn.execute_query(f"EXPLAIN QUERY PLAN {sql}")
                details = " | ".join(str(row["detail"]) for row in plan)
                assert "USING INDEX" in details and "SCAN certificate" not in details, (filters, details)
