"""The README's walkthrough runs exactly as written, against the demo setup `make run` creates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import GraphQL, GraphQLError

from core.demo import setup_demo

README = Path(__file__).resolve().parents[2] / "README.md"
# The one block that demonstrates a refusal, and the code the README promises for it.
EXPECTED_ERRORS = {"Refused": "POLICY_VIOLATION"}


def graphql_blocks() -> list[str]:
    return re.findall(r"```graphql\n(.*?)```", README.read_text(), flags=re.DOTALL)


def declared_variables(document: str) -> set[str]:
    return set(re.findall(r"\$(\w+)\s*:", document))


def operation_name(document: str) -> str:
    match = re.match(r"\s*(?:query|mutation)\s+(\w+)", document)
    assert match, f"README GraphQL block has no operation name:\n{document}"
    return match.group(1)


def test_readme_has_the_walkthrough_blocks() -> None:
    names = [operation_name(block) for block in graphql_blocks()]
    assert names == ["MyApplication", "Issue", "Key", "Refused", "Inventory", "Renew", "Revoke", "Audit"]
    assert "POLICY_VIOLATION" in README.read_text()


async def test_walkthrough_runs_as_written(gql: GraphQL, db: str) -> None:
    demo = await setup_demo()
    variables: dict[str, Any] = {"applicationId": demo["application_id"], "profileId": demo["profile_id"]}
    results: dict[str, Any] = {}
    for block in graphql_blocks():
        name = operation_name(block)
        sent = {key: variables[key] for key in declared_variables(block)}
        if name in EXPECTED_ERRORS:
            try:
                await gql(block, sent, token=demo["admin_token"])
            except GraphQLError as error:
                assert error.codes == [EXPECTED_ERRORS[name]]
                assert "shop.example.org" in error.errors[0]["message"] or error.errors[0]["extensions"].get(
                    "violations"
                )
                continue
            raise AssertionError(f"README block {name} was expected to fail")
        results[name] = await gql(block, sent, token=demo["admin_token"])
        if name == "Issue":
            variables["certificateId"] = results[name]["issueCertificate"]["certificate"]["id"]
        if name == "Renew":
            variables["certificateId"] = results[name]["renewCertificate"]["certificate"]["id"]

    app = results["MyApplication"]["application"]
    assert app["name"] == "payments-api"
    assert app["profiles"][0]["profile"]["name"] == "tls-server"
    issued = results["Issue"]["issueCertificate"]["certificate"]
    assert issued["status"] == "ACTIVE"
    assert {"type": "DNS", "value": "api.shop.example.com"} in issued["sans"]
    assert results["Key"]["certificate"]["privateKeyPem"].startswith("-----BEGIN PRIVATE KEY-----")
    inventory = results["Inventory"]["application"]["certificates"]["edges"]
    assert [edge["node"]["id"] for edge in inventory] == [issued["id"]]
    renewed = results["Renew"]["renewCertificate"]["certificate"]
    assert renewed["renewedFrom"] == {"id": issued["id"], "status": "RENEWED"}
    assert results["Revoke"]["revokeCertificate"]["certificate"]["status"] == "REVOKED"
    actions = [edge["node"]["action"] for edge in results["Audit"]["auditEvents"]["edges"]]
    assert "certificate.revoke" in actions
