"""Shared by the legacy protocol tests: a legacy project with one ACME, one EST and one SCEP profile, and
the legacy URLs (`/acme/profiles/{id}/directory`, `/.well-known/est/{id}/{op}`, `/scep/{id}/pkiclient.exe`)
with the credentials its export carried."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import runtime
from core.authz import Actor
from core.legacy.importer import import_legacy_project
from models import Certificate, CertificateAuthority, CertificateProfile, LegacyResource
from models.enums import EnrollmentMethod
from pki.certificate import certificate_pem, load_certificate

# The real-client helpers of the ACME, EST and SCEP test directories, reused (imported, not copied): the
# test modules import this one first.
TESTS = Path(__file__).resolve().parents[1]
for _directory in ("acme", "est", "scep"):
    if str(TESTS / _directory) not in sys.path:
        sys.path.append(str(TESTS / _directory))


@dataclass
class LegacyScene:
    """A legacy project (its container application) and the credentials its profiles were exported with."""

    organization_id: uuid.UUID
    project_id: uuid.UUID  # == the container application's id
    profile_ids: dict[str, uuid.UUID]  # enrollment method ("acme", "est", "scep") -> legacy profile id
    eab_kid: str
    eab_hmac_key: str  # base64url, as certbot and lego take it
    est_username: str
    est_passphrase: str
    scep_challenge: str

    def acme_directory(self, base: str | None = None) -> str:
        return f"{self.acme_base(base)}directory"

    def acme_base(self, base: str | None = None) -> str:
        return f"{_base(base)}/acme/profiles/{self.profile_ids['acme']}/"

    def est_url(self, op: str, base: str | None = None) -> str:
        return f"{_base(base)}/.well-known/est/{self.profile_ids['est']}/{op}"

    def scep_url(self, base: str | None = None) -> str:
        return f"{_base(base)}/scep/{self.profile_ids['scep']}/pkiclient.exe"

    async def profile(self, method: str) -> CertificateProfile:
        return await CertificateProfile.get(id=self.profile_ids[method]).prefetch_related("ca")

    async def ca_chain_pem(self, method: str) -> str:
        """The issuing CA of a legacy profile and every CA above it, PEM (what a TLS server trusts)."""
        ca: CertificateAuthority | None = (await self.profile(method)).ca
        text = ""
        while ca is not None:
            text += certificate_pem(load_certificate(ca.certificate_pem or ""))
            ca = await CertificateAuthority.get_or_none(id=ca.parent_id) if ca.parent_id else None
        return text


def _base(base: str | None) -> str:
    return (base or runtime.settings().public_url).rstrip("/")


async def assert_in_legacy_inventory(
    scene: LegacyScene, serial: str, method: EnrollmentMethod
) -> Certificate:
    """The certificate is the legacy project's: in its container, marked legacy, issued by `method`."""
    row = await Certificate.get(serial_hex=serial)
    assert row.application_id == scene.project_id
    assert row.legacy_project_id == scene.project_id
    assert row.enrollment_method == method
    return row


# ---------------------------------------------------------------- the legacy project


EXAMPLE = TESTS.parent / "examples" / "legacy-export.json"


def example_document() -> dict[str, Any]:
    return dict(json.loads(EXAMPLE.read_text()))


def _enrollment(document: dict[str, Any], method: str) -> tuple[str, dict[str, Any]]:
    """The slug and settings of the example's first profile enrolling by `method`."""
    for profile in document["profiles"]:
        if profile["enrollment"]["method"] == method:
            return profile["slug"], profile["enrollment"][method]
    raise AssertionError(f"the example export has no {method} profile")


async def legacy_scene(organization_id: uuid.UUID) -> LegacyScene:
    """The example export imported into the organization, as a customer's legacy project arrives."""
    document = example_document()
    report = await import_legacy_project(document, actor=Actor.system(organization_id, "tests"))
    slugs = {
        row.slug: row.target_id
        for row in await LegacyResource.filter(project_id=report.project_id, kind="profile")
    }
    (acme_slug, acme), (est_slug, est), (scep_slug, scep) = (
        _enrollment(document, method) for method in ("acme", "est", "scep")
    )
    return LegacyScene(
        organization_id=organization_id,
        project_id=report.project_id,
        profile_ids={"acme": slugs[acme_slug], "est": slugs[est_slug], "scep": slugs[scep_slug]},
        eab_kid=acme["eabKid"],
        eab_hmac_key=acme["eabHmacKey"],
        est_username=est["username"],
        est_passphrase=est["passphrase"],
        scep_challenge=scep["challenge"],
    )
