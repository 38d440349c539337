"""A bad export is refused whole: every problem named with its JSON path, and nothing written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import OrgAdmin
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from legacy_import_support import certificate_index, example, paths, profile_index, refused, run_import

from core.authz import Actor
from core.bootstrap import init_organization
from core.profile import ProfileDefaults, create_profile
from models import CertificateProfile, LegacyProject


def self_signed_leaf(common_name: str = "stray.payments.example.com") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def corrupt(pem: str) -> str:
    lines = pem.splitlines()
    lines[3] = "!!!!" + lines[3][4:]
    return "\n".join(lines) + "\n"


async def test_an_unknown_format_version_is_named_and_nothing_else_is_read(org_admin: OrgAdmin) -> None:
    document = example()
    document["formatVersion"] = "2"
    document["profiles"] = "not even a list"
    problems = await refused(document, org_admin.organization_id)
    assert problems == [{"path": "$.formatVersion", "message": "unknown format version '2'; supported: 1"}]


async def test_every_schema_violation_has_its_path(org_admin: OrgAdmin) -> None:
    document = example()
    document["surprise"] = True
    del document["project"]["name"]
    document["profiles"][0]["slug"] = "Web API"
    document["members"][2]["role"] = "owner"
    document["members"][3]["email"] = "bot@payments.example.com"  # a machine identity has no email
    document["certificates"][1]["status"] = "lost"
    document["certificateAuthorities"][0]["existingCaName"] = "Corp Root"  # both a key and a reference
    est = profile_index(document, "web-est")
    document["profiles"][est]["enrollment"]["est"]["passphraseHash"] = "$argon2id$v=19$m=65536,t=3,p=4$x$y"
    document["alerts"][0]["channels"] = []
    problems = await refused(document, org_admin.organization_id)
    found = paths(problems)
    assert {
        "$",
        "$.project",
        "$.profiles[0].slug",
        "$.members[2].role",
        "$.members[3]",
        "$.certificates[1].status",
        "$.certificateAuthorities[0]",
        f"$.profiles[{est}].enrollment.est",
        "$.alerts[0].channels",
    } <= found
    messages = {p["path"]: p["message"] for p in problems}
    assert "surprise" in messages["$"] and "'name' is a required property" in messages["$.project"]
    assert messages["$.profiles[0].slug"].startswith("must be a slug")
    assert "not both" in messages["$.certificateAuthorities[0]"]
    assert "PRIVATE KEY" not in str(problems)  # messages never echo the values


async def test_dangling_references_duplicates_and_bad_certificates_are_all_reported(
    org_admin: OrgAdmin,
) -> None:
    document = example()
    api = profile_index(document, "web-api")
    acme = profile_index(document, "web-acme")
    scep = profile_index(document, "devices-scep")
    gateway = certificate_index(document, "gateway")
    checkout = certificate_index(document, "checkout")
    www = certificate_index(document, "www")
    terminal = certificate_index(document, "terminal-gw")
    device = certificate_index(document, "device-42")
    ca_key = document["certificateAuthorities"][0]["privateKeyPem"]
    # Dangling references
    document["profiles"][acme]["ca"] = "no-such-ca"
    document["profiles"][scep]["policy"] = "no-such-policy"
    document["certificates"][www]["profile"] = "no-such-profile"
    document["alerts"][0]["profiles"] = ["web-api", "no-such-profile"]
    document["syncs"][0]["profiles"] = ["gone"]
    document["syncs"][0]["certificates"] = ["gateway", "no-such-certificate"]
    document["approvalPolicies"][0]["profiles"] = ["web-api", "ghost"]
    document["approvalPolicies"][0]["steps"][0]["approvers"] = [
        "alice@payments.example.com",
        "mallory@example.com",
    ]
    document["members"][4]["customRole"] = "no-such-role"
    document["roles"][0]["conditions"]["profileSlugs"] = ["web-api", "nope"]
    # Duplicates
    document["profiles"].append(dict(document["profiles"][api]))
    document["certificates"].append(dict(document["certificates"][checkout]))
    document["alerts"].append(dict(document["alerts"][0]))
    # Certificates: corrupt PEM, a key of another certificate, one the profile's CA never issued
    document["certificates"][terminal]["certificatePem"] = corrupt(
        document["certificates"][terminal]["certificatePem"]
    )
    document["certificates"][gateway]["privateKeyPem"] = ca_key
    document["certificates"][device]["certificatePem"] = self_signed_leaf()
    document["certificates"][checkout]["privateKeyPem"] = corrupt(ca_key)
    # A viewer cannot approve
    document["approvalPolicies"][0]["steps"].append({"approvers": ["victor@payments.example.com"]})
    problems = await refused(document, org_admin.organization_id)
    found = paths(problems)
    expected = {
        f"$.profiles[{acme}].ca",
        f"$.profiles[{scep}].policy",
        f"$.certificates[{www}].profile",
        "$.alerts[0].profiles[1]",
        "$.syncs[0].profiles[0]",
        "$.syncs[0].certificates[1]",
        "$.approvalPolicies[0].profiles[1]",
        "$.approvalPolicies[0].steps[0].approvers[1]",
        "$.members[4].customRole",
        "$.roles[0].conditions.profileSlugs[1]",
        "$.profiles[4].slug",
        "$.certificates[5].slug",
        "$.alerts[1].name",
        f"$.certificates[{terminal}].certificatePem",
        f"$.certificates[{gateway}].privateKeyPem",
        f"$.certificates[{device}].certificatePem",
        f"$.certificates[{checkout}].privateKeyPem",
        "$.approvalPolicies[0].steps[1].approvers[0]",
    }
    assert expected <= found, expected - found
    messages = {p["path"]: p["message"] for p in problems}
    assert "corrupt PEM" in messages[f"$.certificates[{terminal}].certificatePem"]
    assert "does not match" in messages[f"$.certificates[{gateway}].privateKeyPem"]
    assert (
        "not issued by certificate authority 'payments-root'"
        in messages[f"$.certificates[{device}].certificatePem"]
    )
    assert "unknown certificate authority 'no-such-ca'" in messages[f"$.profiles[{acme}].ca"]
    assert "duplicate profile slug 'web-api'" in messages["$.profiles[4].slug"]
    assert "cannot decide approvals" in messages["$.approvalPolicies[0].steps[1].approvers[0]"]


async def test_service_validators_report_at_the_items_path(org_admin: OrgAdmin) -> None:
    document = example()
    est = profile_index(document, "web-est")
    scep = profile_index(document, "devices-scep")
    api = profile_index(document, "web-api")
    document["profiles"][est]["enrollment"]["est"]["username"] = "has:colon"
    document["profiles"][scep]["enrollment"]["scep"]["challenge"] = " leading space"
    document["profiles"][api]["enrollment"]["api"]["renewBeforeDays"] = 800  # longer than the validity
    document["profiles"][api]["defaultValidity"] = "2y"  # more than the policy's 397d
    document["policies"][1]["rules"]["sans"][0]["type"] = "PHONE"
    document["alerts"][0]["channels"][0]["config"]["url"] = "http://127.0.0.1/hook"
    document["alerts"][0]["thresholds"] = ["soon"]
    document["syncs"][0]["nameTemplate"] = "{{commonName}}"
    document["syncs"][0]["credentials"] = {}
    document["approvalPolicies"][0]["maxRequestTtl"] = "90d"
    document["certificates"][0]["revocationReason"] = "superseded"  # on an active certificate
    problems = await refused(document, org_admin.organization_id)
    found = paths(problems)
    assert {
        f"$.profiles[{est}].enrollment.est.username",
        f"$.profiles[{scep}].enrollment.scep.challenge",
        f"$.profiles[{api}].enrollment.api.renewBeforeDays",
        f"$.profiles[{api}].defaultValidity",
        "$.policies[1].rules.sans[0].type",
        "$.alerts[0].channels[0].config.url",
        "$.alerts[0].thresholds",
        "$.syncs[0].nameTemplate",
        "$.syncs[0].credentials.signingSecret",
        "$.approvalPolicies[0].maxRequestTtl",
        "$.certificates[0].status",
    } <= found, found


async def test_a_missing_ca_reference_and_a_foreign_user_are_problems(org_admin: OrgAdmin) -> None:
    await init_organization(org_name="globex", admin_email="bob@payments.example.com")
    document = example()
    document["certificateAuthorities"].append({"slug": "corp", "existingCaName": "Corp Root CA"})
    problems = await refused(document, org_admin.organization_id)
    assert paths(problems) == {"$.certificateAuthorities[1].existingCaName", "$.members[1].email"}
    messages = {p["path"]: p["message"] for p in problems}
    assert (
        "no certificate authority named 'Corp Root CA'"
        in messages["$.certificateAuthorities[1].existingCaName"]
    )
    assert "another organization" in messages["$.members[1].email"]


async def test_a_taken_product_name_is_refused(org_admin: OrgAdmin) -> None:
    from factories import make_pki

    from models import Organization

    pki = await make_pki(await Organization.get(id=org_admin.organization_id))
    await create_profile(
        actor=Actor.system(org_admin.organization_id),
        name="payments-web-est",
        ca_id=pki.intermediate.id,
        policy_id=pki.policy.id,
        defaults=ProfileDefaults(),
    )
    document = example()
    problems = await refused(document, org_admin.organization_id)
    est = profile_index(document, "web-est")
    assert paths(problems) == {f"$.profiles[{est}].slug"}
    assert "a profile named 'payments-web-est' already exists" in problems[0]["message"]
    assert await CertificateProfile.filter(name__startswith="payments-").count() == 1
    assert not await LegacyProject.exists()


async def test_not_an_object(org_admin: OrgAdmin) -> None:
    problems = await refused([1, 2, 3], org_admin.organization_id)
    assert problems == [{"path": "$", "message": "must be a JSON object"}]


async def test_the_problems_of_a_valid_file_are_none(org_admin: OrgAdmin) -> None:
    report = await run_import(example(), org_admin.organization_id)
    assert report.created["certificate"] == 5
