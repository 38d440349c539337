"""A large export (about 2,000 certificates) imports whole, reports its progress, and counts right."""

from __future__ import annotations

from conftest import OrgAdmin
from cryptography import x509
from legacy_import_support import example, row_counts, run_import, with_many_certificates

from models import Certificate, CertificateAuthority, LegacyResource
from models.enums import CertificateStatus

BULK = 2000


async def test_two_thousand_certificates(org_admin: OrgAdmin) -> None:
    document = with_many_certificates(example(), BULK)
    total_items = sum(
        len(document[section])
        for section in (
            "roles",
            "members",
            "certificateAuthorities",
            "policies",
            "profiles",
            "certificates",
            "alerts",
            "syncs",
            "approvalPolicies",
        )
    )
    seen: list[tuple[int, int]] = []
    report = await run_import(
        document, org_admin.organization_id, progress=lambda done, total: seen.append((done, total))
    )
    assert report.created["certificate"] == BULK + 5 and report.created["profile"] == 5

    # Progress: from 0 to every item, never backwards, in steps (not one call per certificate).
    assert seen[0] == (0, total_items) and seen[-1] == (total_items, total_items)
    assert all(total == total_items for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert 10 < len(seen) < total_items

    project_id = report.project_id
    assert await Certificate.filter(legacy_project_id=project_id).count() == BULK + 5
    assert (
        await Certificate.filter(legacy_project_id=project_id, status=CertificateStatus.REVOKED).count()
        == BULK // 100 + 1
    )
    assert await LegacyResource.filter(project_id=project_id, kind="certificate").count() == BULK + 5
    ca = await CertificateAuthority.get(name="payments-payments-root")
    assert ca.crl_der is not None
    assert len(list(x509.load_der_x509_crl(bytes(ca.crl_der)))) == BULK // 100 + 1

    before = await row_counts()
    again = await run_import(document, org_admin.organization_id)
    assert again.created == {} and again.existing["certificate"] == BULK + 5
    assert await row_counts() == before
