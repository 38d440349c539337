"""Import of a legacy project export (SPEC §12, issue #7): all or nothing, idempotent, with progress.

The export is checked whole first (core/legacy/import_document.py and the database checks below): every
problem is reported with its JSON path and nothing is written. Then one transaction creates the container
application and the legacy project, members, CAs, policies, profiles attached with their one enrollment
method, certificates, alerts, syncs and approval policies, through the same services an application uses
(as the system actor, inside `core.legacy.rules.importing()`), and a LegacyResource row per item.

Importing the same file again changes nothing (LegacyProject.source_sha256); a different file for a project
already imported is refused with what changed, never half merged.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import authz
from core.access import organization_scope
from core.authz import Actor, Permission
from core.errors import Conflict, InvalidImport
from core.legacy.import_checks import (
    parse_export,
)
from core.legacy.import_document import (
    FORMAT_VERSIONS,
    KINDS,
    ImportReport,
    ParsedExport,
    Problems,
    Progress,
    check_schema,
    container_name,
    item_key,
    json_path,
    sha256_of,
)
from core.legacy.import_writer import Writer
from core.legacy.rules import importing
from models import (
    Application,
    Certificate,
    CertificateAuthority,
    CertificatePolicy,
    CertificateProfile,
    LegacyProject,
    LegacyResource,
    Principal,
)

# Callers import these from here (the importer's API): the report, and the names of items and containers.
__all__ = ["ImportReport", "Progress", "container_name", "import_legacy_project", "item_key"]


# ---------------------------------------------------------------- the service


async def import_legacy_project(
    document: dict[str, Any], *, actor: Actor, progress: Progress | None = None
) -> ImportReport:
    """Import one legacy export; InvalidImport (problems with JSON paths) leaves the database unchanged."""
    scope = organization_scope(actor)
    for permission in (Permission.PRODUCT_MANAGE, Permission.PKI_MANAGE, Permission.APPLICATION_CREATE):
        authz.require(actor, permission, scope)
    organization_id = scope.organization_id
    if not isinstance(document, dict):
        raise InvalidImport(
            "a legacy export is a JSON object", problems=[{"path": "$", "message": "must be a JSON object"}]
        )
    version = document.get("formatVersion")
    if version not in FORMAT_VERSIONS:
        raise InvalidImport(
            f"unknown export format version {version!r}; this Keyward reads version "
            f"{', '.join(FORMAT_VERSIONS)}",
            problems=[
                {
                    "path": "$.formatVersion",
                    "message": f"unknown format version {version!r}; supported: {', '.join(FORMAT_VERSIONS)}",
                }
            ],
        )
    problems = Problems()
    bad = check_schema(document, problems)
    source_sha256 = sha256_of(document)
    project = document.get("project")
    slug = project.get("slug") if isinstance(project, dict) else None
    existing = (
        await LegacyProject.get_or_none(organization_id=organization_id, slug=slug)
        if isinstance(slug, str)
        else None
    )
    if existing is not None and existing.source_sha256 == source_sha256:
        return await _existing_report(existing)
    if existing is not None:
        if problems:
            raise _invalid(problems)
        return await _refuse_or_unchanged(existing, document)
    existing_cas = await _existing_cas(document, organization_id, bad, problems)
    parsed = parse_export(document, problems, bad, existing_cas)
    if parsed is not None:
        await _check_database(parsed, organization_id, problems)
    if problems or parsed is None:
        raise _invalid(problems)
    writer = Writer(parsed, actor, organization_id, source_sha256, progress)
    try:
        with importing():
            async with in_transaction() as conn:
                report = await writer.run(conn)
    except IntegrityError:
        # Only a concurrent import of the project (or a name taken meanwhile) gets here: nothing was kept.
        raise Conflict(
            f"legacy project {parsed.project_slug!r} or one of its names was created meanwhile; import again "
            "to see what differs"
        ) from None
    return report


def _invalid(problems: Problems) -> InvalidImport:
    return InvalidImport(
        f"the legacy export has {len(problems.items)} problem(s); nothing was imported",
        problems=problems.items,
    )


async def _existing_report(project: LegacyProject) -> ImportReport:
    kinds = await LegacyResource.filter(project_id=project.id).values_list("kind", flat=True)
    existing = {"project": 1, **Counter(str(kind) for kind in kinds)}
    return ImportReport(project_id=project.id, project_slug=project.slug, created={}, existing=existing)


async def _refuse_or_unchanged(project: LegacyProject, document: dict[str, Any]) -> ImportReport:
    """The project was imported from another file: the same items (informational fields aside) change
    nothing; any item added, changed or removed is refused, naming its path."""
    stored = {
        (str(kind), str(slug)): str(digest)
        for kind, slug, digest in await LegacyResource.filter(project_id=project.id).values_list(
            "kind", "slug", "content_sha256"
        )
    }
    problems = Problems()
    info = document["project"]
    if (
        info["name"].strip() != project.name
        or str(info.get("description") or "").strip() != project.description
    ):
        problems.add("$.project", "the project's name or description differs from the imported one")
    present: set[tuple[str, str]] = set()
    for section, (kind, _) in KINDS.items():
        for index, item in enumerate(document.get(section) or []):
            key = item_key(section, item)
            if key is None:
                continue
            present.add((kind, key))
            digest = stored.get((kind, key))
            if digest is None:
                problems.add(
                    json_path(section, index), f"{kind} {key!r} was not in the imported project: added"
                )
            elif digest != sha256_of(item):
                problems.add(
                    json_path(section, index), f"{kind} {key!r} differs from the imported one: changed"
                )
    sections = {kind: section for section, (kind, _) in KINDS.items()}
    for kind, key in sorted(set(stored) - present):
        problems.add(
            json_path(sections.get(kind, kind)), f"{kind} {key!r} was imported before and is missing now"
        )
    if not problems:
        return await _existing_report(project)
    raise InvalidImport(
        f"legacy project {project.slug!r} was already imported from a different export; nothing was changed. "
        "A re-import must be the same file: change legacy resources in Keyward itself, or migrate them to "
        "Applications",
        problems=problems.items,
    )


# ---------------------------------------------------------------- database checks (before any write)


async def _existing_cas(
    document: dict[str, Any], organization_id: uuid.UUID, bad: set[str], problems: Problems
) -> dict[str, CertificateAuthority]:
    found: dict[str, CertificateAuthority] = {}
    for index, item in enumerate(document.get("certificateAuthorities") or []):
        path = json_path("certificateAuthorities", index)
        if not isinstance(item, dict) or not isinstance(item.get("existingCaName"), str) or path in bad:
            continue
        name = item["existingCaName"].strip()
        ca = await CertificateAuthority.get_or_none(organization_id=organization_id, name=name)
        if ca is None:
            problems.add(
                f"{path}.existingCaName", f"no certificate authority named {name!r} in this organization"
            )
        elif ca.certificate_pem is None:
            problems.add(f"{path}.existingCaName", f"certificate authority {name!r} has no certificate yet")
        elif isinstance(item.get("slug"), str):
            found[item["slug"]] = ca
    return found


async def _check_database(parsed: ParsedExport, organization_id: uuid.UUID, problems: Problems) -> None:
    if await Application.exists(organization_id=organization_id, name=container_name(parsed.project_slug)):
        problems.add("$.project.slug", f"an application named {container_name(parsed.project_slug)!r} exists")
    named: list[tuple[type[Any], list[Any], str]] = [
        (
            CertificateAuthority,
            [ca for ca in parsed.cas.values() if ca.existing_name is None],
            "certificate authority",
        ),
        (CertificatePolicy, list(parsed.policies.values()), "policy"),
        (CertificateProfile, list(parsed.profiles.values()), "profile"),
    ]
    for model, items, what in named:
        names = [item.name for item in items]
        taken = set(
            await model.filter(organization_id=organization_id, name__in=names).values_list("name", flat=True)
        )
        for item in items:
            if item.name in taken:
                problems.add(
                    f"{item.path}.slug", f"a {what} named {item.name!r} already exists in this organization"
                )
    await _match_principals(parsed, organization_id, problems)
    for ca in parsed.cas.values():
        if ca.existing is None:
            continue
        mine = [c for c in parsed.certificates if parsed.profiles[c.profile_slug].data["ca"] == ca.slug]
        serials = [c.facts.serial_hex for c in mine]
        used = set(
            await Certificate.filter(ca_id=ca.existing.id, serial_hex__in=serials).values_list(
                "serial_hex", flat=True
            )
        )
        for certificate in mine:
            if certificate.facts.serial_hex in used:
                problems.add(
                    f"{certificate.path}.certificatePem",
                    f"certificate authority {ca.existing.name!r} already has a certificate with serial "
                    f"{certificate.facts.serial_hex} in Keyward",
                )


async def _match_principals(parsed: ParsedExport, organization_id: uuid.UUID, problems: Problems) -> None:
    emails = [m.email for m in parsed.members if m.email is not None]
    users = {p.email: p for p in await Principal.filter(email__in=emails)} if emails else {}
    machine_names = [m.name for m in parsed.members if m.kind == "machine"]
    machines: dict[str, list[Principal]] = {}
    if machine_names:
        for principal in await Principal.filter(
            organization_id=organization_id, kind="machine", name__in=machine_names
        ):
            machines.setdefault(principal.name, []).append(principal)
    for member in parsed.members:
        if member.kind == "user":
            user = users.get(member.email)
            if user is not None and user.organization_id != organization_id:
                problems.add(f"{member.path}.email", f"{member.email} is a user of another organization")
                continue
            member.principal = user
        else:
            found = machines.get(member.name, [])
            if len(found) > 1:
                problems.add(
                    f"{member.path}.name",
                    f"{len(found)} machine identities are named {member.name!r}; rename all but one first",
                )
                continue
            member.principal = found[0] if found else None
