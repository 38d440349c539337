"""Policies and profiles over GraphQL: CRUD, defaults checked against the policy, soft delete, access."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from pki_admin_support import create_root, member_token

from core import profile as core_profile
from core.errors import InvalidState
from models import AuditEvent, CertificatePolicy, CertificateProfile
from models.enums import AuditOutcome

POLICY_FIELDS = "id name description rules"
PROFILE_FIELDS = """
    id name description defaultValidity defaultKeyAlgorithm defaultKeyUsages defaultExtendedKeyUsages
    defaultSubject { type value } renewBeforeDays deletedAt ca { id status } policy { id name }
"""
TLS_RULES = {
    "sans": [{"type": "DNS", "allowed": ["*.example.com", "example.com"], "denied": ["admin.example.com"]}],
    "extendedKeyUsages": {"allowed": ["serverAuth"]},
    "keyAlgorithms": ["EC_P256", "RSA_2048"],
    "maxValidity": "90d",
}


async def create_policy(gql: GraphQL, token: str, **overrides: Any) -> dict[str, Any]:
    variables: dict[str, Any] = {"name": "tls-server", "description": "web servers", "rules": TLS_RULES}
    variables.update(overrides)
    data = await gql(
        f"mutation($input: CreatePolicyInput!) {{ createPolicy(input: $input) {{ {POLICY_FIELDS} }} }}",
        {"input": variables},
        token=token,
    )
    return dict(data["createPolicy"])


async def create_profile(
    gql: GraphQL, token: str, ca_id: str, policy_id: str, **overrides: Any
) -> dict[str, Any]:
    variables: dict[str, Any] = {
        "name": "tls-server",
        "caId": ca_id,
        "policyId": policy_id,
        "defaultValidity": "30d",
        "defaultKeyAlgorithm": "EC_P256",
        "defaultExtendedKeyUsages": ["serverAuth"],
        "defaultSubject": [{"type": "O", "value": "Acme"}],
        "renewBeforeDays": 10,
    }
    variables.update(overrides)
    data = await gql(
        f"mutation($input: CreateProfileInput!) {{ createProfile(input: $input) {{ {PROFILE_FIELDS} }} }}",
        {"input": variables},
        token=token,
    )
    return dict(data["createProfile"])


async def test_create_policy_stores_normalized_rules(gql: GraphQL, org_admin: OrgAdmin) -> None:
    policy = await create_policy(gql, org_admin.token)
    assert policy["rules"]["maxValidity"] == "90d"
    assert policy["rules"]["sans"][0]["allowed"] == ["*.example.com", "example.com"]
    assert policy["rules"]["subject"] is None  # unset: anything allowed
    assert policy["rules"]["allowCa"] is False
    row = await CertificatePolicy.get(id=policy["id"])
    assert row.rules == policy["rules"]
    assert await AuditEvent.filter(action="policy.create", resource_id=policy["id"]).exists()


@pytest.mark.parametrize(
    ("rules", "field", "fragment"),
    [
        ({"sans": [{"type": "FAX", "allowed": []}]}, "rules.sans[0].type", "FAX"),
        ({"maxValidity": "forever"}, "rules.maxValidity", "forever"),
        ({"keyAlgorithms": ["DSA"]}, "rules.keyAlgorithms", "DSA"),
        ({"bogus": 1}, "rules", "bogus"),
        ([1, 2], "rules", "JSON object"),
    ],
)
async def test_bad_rules_are_invalid_input_naming_the_path(
    gql: GraphQL, org_admin: OrgAdmin, rules: Any, field: str, fragment: str
) -> None:
    with pytest.raises(GraphQLError) as caught:
        await create_policy(gql, org_admin.token, rules=rules)
    assert caught.value.codes == ["INVALID_INPUT"]
    assert caught.value.errors[0]["extensions"]["field"].startswith(field)
    assert fragment in caught.value.errors[0]["message"]
    assert await CertificatePolicy.all().count() == 0


async def test_update_and_delete_policy(gql: GraphQL, org_admin: OrgAdmin) -> None:
    policy = await create_policy(gql, org_admin.token)
    other = await create_policy(gql, org_admin.token, name="other", rules={})
    update = (
        "mutation($id: ID!, $input: UpdatePolicyInput!) "
        f"{{ updatePolicy(id: $id, input: $input) {{ {POLICY_FIELDS} }} }}"
    )
    data = await gql(update, {"id": policy["id"], "input": {"description": "changed"}}, token=org_admin.token)
    assert data["updatePolicy"]["description"] == "changed"
    assert data["updatePolicy"]["rules"] == policy["rules"]  # omitted rules are kept
    data = await gql(
        update, {"id": policy["id"], "input": {"rules": {"maxValidity": "1y"}}}, token=org_admin.token
    )
    assert data["updatePolicy"]["rules"]["maxValidity"] == "1y"
    assert data["updatePolicy"]["rules"]["sans"] is None  # replaced, not merged
    with pytest.raises(GraphQLError) as caught:
        await gql(update, {"id": policy["id"], "input": {"name": "other"}}, token=org_admin.token)
    assert caught.value.codes == ["CONFLICT"]
    with pytest.raises(GraphQLError) as caught:
        await gql(update, {"id": policy["id"], "input": {"rules": {"sans": 3}}}, token=org_admin.token)
    assert caught.value.codes == ["INVALID_INPUT"]
    assert (await CertificatePolicy.get(id=policy["id"])).rules["maxValidity"] == "1y"

    delete = "mutation($id: ID!) { deletePolicy(id: $id) }"
    data = await gql(delete, {"id": other["id"]}, token=org_admin.token)
    assert data["deletePolicy"] == other["id"]
    assert not await CertificatePolicy.exists(id=other["id"])
    with pytest.raises(GraphQLError) as caught:
        await gql(delete, {"id": other["id"]}, token=org_admin.token)
    assert caught.value.codes == ["NOT_FOUND"]
    actions = await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).values_list("action", flat=True)
    assert "policy.update" in actions and "policy.delete" in actions


async def test_policy_in_use_cannot_be_deleted(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    profile = await create_profile(gql, org_admin.token, root["id"], policy["id"])
    delete = "mutation($id: ID!) { deletePolicy(id: $id) }"
    with pytest.raises(GraphQLError) as caught:
        await gql(delete, {"id": policy["id"]}, token=org_admin.token)
    assert caught.value.codes == ["INVALID_STATE"]
    assert "tls-server" in caught.value.errors[0]["message"]
    # Still refused after the profile is (soft) deleted: its certificates point at it.
    await gql(
        "mutation($id: ID!) { deleteProfile(id: $id) { id } }", {"id": profile["id"]}, token=org_admin.token
    )
    with pytest.raises(GraphQLError) as caught:
        await gql(delete, {"id": policy["id"]}, token=org_admin.token)
    assert caught.value.codes == ["INVALID_STATE"]
    assert await CertificatePolicy.exists(id=policy["id"])


async def test_create_profile(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    profile = await create_profile(
        gql, org_admin.token, root["id"], policy["id"], defaultKeyUsages=["digitalsignature"]
    )
    assert profile["defaultValidity"] == "30d"
    assert profile["defaultKeyAlgorithm"] == "EC_P256"
    assert profile["defaultKeyUsages"] == ["digitalSignature"]  # normalized
    assert profile["defaultExtendedKeyUsages"] == ["serverAuth"]
    assert profile["defaultSubject"] == [{"type": "O", "value": "Acme"}]
    assert profile["renewBeforeDays"] == 10
    assert profile["ca"] == {"id": root["id"], "status": "ACTIVE"}
    assert profile["policy"] == {"id": policy["id"], "name": "tls-server"}
    assert profile["deletedAt"] is None
    assert await AuditEvent.filter(action="profile.create", resource_id=profile["id"]).exists()


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"defaultValidity": "1y"}, "INVALID_INPUT", "defaultValidity"),  # above the policy's 90d
        ({"defaultValidity": "soon"}, "INVALID_INPUT", "defaultValidity"),
        ({"defaultKeyAlgorithm": "EC_P384"}, "INVALID_INPUT", "defaultKeyAlgorithm"),  # not in the policy
        ({"defaultExtendedKeyUsages": ["clientAuth"]}, "INVALID_INPUT", "defaultExtendedKeyUsages"),
        ({"defaultKeyUsages": ["keyEncipherment"]}, "INVALID_INPUT", "defaultKeyUsages"),  # not for EC keys
        ({"defaultKeyUsages": ["sparkle"]}, "INVALID_INPUT", "defaultKeyUsages"),
        ({"defaultSubject": [{"type": "XX", "value": "y"}]}, "INVALID_INPUT", "defaultSubject"),
        ({"renewBeforeDays": -1}, "INVALID_INPUT", "renewBeforeDays"),
        ({"name": " "}, "INVALID_INPUT", "name"),
        ({"caId": str(uuid.uuid4())}, "NOT_FOUND", "caId"),
        ({"policyId": str(uuid.uuid4())}, "NOT_FOUND", "policyId"),
        ({"caId": "junk"}, "NOT_FOUND", None),
    ],
)
async def test_bad_profile_input(
    gql: GraphQL, org_admin: OrgAdmin, overrides: dict[str, Any], code: str, field: str | None
) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    with pytest.raises(GraphQLError) as caught:
        await create_profile(gql, org_admin.token, root["id"], policy["id"], **overrides)
    assert caught.value.codes == [code]
    if field is not None:
        assert caught.value.errors[0]["extensions"]["field"] == field
    assert await CertificateProfile.all().count() == 0


async def test_policy_refusing_the_ca_signature_algorithm(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token, keyAlgorithm="ED25519")
    policy = await create_policy(gql, org_admin.token, rules={"signatureAlgorithms": ["ECDSA_WITH_SHA256"]})
    with pytest.raises(GraphQLError) as caught:
        await create_profile(gql, org_admin.token, root["id"], policy["id"])
    assert caught.value.errors[0]["extensions"]["field"] == "caId"
    assert "ED25519" in caught.value.errors[0]["message"]


async def test_duplicate_profile_name(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    await create_profile(gql, org_admin.token, root["id"], policy["id"])
    with pytest.raises(GraphQLError) as caught:
        await create_profile(gql, org_admin.token, root["id"], policy["id"])
    assert caught.value.codes == ["CONFLICT"]


async def test_update_profile_rechecks_the_policy(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    loose = await create_policy(gql, org_admin.token, name="loose", rules={})
    profile = await create_profile(gql, org_admin.token, root["id"], policy["id"])
    update = (
        "mutation($id: ID!, $input: UpdateProfileInput!) "
        f"{{ updateProfile(id: $id, input: $input) {{ {PROFILE_FIELDS} }} }}"
    )
    with pytest.raises(GraphQLError) as caught:
        await gql(update, {"id": profile["id"], "input": {"defaultValidity": "180d"}}, token=org_admin.token)
    assert caught.value.errors[0]["extensions"]["field"] == "defaultValidity"
    # With a policy that allows it, the same validity goes through.
    data = await gql(
        update,
        {
            "id": profile["id"],
            "input": {"defaultValidity": "180d", "policyId": loose["id"], "renewBeforeDays": 20},
        },
        token=org_admin.token,
    )
    updated = data["updateProfile"]
    assert updated["defaultValidity"] == "180d" and updated["renewBeforeDays"] == 20
    assert updated["policy"]["id"] == loose["id"]
    assert updated["defaultSubject"] == [{"type": "O", "value": "Acme"}]  # untouched
    assert await AuditEvent.filter(action="profile.update", resource_id=profile["id"]).exists()


async def test_delete_profile_is_soft(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    profile = await create_profile(gql, org_admin.token, root["id"], policy["id"])
    data = await gql(
        "mutation($id: ID!) { deleteProfile(id: $id) { id deletedAt } }",
        {"id": profile["id"]},
        token=org_admin.token,
    )
    assert data["deleteProfile"]["deletedAt"] is not None
    row = await CertificateProfile.get(id=profile["id"])
    with pytest.raises(InvalidState, match="deleted"):
        core_profile.require_usable(row)
    listed = await gql("{ certificateProfiles { id } }", token=org_admin.token)
    assert listed["certificateProfiles"] == []
    listed = await gql("{ certificateProfiles(includeDeleted: true) { id } }", token=org_admin.token)
    assert listed["certificateProfiles"] == [{"id": profile["id"]}]
    one = await gql(
        "query($id: ID!) { certificateProfile(id: $id) { name deletedAt } }",
        {"id": profile["id"]},
        token=org_admin.token,
    )
    assert one["certificateProfile"]["deletedAt"] is not None
    for mutation in (
        "mutation($id: ID!) { deleteProfile(id: $id) { id } }",
        'mutation($id: ID!) { updateProfile(id: $id, input: {description: "x"}) { id } }',
    ):
        with pytest.raises(GraphQLError) as caught:
            await gql(mutation, {"id": profile["id"]}, token=org_admin.token)
        assert caught.value.codes == ["INVALID_STATE"]


async def test_profile_of_a_disabled_ca_still_exists(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    profile = await create_profile(gql, org_admin.token, root["id"], policy["id"])
    await gql("mutation($id: ID!) { disableCa(id: $id) { id } }", {"id": root["id"]}, token=org_admin.token)
    data = await gql(
        "query($id: ID!) { certificateProfile(id: $id) { ca { status } } }",
        {"id": profile["id"]},
        token=org_admin.token,
    )
    assert data["certificateProfile"]["ca"]["status"] == "DISABLED"


async def test_member_reads_metadata_but_cannot_manage(gql: GraphQL, org_admin: OrgAdmin) -> None:
    root = await create_root(gql, org_admin.token)
    policy = await create_policy(gql, org_admin.token)
    profile = await create_profile(gql, org_admin.token, root["id"], policy["id"])
    token = await member_token(org_admin.organization_id)
    data = await gql(
        f"{{ certificatePolicies {{ {POLICY_FIELDS} }} certificateProfiles {{ {PROFILE_FIELDS} }} }}",
        token=token,
    )
    assert data["certificatePolicies"][0]["rules"] == policy["rules"]
    assert data["certificateProfiles"][0]["id"] == profile["id"]
    ids = {"p": policy["id"], "f": profile["id"], "c": root["id"]}
    mutations = [
        'mutation { createPolicy(input: {name: "x"}) { id } }',
        'mutation($p: ID!) { updatePolicy(id: $p, input: {description: "x"}) { id } }',
        "mutation($p: ID!) { deletePolicy(id: $p) }",
        'mutation($c: ID!, $p: ID!) { createProfile(input: {name: "x", caId: $c, policyId: $p}) { id } }',
        'mutation($f: ID!) { updateProfile(id: $f, input: {description: "x"}) { id } }',
        "mutation($f: ID!) { deleteProfile(id: $f) { id } }",
    ]
    for query in mutations:
        variables = {k: v for k, v in ids.items() if f"${k}" in query}
        with pytest.raises(GraphQLError) as caught:
            await gql(query, variables, token=token)
        assert caught.value.codes == ["FORBIDDEN"], query
        with pytest.raises(GraphQLError) as caught:
            await gql(query, variables, token=None)
        assert caught.value.codes == ["UNAUTHENTICATED"], query
    assert await CertificatePolicy.all().count() == 1
    assert (await CertificateProfile.get(id=profile["id"])).deleted_at is None
    with pytest.raises(GraphQLError) as caught:
        await gql("{ certificatePolicies { id } }", token=None)
    assert caught.value.codes == ["UNAUTHENTICATED"]
