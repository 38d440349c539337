"""Syncs through GraphQL: validation errors save nothing, credentials are sealed and write-only, statuses
page as a connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from factories import make_pki
from sync_support import make_scene, sweep, sync_roots

from core import sync as service
from core.errors import InvalidInput
from models import Organization
from models.sync import Sync, SyncTarget

__all__ = ["sync_roots"]

CREATE = (
    "mutation($input: CreateSyncInput!) { createSync(input: $input) { id name credentialsSet connection } }"
)
SECRET = "graphql-sync-signing-secret-42"


def _input(application_id: Any, **fields: Any) -> dict[str, Any]:
    return {
        "applicationId": str(application_id),
        "name": "hook",
        "destination": "HTTP",
        "connection": {"url": "https://sync.example.test/hook"},
        "credentials": {"signingSecret": SECRET},
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"nameTemplate": "{{commonName}}.pem"}, "nameTemplate"),
        ({"nameTemplate": "{{certificateId}}-{{nope}}"}, "nameTemplate"),
        (
            {"destination": "LOCAL", "connection": {"directory": "rel/dir"}, "credentials": None},
            "connection.directory",
        ),
        (
            {"destination": "LOCAL", "connection": {"directory": "/etc/cron.d"}, "credentials": None},
            "connection.directory",
        ),
        ({"credentials": {"signingSecret": "short"}}, "credentials.signingSecret"),
        ({"format": "PKCS12"}, "credentials.keystorePassword"),
        ({"connection": {"url": "ftp://x.example.test"}}, "connection.url"),
        ({"destination": "AWS_ACM", "format": "JKS", "connection": {"region": "eu-west-1"}}, "format"),
        (
            {
                "destination": "SFTP",
                "connection": {"host": "h", "username": "u", "directory": "/x"},
                "credentials": None,
            },
            "connection.hostKey",
        ),
    ],
)
async def test_bad_input_saves_nothing(
    gql: GraphQL, org_admin: OrgAdmin, sync_roots: Path, fields: dict[str, Any], field: str
) -> None:
    scene = await make_scene(org_admin.organization_id)
    with pytest.raises(GraphQLError) as error:
        await gql(CREATE, {"input": _input(scene.application.id, **fields)}, token=org_admin.token)
    assert error.value.codes == ["INVALID_INPUT"]
    assert error.value.errors[0]["extensions"]["field"] == field
    assert await Sync.all().count() == 0


async def test_unattached_profile_and_unknown_format(gql: GraphQL, org_admin: OrgAdmin) -> None:
    scene = await make_scene(org_admin.organization_id)
    other = await make_pki(await Organization.get(id=org_admin.organization_id))
    with pytest.raises(GraphQLError) as error:
        await gql(
            CREATE,
            {"input": _input(scene.application.id, profileIds=[str(other.profile.id)])},
            token=org_admin.token,
        )
    assert error.value.codes == ["INVALID_INPUT"] and "not attached" in error.value.errors[0]["message"]
    with pytest.raises(InvalidInput, match="unknown format"):
        await service.create_sync(
            actor=scene.actor,
            application_id=scene.application.id,
            name="x",
            destination="http",
            connection={"url": "https://sync.example.test/hook"},
            credentials={"signingSecret": SECRET},
            format="der",
        )
    assert await Sync.all().count() == 0


async def test_credentials_are_sealed_and_write_only(gql: GraphQL, org_admin: OrgAdmin) -> None:
    scene = await make_scene(org_admin.organization_id)
    created = (await gql(CREATE, {"input": _input(scene.application.id)}, token=org_admin.token))[
        "createSync"
    ]
    assert created["credentialsSet"] is True and SECRET not in str(created)
    row = await Sync.get(id=created["id"])
    assert SECRET.encode() not in bytes(row.encrypted_credentials)
    assert service.unseal_credentials(row) == {"signingSecret": SECRET}
    # Update merges credentials; other settings stay.
    updated = await gql(
        'mutation($id: ID!) { updateSync(id: $id, input: {credentials: {keystorePassword: "p12-pass"}, '
        "format: PKCS12}) { format credentialsSet } }",
        {"id": created["id"]},
        token=org_admin.token,
    )
    assert updated["updateSync"] == {"format": "PKCS12", "credentialsSet": True}
    row = await Sync.get(id=created["id"])
    assert service.unseal_credentials(row) == {"signingSecret": SECRET, "keystorePassword": "p12-pass"}


async def test_targets_page_as_a_connection(gql: GraphQL, org_admin: OrgAdmin, sync_roots: Path) -> None:
    scene = await make_scene(org_admin.organization_id)
    for index in range(3):
        await scene.issue(f"page{index}.example.com")
    created = (
        await gql(
            CREATE,
            {
                "input": _input(
                    scene.application.id,
                    destination="LOCAL",
                    connection={"directory": str(sync_roots / "g")},
                    credentials=None,
                )
            },
            token=org_admin.token,
        )
    )["createSync"]
    await sweep()
    query = (
        "query($id: ID!, $after: String) { sync(id: $id) { targets(first: 2, after: $after) { edges { cursor "
        "node { certificateId status attempts lastFinishedAt remoteReference } } "
        "pageInfo { hasNextPage endCursor } } } }"
    )
    page = (await gql(query, {"id": created["id"]}, token=org_admin.token))["sync"]["targets"]
    assert len(page["edges"]) == 2 and page["pageInfo"]["hasNextPage"] is True
    rest = (
        await gql(query, {"id": created["id"], "after": page["pageInfo"]["endCursor"]}, token=org_admin.token)
    )["sync"]["targets"]
    assert len(rest["edges"]) == 1 and rest["pageInfo"]["hasNextPage"] is False
    nodes = [e["node"] for e in page["edges"] + rest["edges"]]
    assert {n["status"] for n in nodes} == {"SUCCEEDED"}
    assert len({n["certificateId"] for n in nodes}) == 3 == await SyncTarget.all().count()
    run = await gql(
        "mutation($id: ID!) { runSync(id: $id) { queued } }", {"id": created["id"]}, token=org_admin.token
    )
    assert run["runSync"]["queued"] == 3
