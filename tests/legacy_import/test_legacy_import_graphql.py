"""importLegacyProject: Product Admins import an export through GraphQL; a bad one answers INVALID_IMPORT
with every problem in `extensions.problems`. (Every other caller's answer is in the authorization matrix,
tests/api/test_authz_matrix_legacy_import.py.)"""

from __future__ import annotations

from conftest import GraphQL, OrgAdmin, create_principal_with_token
from legacy_import_support import EXAMPLE_CREATED, example, row_counts

from models import AuditEvent, LegacyProject
from models.enums import AuditOutcome

IMPORT = """
mutation($document: JSON!) {
  importLegacyProject(document: $document) {
    projectId projectSlug alreadyImported
    created { kind count }
    existing { kind count }
  }
}
"""


async def test_a_product_admin_imports_and_reimports(gql: GraphQL, org_admin: OrgAdmin) -> None:
    data = await gql(IMPORT, {"document": example()}, token=org_admin.token)
    report = data["importLegacyProject"]
    assert report["projectSlug"] == "payments" and report["alreadyImported"] is False
    assert {c["kind"]: c["count"] for c in report["created"]} == EXAMPLE_CREATED
    assert report["existing"] == []
    project = await LegacyProject.get(slug="payments")
    assert report["projectId"] == str(project.id)
    imported = await AuditEvent.get(action="legacy_project.import")
    assert imported.actor_id == org_admin.principal_id  # the admin who asked, not the system

    before = await row_counts()
    again = (await gql(IMPORT, {"document": example()}, token=org_admin.token))["importLegacyProject"]
    assert (
        again["alreadyImported"] is True and again["created"] == [] and again["projectId"] == str(project.id)
    )
    assert {c["kind"]: c["count"] for c in again["existing"]}["certificate"] == 5
    assert await row_counts() == before


async def test_a_bad_export_answers_invalid_import_with_its_problems(
    gql: GraphQL, org_admin: OrgAdmin
) -> None:
    document = example()
    document["formatVersion"] = "1"
    document["profiles"][2]["ca"] = "missing"
    document["certificates"][1]["certificatePem"] = (
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    )
    before = await row_counts()
    body = await gql.raw(IMPORT, {"document": document}, token=org_admin.token)
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "INVALID_IMPORT"
    assert error["extensions"]["problems"] == [
        {"path": "$.profiles[2].ca", "message": "unknown certificate authority 'missing'"},
        {
            "path": "$.certificates[1].certificatePem",
            "message": "is not one readable PEM certificate (corrupt PEM)",
        },
    ]
    assert await row_counts() == before
    failure = await AuditEvent.get(action="mutation.importLegacyProject", outcome=AuditOutcome.FAILURE)
    assert failure.details["code"] == "INVALID_IMPORT"

    version = await gql.raw(IMPORT, {"document": {"formatVersion": "0.9"}}, token=org_admin.token)
    assert version["errors"][0]["extensions"]["problems"] == [
        {"path": "$.formatVersion", "message": "unknown format version '0.9'; supported: 1"}
    ]


async def test_a_product_member_is_forbidden(gql: GraphQL, org_admin: OrgAdmin) -> None:
    _, token = await create_principal_with_token(org_admin.organization_id, "member@acme.test", "member")
    before = await row_counts()
    body = await gql.raw(IMPORT, {"document": example()}, token=token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert await row_counts() == before
