"""Legacy projects in the hierarchy (SPEC §12): `certificateManager.legacyProjects` with counts made by
aggregate queries, `legacyProject(id)` with its profiles (method and legacy URL), members with legacy roles,
alerts, syncs, approval policies and the same paginated inventory as an Application's; objects of a legacy
project name it as `legacyProject` and answer no `application`; viewers never read a secret."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from conftest import GraphQL, OrgAdmin
from legacy_rules_support import example_export, legacy_payments

from core import application as application_service
from core import issuance, runtime
from core.legacy import projects
from models import Certificate

PROJECTS = """{ certificateManager { legacyProjects { id slug name description formatVersion importedAt
  counts { profiles certificates alerts syncs approvalPolicies members } } } }"""

PROJECT = """query($id: ID!) { certificateManager { legacyProject(id: $id) {
  id slug name
  profiles { id slug name enrollmentMethod legacyUrl profile { id name }
    enrollment { api { enabled autoRenew } acme { enabled eabRequired directoryUrl }
      est { enabled url username } scep { enabled url } } }
  members { role permissions principal { name kind }
    customRole { slug name permissions conditions { profileSlugs syncNames other } } }
  alerts { id name legacyProject { slug } }
  syncs { id name legacyProject { slug } }
  approvalPolicies { id name legacyProject { slug } }
} } }"""

INVENTORY = """query($id: ID!, $after: String, $filter: CertificateFilter) { certificateManager {
  legacyProject(id: $id) { certificates(first: 2, after: $after, filter: $filter) {
    edges { cursor node { id commonName application { id } legacyProject { id slug } } }
    pageInfo { hasNextPage endCursor } } } } }"""


def second_project() -> dict[str, Any]:
    """Another export: project "stores", its own CA and profile names, two certificates, no alerts."""
    document = example_export()
    document["project"] = {"slug": "stores", "name": "Stores", "description": ""}
    document["certificateAuthorities"][0]["name"] = "Stores Legacy Root CA"
    document["certificates"] = [c for c in document["certificates"] if c["slug"] in {"gateway", "www"}]
    for section in ("alerts", "syncs", "approvalPolicies", "roles"):
        document[section] = []
    document["members"] = [m for m in document["members"] if m["role"] != "custom"][:2]
    for profile in document["profiles"]:
        acme = profile["enrollment"].get("acme")
        if acme:
            acme["eabKid"] = "legacy-stores-web-acme"
    return document


async def test_legacy_projects_with_counts(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    await legacy_payments(org_admin.organization_id, second_project())
    # One more certificate in payments, issued through its API profile after the import.
    await issuance.issue_certificate(
        actor=payments.system(),
        application_id=payments.project_id,
        profile_id=payments.profiles["web-api"],
        subject=[("CN", "later.payments.example.com")],
    )
    listed = (await gql(PROJECTS, token=org_admin.token))["certificateManager"]["legacyProjects"]
    assert [p["slug"] for p in listed] == ["payments", "stores"]
    first, second = listed
    assert first["id"] == str(payments.project_id)
    assert (first["name"], first["formatVersion"]) == ("Payments", "1") and first["importedAt"]
    assert first["description"].startswith("The payments team")
    assert first["counts"] == {
        "profiles": 4,
        "certificates": 6,
        "alerts": 1,
        "syncs": 1,
        "approvalPolicies": 1,
        "members": 5,
    }
    assert second["counts"] == {
        "profiles": 4,
        "certificates": 2,
        "alerts": 0,
        "syncs": 0,
        "approvalPolicies": 0,
        "members": 2,
    }
    # Bob is a member of both; Carol of payments only.
    mine = (await gql(PROJECTS, token=payments.tokens["member"]))["certificateManager"]["legacyProjects"]
    assert [p["slug"] for p in mine] == ["payments", "stores"]
    mine = (await gql(PROJECTS, token=payments.tokens["sync-operators"]))["certificateManager"][
        "legacyProjects"
    ]
    assert [(p["slug"], p["counts"]["certificates"]) for p in mine] == [("payments", 6)]


async def test_counts_are_aggregate_queries_whatever_the_number_of_rows(
    org_admin: OrgAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    await legacy_payments(org_admin.organization_id, second_project())
    rows = await projects.list_projects(actor=payments.system())

    def queries() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "tortoise.db_client"]

    with caplog.at_level(logging.DEBUG, logger="tortoise.db_client"):
        counts = await projects.count(rows)
        few = queries()
        caplog.clear()
        for n in range(5):
            await issuance.issue_certificate(
                actor=payments.system(),
                application_id=payments.project_id,
                profile_id=payments.profiles["web-api"],
                subject=[("CN", f"n{n}.payments.example.com")],
            )
        caplog.clear()
        more = await projects.count(rows)
        many = queries()
    assert counts[payments.project_id].certificates + 5 == more[payments.project_id].certificates == 10
    assert len(few) == len(many) == 6
    assert all("COUNT(" in query.upper() and "GROUP BY" in query.upper() for query in many), many


async def test_one_legacy_project_in_detail(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    data = await gql(PROJECT, {"id": str(payments.project_id)}, token=org_admin.token)
    project = data["certificateManager"]["legacyProject"]
    base = runtime.settings().public_url.rstrip("/")
    profiles = {p["slug"]: p for p in project["profiles"]}
    assert {slug: p["enrollmentMethod"] for slug, p in profiles.items()} == {
        "web-api": "API",
        "web-acme": "ACME",
        "web-est": "EST",
        "devices-scep": "SCEP",
    }
    ids = {slug: payments.profiles[slug] for slug in profiles}
    assert profiles["web-api"]["legacyUrl"] is None
    assert profiles["web-api"]["enrollment"]["api"] == {"enabled": True, "autoRenew": True}
    assert profiles["web-acme"]["legacyUrl"] == f"{base}/acme/profiles/{ids['web-acme']}/directory"
    assert profiles["web-acme"]["enrollment"]["acme"]["directoryUrl"] == profiles["web-acme"]["legacyUrl"]
    assert profiles["web-est"]["legacyUrl"] == f"{base}/.well-known/est/{ids['web-est']}"
    assert profiles["web-est"]["enrollment"]["est"]["username"] == "payments-est"
    assert profiles["devices-scep"]["legacyUrl"] == f"{base}/scep/{ids['devices-scep']}/pkiclient.exe"
    for slug, profile in profiles.items():
        assert profile["id"] == str(ids[slug]) == profile["profile"]["id"]
        assert profile["profile"]["name"] == profile["name"]

    members = {m["principal"]["name"]: m for m in project["members"]}
    assert {name: m["role"] for name, m in members.items()} == {
        "Alice Admin": "ADMIN",
        "Bob Member": "MEMBER",
        "Victor Viewer": "VIEWER",
        "payments-ci-bot": "CUSTOM",
        "Carol Syncs": "CUSTOM",
    }
    bot = members["payments-ci-bot"]
    assert bot["principal"]["kind"] == "MACHINE"
    assert bot["customRole"] == {
        "slug": "web-issuers",
        "name": "Web issuers",
        "permissions": ["certificates:issue", "certificates:read", "project:read"],
        "conditions": {"profileSlugs": ["web-api", "web-acme"], "syncNames": None, "other": []},
    }
    assert members["Carol Syncs"]["customRole"]["conditions"] == {
        "profileSlugs": None,
        "syncNames": None,
        "other": [],
    }
    assert members["Victor Viewer"]["customRole"] is None
    assert members["Victor Viewer"]["permissions"] == ["audit:read", "certificates:read", "project:read"]
    assert [(a["name"], a["legacyProject"]) for a in project["alerts"]] == [
        ("payments-expiry-and-issuance", {"slug": "payments"})
    ]
    assert [(s["name"], s["legacyProject"]) for s in project["syncs"]] == [
        ("edge-push", {"slug": "payments"})
    ]
    assert [(p["name"], p["legacyProject"]) for p in project["approvalPolicies"]] == [
        ("payments-api-approval", {"slug": "payments"})
    ]


async def test_the_inventory_pages_like_an_applications(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    seen: list[str] = []
    after = None
    while True:
        data = await gql(INVENTORY, {"id": str(payments.project_id), "after": after}, token=org_admin.token)
        page = data["certificateManager"]["legacyProject"]["certificates"]
        assert len(page["edges"]) <= 2
        for edge in page["edges"]:
            node = edge["node"]
            assert node["application"] is None
            assert node["legacyProject"] == {"id": str(payments.project_id), "slug": "payments"}
            seen.append(node["id"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    expected = await Certificate.filter(application_id=payments.project_id).order_by("-created_at", "-id")
    assert seen == [str(row.id) for row in expected] and len(seen) == 5
    # The Application inventory's filters work the same.
    web_api = {"profileId": str(payments.profiles["web-api"])}
    data = await gql(INVENTORY, {"id": str(payments.project_id), "filter": web_api}, token=org_admin.token)
    nodes = [e["node"] for e in data["certificateManager"]["legacyProject"]["certificates"]["edges"]]
    assert sorted(n["commonName"] for n in nodes) == sorted(
        c.common_name for c in await Certificate.filter(profile_id=payments.profiles["web-api"])
    )


async def test_objects_of_an_application_name_it_and_no_legacy_project(
    gql: GraphQL, org_admin: OrgAdmin
) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    app = await application_service.create_application(actor=payments.system(), name="payments-api")
    await application_service.attach_profile(
        actor=payments.system(),
        application_id=app.id,
        profile_id=payments.profiles["web-api"],
        api=application_service.ApiEnrollmentSettings(),
    )
    issued = await issuance.issue_certificate(
        actor=payments.system(),
        application_id=app.id,
        profile_id=payments.profiles["web-api"],
        subject=[("CN", "app.payments.example.com")],
    )
    document = "query($id: ID!) { certificate(id: $id) { application { id name } legacyProject { id } } }"
    data = await gql(document, {"id": str(issued.id)}, token=org_admin.token)
    assert data["certificate"] == {
        "application": {"id": str(app.id), "name": "payments-api"},
        "legacyProject": None,
    }
    data = await gql(document, {"id": str(payments.certificates["gateway"])}, token=org_admin.token)
    assert data["certificate"] == {"application": None, "legacyProject": {"id": str(payments.project_id)}}


async def test_not_found_for_unknown_and_foreign_projects(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    document = "query($id: ID!) { certificateManager { legacyProject(id: $id) { id } } }"
    for project_id in (str(uuid.uuid4()), "not-a-uuid"):
        body = await gql.raw(document, {"id": project_id}, token=org_admin.token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    # A Product Admin of another organization does not see it.
    from factories import make_org

    _, foreign = await make_org("globex")
    body = await gql.raw(document, {"id": str(payments.project_id)}, token=foreign.token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    listed = await gql("{ certificateManager { legacyProjects { id } } }", token=foreign.token)
    assert listed["certificateManager"]["legacyProjects"] == []
    body = await gql.raw("{ certificateManager { legacyProjects { id } } }", token=None)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]


SECRETS_AS_VIEWER = """query($id: ID!, $cert: ID!) {
  certificateManager { legacyProject(id: $id) { id
    profiles { slug enrollment { acme { eabKid eabHmacKey } } }
    certificates(first: 50) { edges { node { id hasPrivateKey privateKeyPem } } } } }
  certificate(id: $cert) { id privateKeyPem } }"""


async def test_a_viewer_reads_the_project_but_never_a_secret(gql: GraphQL, org_admin: OrgAdmin) -> None:
    payments = await legacy_payments(org_admin.organization_id)
    variables = {"id": str(payments.project_id), "cert": str(payments.certificates["gateway"])}
    export = example_export()
    hmac_key = export["profiles"][1]["enrollment"]["acme"]["eabHmacKey"]
    gateway_key = next(c for c in export["certificates"] if c["slug"] == "gateway")["privateKeyPem"]
    key_body = "".join(gateway_key.strip().splitlines()[1:-1])[:40]

    # The legacy admin reads both secrets: they are there to be refused.
    admin = await gql.raw(SECRETS_AS_VIEWER, variables, token=payments.tokens["admin"])
    assert not admin.get("errors") and hmac_key in json.dumps(admin) and "PRIVATE KEY" in json.dumps(admin)

    body = await gql.raw(SECRETS_AS_VIEWER, variables, token=payments.tokens["viewer"])
    text = json.dumps(body["data"])
    assert hmac_key not in text and "PRIVATE KEY" not in text and key_body not in text
    assert "legacy-payments-web-acme" not in text  # the EAB key id is a secret too
    assert {e["extensions"]["code"] for e in body["errors"]} == {"FORBIDDEN"}
    refused = {".".join(str(part) for part in e["path"] if not isinstance(part, int)) for e in body["errors"]}
    assert refused == {
        "certificateManager.legacyProject.profiles.enrollment.acme.eabKid",
        "certificateManager.legacyProject.profiles.enrollment.acme.eabHmacKey",
        "certificateManager.legacyProject.certificates.edges.node.privateKeyPem",
        "certificate.privateKeyPem",
    }
    # What is not secret is there.
    project = body["data"]["certificateManager"]["legacyProject"]
    assert project["id"] == str(payments.project_id)
    assert any(edge["node"]["hasPrivateKey"] for edge in project["certificates"]["edges"])
    assert body["data"]["certificate"]["id"] == variables["cert"]
    # Nor through an export: the PEM without the key, yes; with it, FORBIDDEN.
    export_document = (
        "mutation($id: ID!, $key: Boolean!) { exportCertificate(input: {certificateId: $id, "
        "includePrivateKey: $key}) { pem } }"
    )
    plain = await gql(
        export_document, {"id": variables["cert"], "key": False}, token=payments.tokens["viewer"]
    )
    assert "CERTIFICATE" in plain["exportCertificate"]["pem"] and "PRIVATE KEY" not in json.dumps(plain)
    body = await gql.raw(
        export_document, {"id": variables["cert"], "key": True}, token=payments.tokens["viewer"]
    )
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"] and body["data"] is None
