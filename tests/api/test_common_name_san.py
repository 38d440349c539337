"""A request with only a common name still yields a certificate TLS clients accept: the CN becomes a SAN."""

from __future__ import annotations

import factories
import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin
from cryptography.hazmat.primitives import serialization
from factories import ISSUE, Scene, issue_input

from pki.csr import build_csr
from pki.key import KeyAlgorithm, generate_private_key
from pki.name import build_name


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> Scene:
    return await factories.make_scene(org_admin.organization_id, org_admin.token)


async def test_host_name_common_name_becomes_a_dns_san(gql: GraphQL, scene: Scene) -> None:
    data = await gql(ISSUE, issue_input(scene, commonName="web.example.com"), token=scene.admin_token)
    assert data["issueCertificate"]["certificate"]["sans"] == [{"type": "DNS", "value": "web.example.com"}]


async def test_address_common_name_becomes_an_ip_san(gql: GraphQL, org_admin: OrgAdmin) -> None:
    rules = {"subject": [{"type": "CN"}], "sans": [{"type": "IP", "allowed": ["10.0.0.0/8"]}]}
    scene = await factories.make_scene(org_admin.organization_id, org_admin.token, rules=rules)
    data = await gql(ISSUE, issue_input(scene, commonName="10.1.2.3"), token=scene.admin_token)
    assert data["issueCertificate"]["certificate"]["sans"] == [{"type": "IP", "value": "10.1.2.3"}]


async def test_csr_without_sans_gets_its_common_name(gql: GraphQL, scene: Scene) -> None:
    key = generate_private_key(KeyAlgorithm.EC_P256)
    csr = build_csr(key=key, subject=build_name([("CN", "csr.example.com")]), sans=[])
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    data = await gql(ISSUE, issue_input(scene, csr=pem), token=scene.admin_token)
    assert data["issueCertificate"]["certificate"]["sans"] == [{"type": "DNS", "value": "csr.example.com"}]


async def test_the_derived_san_is_checked_by_the_policy(gql: GraphQL, org_admin: OrgAdmin) -> None:
    rules = {"subject": [{"type": "CN"}], "sans": [{"type": "DNS", "allowed": ["**.example.com"]}]}
    scene = await factories.make_scene(org_admin.organization_id, org_admin.token, rules=rules)
    with pytest.raises(GraphQLError) as caught:
        await gql(ISSUE, issue_input(scene, commonName="web.example.org"), token=scene.admin_token)
    assert caught.value.codes == ["POLICY_VIOLATION"]
    assert "web.example.org" in caught.value.errors[0]["message"]


async def test_a_descriptive_common_name_adds_no_san(gql: GraphQL, org_admin: OrgAdmin) -> None:
    rules = {"subject": [{"type": "CN"}], "sans": None}
    scene = await factories.make_scene(org_admin.organization_id, org_admin.token, rules=rules)
    data = await gql(ISSUE, issue_input(scene, commonName="Payments Service"), token=scene.admin_token)
    assert data["issueCertificate"]["certificate"]["sans"] == []
