"""Applications over GraphQL: create/update/delete, the visible list, members and attached profiles."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Cast, GraphQL, GraphQLError, OrgAdmin, create_principal_with_token, create_profile_rows

from models import (
    Application,
    ApplicationMembership,
    ApplicationProfile,
    AuditEvent,
    Certificate,
    Principal,
)
from models.enums import CertificateSource, CertificateStatus, EnrollmentMethod

CREATE = (
    "mutation($input: CreateApplicationInput!) { createApplication(input: $input) { id name description } }"
)
GET = """query($id: ID!) { application(id: $id) {
  id name description createdAt updatedAt
  members { id role createdAt principal { id kind name email } }
  profiles { id createdAt profile { id name } api { enabled autoRenew renewBeforeDays } }
} }"""
LIST = """query($first: Int!, $after: String, $q: String) {
  applications(first: $first, after: $after, nameContains: $q) {
    edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }"""
ADD = """mutation($input: AddApplicationMemberInput!) {
  addApplicationMember(input: $input) { id role principal { id name } } }"""
ATTACH = """mutation($input: AttachProfileInput!) {
  attachProfile(input: $input) { id profile { id name } api { enabled autoRenew renewBeforeDays } } }"""
UPDATE_ATTACHED = """mutation($input: UpdateAttachedProfileInput!) {
  updateAttachedProfile(input: $input) { api { enabled autoRenew renewBeforeDays } } }"""


async def codes_of(call: Any) -> list[str]:
    with pytest.raises(GraphQLError) as caught:
        await call
    return caught.value.codes


async def create_app(gql: GraphQL, token: str, name: str, description: str = "") -> str:
    data = await gql(CREATE, {"input": {"name": name, "description": description}}, token=token)
    return str(data["createApplication"]["id"])


async def make_certificate(
    application_id: uuid.UUID | str, status: CertificateStatus, *, expires_in: timedelta = timedelta(days=30)
) -> Certificate:
    app = await Application.get(id=application_id)
    now = datetime.now(UTC)
    return await Certificate.create(
        organization_id=app.organization_id,
        application_id=app.id,
        serial_hex=uuid.uuid4().hex,
        subject_dn="CN=a.example.com",
        key_algorithm="EC_P256",
        signature_algorithm="ecdsa-with-SHA256",
        not_before=now - timedelta(days=1),
        not_after=now + expires_in,
        status=status,
        source=CertificateSource.ISSUED,
        enrollment_method=EnrollmentMethod.API,
        certificate_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        fingerprint_sha256=uuid.uuid4().hex * 2,
    )


# Applications ------------------------------------------------------------------------------------------


async def test_create_and_read_an_application(gql: GraphQL, org_admin: OrgAdmin) -> None:
    app_id = await create_app(gql, org_admin.token, "payments-api", "  card payments  ")
    data = await gql(GET, {"id": app_id}, token=org_admin.token)
    app = data["application"]
    assert (app["name"], app["description"], app["members"], app["profiles"]) == (
        "payments-api",
        "card payments",
        [],
        [],
    )
    event = await AuditEvent.get(action="application.create")
    assert event.application_id == uuid.UUID(app_id)
    assert event.actor_id == org_admin.principal_id


@pytest.mark.parametrize(
    "name",
    ["", "Payments", "payments_api", "-payments", "payments-", "a" * 64, "pay ments", "pay.ments", "päy"],
)
async def test_application_names_are_slugs(gql: GraphQL, org_admin: OrgAdmin, name: str) -> None:
    with pytest.raises(GraphQLError) as caught:
        await create_app(gql, org_admin.token, name)
    assert caught.value.codes == ["INVALID_INPUT"]
    assert "lowercase letters, digits and hyphens" in caught.value.errors[0]["message"]
    assert await Application.all().count() == 0


async def test_longest_and_shortest_names_are_accepted(gql: GraphQL, org_admin: OrgAdmin) -> None:
    await create_app(gql, org_admin.token, "a" * 63)
    await create_app(gql, org_admin.token, "7")
    assert await Application.all().count() == 2


async def test_names_are_unique_per_organization(gql: GraphQL, cast: Cast) -> None:
    admin = cast.token("product_admin")
    assert admin is not None
    assert await codes_of(create_app(gql, admin, "payments-api")) == ["CONFLICT"]
    foreign = cast.token("foreign")
    assert foreign is not None
    await create_app(gql, foreign, "payments-api")  # another organization may use the name
    assert await Application.filter(name="payments-api").count() == 2


async def test_update_by_application_admin(gql: GraphQL, cast: Cast) -> None:
    update = """mutation($id: ID!, $input: UpdateApplicationInput!) {
      updateApplication(id: $id, input: $input) { name description } }"""
    data = await gql(
        update,
        {"id": str(cast.application_id), "input": {"description": "cards"}},
        token=cast.token("app_admin"),
    )
    assert data["updateApplication"] == {"name": "payments-api", "description": "cards"}
    data = await gql(
        update, {"id": str(cast.application_id), "input": {"name": "payments"}}, token=cast.token("app_admin")
    )
    assert data["updateApplication"] == {"name": "payments", "description": "cards"}
    admin = cast.token("product_admin")
    assert admin is not None
    await create_app(gql, admin, "ledger")
    codes = await codes_of(
        gql(update, {"id": str(cast.application_id), "input": {"name": "ledger"}}, token=admin)
    )
    assert codes == ["CONFLICT"]
    codes = await codes_of(
        gql(update, {"id": str(cast.application_id), "input": {"name": "Ledger!"}}, token=admin)
    )
    assert codes == ["INVALID_INPUT"]
    assert (await Application.get(id=cast.application_id)).name == "payments"


async def test_list_shows_only_visible_applications(gql: GraphQL, cast: Cast) -> None:
    admin = cast.token("product_admin")
    assert admin is not None
    for name in ("ledger", "mobile-backend", "payments-web"):
        await create_app(gql, admin, name)

    async def names(role: str, q: str | None = None) -> list[str]:
        data = await gql(LIST, {"first": 50, "q": q}, token=cast.token(role))
        return [edge["node"]["name"] for edge in data["applications"]["edges"]]

    assert await names("product_admin") == ["payments-api", "ledger", "mobile-backend", "payments-web"]
    assert await names("product_admin", "PAYMENTS") == ["payments-api", "payments-web"]
    assert await names("app_auditor") == ["payments-api"]
    assert await names("app_auditor", "web") == []
    assert await names("outsider") == []
    assert await names("foreign") == ["globex-api"]


async def test_list_pages_with_cursors(gql: GraphQL, org_admin: OrgAdmin) -> None:
    created = [f"app-{i}" for i in range(7)]
    for name in created:
        await create_app(gql, org_admin.token, name)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = await gql(LIST, {"first": 3, "after": after}, token=org_admin.token)
        connection = data["applications"]
        seen += [edge["node"]["name"] for edge in connection["edges"]]
        pages += 1
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
        assert after == connection["edges"][-1]["cursor"]
    assert (seen, pages) == (created, 3)
    assert await codes_of(gql(LIST, {"first": 3, "after": "garbage"}, token=org_admin.token)) == [
        "INVALID_INPUT"
    ]
    assert await codes_of(gql(LIST, {"first": 0}, token=org_admin.token)) == ["INVALID_INPUT"]
    forged = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|not-a-uuid").decode()
    assert await codes_of(gql(LIST, {"first": 3, "after": forged}, token=org_admin.token)) == [
        "INVALID_INPUT"
    ]


async def test_unknown_malformed_and_foreign_ids_are_not_found(gql: GraphQL, cast: Cast) -> None:
    for app_id in (str(uuid.uuid4()), "not-a-uuid", str(cast.other_application_id)):
        assert await codes_of(gql(GET, {"id": app_id}, token=cast.token("product_admin"))) == ["NOT_FOUND"]
    missing = await codes_of(gql(GET, {"id": str(uuid.uuid4())}, token=cast.token("outsider")))
    hidden = await codes_of(gql(GET, {"id": str(cast.application_id)}, token=cast.token("outsider")))
    assert missing == hidden == ["NOT_FOUND"]


async def test_delete_refused_while_certificates_are_valid(gql: GraphQL, cast: Cast) -> None:
    delete = "mutation($id: ID!) { deleteApplication(id: $id) }"
    admin = cast.token("product_admin")
    profile = await create_profile_rows(cast.organization_id)
    await ApplicationProfile.create(application_id=cast.application_id, profile=profile)
    active = await make_certificate(cast.application_id, CertificateStatus.ACTIVE)
    renewed = await make_certificate(cast.application_id, CertificateStatus.RENEWED)
    revoked = await make_certificate(cast.application_id, CertificateStatus.REVOKED)
    expired = await make_certificate(
        cast.application_id, CertificateStatus.ACTIVE, expires_in=-timedelta(days=1)
    )

    with pytest.raises(GraphQLError) as caught:
        await gql(delete, {"id": str(cast.application_id)}, token=admin)
    assert caught.value.codes == ["INVALID_STATE"]
    assert "2 valid certificate(s)" in caught.value.errors[0]["message"]

    await Certificate.filter(id__in=[active.id, renewed.id]).update(status=CertificateStatus.REVOKED)
    data = await gql(delete, {"id": str(cast.application_id)}, token=admin)
    assert data["deleteApplication"] == str(cast.application_id)
    assert not await Application.exists(id=cast.application_id)
    assert not await ApplicationMembership.exists(application_id=cast.application_id)
    assert not await ApplicationProfile.exists(application_id=cast.application_id)
    # Revoked and expired certificates outlive the application, so CRL and OCSP keep answering for them.
    kept = await Certificate.filter(id__in=[active.id, renewed.id, revoked.id, expired.id])
    assert len(kept) == 4 and all(c.application_id is None for c in kept)
    event = await AuditEvent.get(action="application.delete")
    assert event.details["members_removed"] == 3 and event.details["certificates_kept"] == 4
    assert await codes_of(gql(GET, {"id": str(cast.application_id)}, token=admin)) == ["NOT_FOUND"]


async def test_failed_mutations_are_audited(gql: GraphQL, cast: Cast) -> None:
    await codes_of(create_app(gql, cast.token("product_admin") or "", "Not A Slug"))
    event = await AuditEvent.get(action="mutation.createApplication")
    assert event.outcome == "failure" and event.details["code"] == "INVALID_INPUT"
    assert event.actor_id == cast.principal_ids["product_admin"]


# Members -----------------------------------------------------------------------------------------------


async def test_members_lifecycle(gql: GraphQL, cast: Cast) -> None:
    app_admin = cast.token("app_admin")
    newcomer_id, newcomer_token = await create_principal_with_token(
        cast.organization_id, "new@acme.test", "member"
    )
    # Before: the newcomer cannot see the application.
    assert await codes_of(gql(GET, {"id": str(cast.application_id)}, token=newcomer_token)) == ["NOT_FOUND"]

    data = await gql(
        ADD,
        {
            "input": {
                "applicationId": str(cast.application_id),
                "principalId": str(newcomer_id),
                "role": "AUDITOR",
            }
        },
        token=app_admin,
    )
    assert data["addApplicationMember"]["role"] == "AUDITOR"
    assert data["addApplicationMember"]["principal"] == {"id": str(newcomer_id), "name": "new@acme.test"}
    members = (await gql(GET, {"id": str(cast.application_id)}, token=newcomer_token))["application"][
        "members"
    ]
    assert {(m["principal"]["email"], m["role"], m["principal"]["kind"]) for m in members} == {
        ("app_admin@acme.test", "ADMIN", "USER"),
        ("app_operator@acme.test", "OPERATOR", "USER"),
        ("app_auditor@acme.test", "AUDITOR", "USER"),
        ("new@acme.test", "AUDITOR", "USER"),
    }

    change = """mutation($input: ChangeApplicationMemberRoleInput!) {
      changeApplicationMemberRole(input: $input) { role principal { id } } }"""
    data = await gql(
        change,
        {
            "input": {
                "applicationId": str(cast.application_id),
                "principalId": str(newcomer_id),
                "role": "OPERATOR",
            }
        },
        token=app_admin,
    )
    assert data["changeApplicationMemberRole"] == {"role": "OPERATOR", "principal": {"id": str(newcomer_id)}}
    membership = await ApplicationMembership.get(application_id=cast.application_id, principal_id=newcomer_id)
    assert membership.role == "operator"

    remove = "mutation($a: ID!, $p: ID!) { removeApplicationMember(applicationId: $a, principalId: $p) }"
    data = await gql(remove, {"a": str(cast.application_id), "p": str(newcomer_id)}, token=app_admin)
    assert data["removeApplicationMember"] == str(membership.id)
    assert await codes_of(gql(GET, {"id": str(cast.application_id)}, token=newcomer_token)) == ["NOT_FOUND"]
    assert await codes_of(
        gql(remove, {"a": str(cast.application_id), "p": str(newcomer_id)}, token=app_admin)
    ) == ["NOT_FOUND"]
    actions = [e.action for e in await AuditEvent.filter(application_id=cast.application_id).order_by("id")]
    assert actions == [
        "application_member.add",
        "application_member.change_role",
        "application_member.remove",
    ]


async def test_member_candidates_must_belong_to_the_organization(gql: GraphQL, cast: Cast) -> None:
    def add(principal_id: Any, role: str = "OPERATOR") -> Any:
        variables = {
            "input": {
                "applicationId": str(cast.application_id),
                "principalId": str(principal_id),
                "role": role,
            }
        }
        return gql(ADD, variables, token=cast.token("product_admin"))

    assert await codes_of(add(cast.principal_ids["foreign"])) == ["NOT_FOUND"]
    assert await codes_of(add(uuid.uuid4())) == ["NOT_FOUND"]
    assert await codes_of(add("nope")) == ["NOT_FOUND"]
    bare = await Principal.create(
        organization_id=cast.organization_id, kind="user", name="bare", email="b@acme.test"
    )
    with pytest.raises(GraphQLError) as caught:
        await add(bare.id)
    assert caught.value.codes == ["INVALID_INPUT"]
    assert "product membership" in caught.value.errors[0]["message"]
    assert await codes_of(add(cast.principal_ids["app_operator"])) == ["CONFLICT"]
    assert await ApplicationMembership.filter(application_id=cast.application_id).count() == 3


async def test_machine_identities_can_be_members(gql: GraphQL, cast: Cast) -> None:
    robot_id, robot_token = await create_principal_with_token(
        cast.organization_id, "deployer", "member", kind="machine"
    )
    await gql(
        ADD,
        {
            "input": {
                "applicationId": str(cast.application_id),
                "principalId": str(robot_id),
                "role": "OPERATOR",
            }
        },
        token=cast.token("product_admin"),
    )
    data = await gql(GET, {"id": str(cast.application_id)}, token=robot_token)
    robot = [m for m in data["application"]["members"] if m["principal"]["id"] == str(robot_id)]
    assert robot[0]["principal"] == {
        "id": str(robot_id),
        "kind": "MACHINE",
        "name": "deployer",
        "email": None,
    }


# Attached profiles -------------------------------------------------------------------------------------


async def test_attach_update_detach(gql: GraphQL, cast: Cast) -> None:
    admin = cast.token("app_admin")
    profile = await create_profile_rows(cast.organization_id, default_validity="90d", renew_before_days=30)
    target = {"applicationId": str(cast.application_id), "profileId": str(profile.id)}

    data = await gql(ATTACH, {"input": target}, token=admin)
    assert data["attachProfile"]["profile"] == {"id": str(profile.id), "name": "tls-server"}
    assert data["attachProfile"]["api"] == {"enabled": True, "autoRenew": False, "renewBeforeDays": None}
    assert await codes_of(gql(ATTACH, {"input": target}, token=admin)) == ["CONFLICT"]

    data = await gql(
        UPDATE_ATTACHED, {"input": {**target, "api": {"autoRenew": True, "renewBeforeDays": 20}}}, token=admin
    )
    assert data["updateAttachedProfile"]["api"] == {"enabled": True, "autoRenew": True, "renewBeforeDays": 20}
    data = await gql(UPDATE_ATTACHED, {"input": {**target, "api": {"enabled": False}}}, token=admin)
    assert data["updateAttachedProfile"]["api"] == {
        "enabled": False,
        "autoRenew": True,
        "renewBeforeDays": 20,
    }
    data = await gql(UPDATE_ATTACHED, {"input": {**target, "api": {"renewBeforeDays": None}}}, token=admin)
    assert data["updateAttachedProfile"]["api"] == {
        "enabled": False,
        "autoRenew": True,
        "renewBeforeDays": None,
    }
    for bad in (0, 90, 120):
        codes = await codes_of(
            gql(UPDATE_ATTACHED, {"input": {**target, "api": {"renewBeforeDays": bad}}}, token=admin)
        )
        assert codes == ["INVALID_INPUT"]

    read = await gql(GET, {"id": str(cast.application_id)}, token=cast.token("app_auditor"))
    assert read["application"]["profiles"][0]["api"] == {
        "enabled": False,
        "autoRenew": True,
        "renewBeforeDays": None,
    }

    certificate = await make_certificate(cast.application_id, CertificateStatus.ACTIVE)
    certificate.profile_id = profile.id
    await certificate.save()
    detach = "mutation($a: ID!, $p: ID!) { detachProfile(applicationId: $a, profileId: $p) }"
    attachment = await ApplicationProfile.get(application_id=cast.application_id, profile_id=profile.id)
    data = await gql(detach, {"a": str(cast.application_id), "p": str(profile.id)}, token=admin)
    assert data["detachProfile"] == str(attachment.id)
    assert not await ApplicationProfile.exists(id=attachment.id)
    kept = await Certificate.get(id=certificate.id)
    assert (kept.status, kept.profile_id, kept.application_id) == ("active", profile.id, cast.application_id)
    assert await codes_of(
        gql(detach, {"a": str(cast.application_id), "p": str(profile.id)}, token=admin)
    ) == ["NOT_FOUND"]
    actions = [e.action for e in await AuditEvent.filter(application_id=cast.application_id).order_by("id")]
    assert actions == ["application_profile.attach"] + ["application_profile.update"] * 3 + [
        "application_profile.detach"
    ]


async def test_attach_with_settings_and_bad_profiles(gql: GraphQL, cast: Cast) -> None:
    admin = cast.token("product_admin")
    profile = await create_profile_rows(cast.organization_id, default_validity="1y")
    data = await gql(
        ATTACH,
        {
            "input": {
                "applicationId": str(cast.application_id),
                "profileId": str(profile.id),
                "api": {"enabled": False, "autoRenew": True, "renewBeforeDays": 60},
            }
        },
        token=admin,
    )
    assert data["attachProfile"]["api"] == {"enabled": False, "autoRenew": True, "renewBeforeDays": 60}

    deleted = await create_profile_rows(cast.organization_id, "old", deleted_at=datetime.now(UTC))
    foreign = await create_profile_rows(cast.other_organization_id, "theirs")
    too_long = await create_profile_rows(cast.organization_id, "short", default_validity="24h")

    def attach(profile_id: Any, api: dict[str, Any] | None = None) -> Any:
        variables = {
            "input": {"applicationId": str(cast.application_id), "profileId": str(profile_id), "api": api}
        }
        return gql(ATTACH, variables, token=admin)

    assert await codes_of(attach(deleted.id)) == ["INVALID_STATE"]
    assert await codes_of(attach(foreign.id)) == ["NOT_FOUND"]
    assert await codes_of(attach(uuid.uuid4())) == ["NOT_FOUND"]
    assert await codes_of(attach(too_long.id, {"renewBeforeDays": 1})) == ["INVALID_INPUT"]
    assert await ApplicationProfile.filter(application_id=cast.application_id).count() == 1


async def test_application_lists_its_certificates(gql: GraphQL, cast: Cast) -> None:
    active = await make_certificate(cast.application_id, CertificateStatus.ACTIVE)
    await make_certificate(cast.application_id, CertificateStatus.REVOKED)
    query = """query($id: ID!) { application(id: $id) {
      all: certificates(first: 10) { edges { node { id } } }
      active: certificates(first: 10, filter: {status: ACTIVE}) { edges { node { id } } } } }"""
    data = (await gql(query, {"id": str(cast.application_id)}, token=cast.token("app_auditor")))[
        "application"
    ]
    assert len(data["all"]["edges"]) == 2
    assert [edge["node"]["id"] for edge in data["active"]["edges"]] == [str(active.id)]
