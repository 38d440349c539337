"""Shared by the migration assistant's tests: the example legacy export imported, its members given API
tokens, the plan and apply documents, and the real-client helpers of tests/acme, est, scep and worker (put on
sys.path here, imported by the tests, never copied)."""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import GraphQL

from core import authn, runtime
from core.authz import Actor
from core.legacy.importer import import_legacy_project
from models import (
    Application,
    ApplicationProfile,
    CertificateProfile,
    LegacyProject,
    Principal,
)
from models.enums import TokenKind

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
for _directory in ("acme", "est", "scep", "worker"):
    if str(TESTS / _directory) not in sys.path:
        sys.path.append(str(TESTS / _directory))

EXAMPLE = ROOT / "examples" / "legacy-export.json"

PLAN = """
query($id: ID!, $options: MigrationOptionsInput) {
  migrationPlan(legacyProjectId: $id, options: $options) {
    projectId projectSlug projectName fingerprint review document
    applications {
      name status applicationId pending
      profiles { slug profileId profileName methods status }
      alerts { sourceId name profiles status }
      syncs { sourceId name profiles status }
      approvalPolicies { sourceId name profiles status steps { approvers required } }
      members { principalId name kind legacyRole customRole role grantProductMember status }
    }
    warnings { kind application subject message }
    conflicts { kind application subject message }
    clientGuide {
      application applicationId profile profileName profileId method old new newLabel keeps notes pending
    }
  }
}
"""
APPLY = """
mutation($plan: JSON!, $dryRun: Boolean, $disable: Boolean) {
  applyMigration(plan: $plan, dryRun: $dryRun, disableLegacyCopies: $disable) {
    projectId dryRun changed message
    applications { name status applicationId created errorCode message }
    disabledLegacyAlerts disabledLegacySyncs
    clientGuide { application applicationId profile profileId method old new newLabel keeps pending }
    warnings { kind message }
    conflicts { kind message }
  }
}
"""


def example_document() -> dict[str, Any]:
    """The example export (a fresh copy: tests may change it before importing)."""
    return copy.deepcopy(json.loads(EXAMPLE.read_text()))


def example_secrets() -> dict[str, str]:
    """The credentials the example export carries in clear, as its clients hold them."""
    profiles = {p["slug"]: p["enrollment"] for p in example_document()["profiles"]}
    acme, est, scep = (
        profiles["web-acme"]["acme"],
        profiles["web-est"]["est"],
        profiles["devices-scep"]["scep"],
    )
    return {
        "eab_kid": acme["eabKid"],
        "eab_hmac_key": acme["eabHmacKey"],
        "est_username": est["username"],
        "est_passphrase": est["passphrase"],
        "scep_challenge": scep["challenge"],
    }


@dataclass
class Imported:
    organization_id: uuid.UUID
    project: LegacyProject
    profile_ids: dict[str, uuid.UUID]  # legacy profile slug -> profile id

    @property
    def project_id(self) -> uuid.UUID:
        return self.project.id


async def import_example(organization_id: uuid.UUID, document: dict[str, Any] | None = None) -> Imported:
    """core.legacy.importer with the example export (or a changed copy of it)."""
    report = await import_legacy_project(
        document if document is not None else example_document(), actor=Actor.system(organization_id, "tests")
    )
    project = await LegacyProject.get(id=report.project_id)
    profiles = await CertificateProfile.filter(legacy_project_id=project.id)
    prefix = f"{project.slug}-"
    return Imported(organization_id, project, {p.name.removeprefix(prefix): p.id for p in profiles})


async def token_for(*, email: str | None = None, name: str | None = None) -> str:
    """An API token for an imported member (users by email, machines by name)."""
    principal = await (Principal.get(email=email) if email else Principal.get(name=name))
    token, _ = await authn.create_token(principal=principal, kind=TokenKind.API, name="migration-tests")
    return token


async def plan(gql: GraphQL, token: str, project_id: uuid.UUID, **options: Any) -> dict[str, Any]:
    variables: dict[str, Any] = {"id": str(project_id)}
    if options:
        variables["options"] = options
    return dict((await gql(PLAN, variables, token=token))["migrationPlan"])


async def apply(
    gql: GraphQL, token: str, document: dict[str, Any], *, dry_run: bool = False, disable: bool = False
) -> dict[str, Any]:
    data = await gql(APPLY, {"plan": document, "dryRun": dry_run, "disable": disable}, token=token)
    return dict(data["applyMigration"])


async def migrated(organization_id: uuid.UUID, name: str = "payments") -> Application:
    return await Application.get(organization_id=organization_id, name=name, legacy=False)


async def attachment_of(application: Application, profile_id: uuid.UUID) -> ApplicationProfile:
    return await ApplicationProfile.get(application_id=application.id, profile_id=profile_id)


def guide_entry(guide: list[dict[str, Any]], profile: str, method: str) -> dict[str, Any]:
    (entry,) = [g for g in guide if g["profile"] == profile and g["method"] == method]
    return entry


def cli_environment(directory: Path) -> dict[str, str]:
    """`keyward` as a subprocess against the test database, with the test KEK in a file."""
    directory.mkdir(parents=True, exist_ok=True)
    kek = directory / "kek.key"
    if not kek.exists():
        fd = os.open(kek, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(runtime.kek()).decode() + "\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    environment.update(
        KEYWARD_DATABASE_URL=runtime.settings().database_url,
        KEYWARD_KEK_FILE=str(kek),
        KEYWARD_PUBLIC_URL=runtime.settings().public_url,
        KEYWARD_LOG_LEVEL="warning",
    )
    return environment


def keyward_binary() -> str:
    return str(Path(sys.executable).parent / "keyward")
