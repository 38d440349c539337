"""Step 8 of the migration (SPEC §7, §13): each old URL beside its new one, and the agent's configuration.

URLs come from the protocol modules (core.acme_account, core.est, core.scep), which give a legacy container's
attachment its legacy form and an Application's the application form. Before an application exists its id
is not known: its URLs carry the placeholder `{applicationId}` until the plan is applied.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.acme_account import acme_url
from core.est import est_alias_url, est_url
from core.scep import scep_url
from models import Application, ApplicationProfile
from models.enums import ApplicationRole, PrincipalKind

if TYPE_CHECKING:
    from core.legacy.migration import MemberStep, ProfileStep
    from core.legacy.migration_review import LegacyState

PLACEHOLDER = "{applicationId}"
_PLACEHOLDER_ID = uuid.UUID(int=0)


def _pair(application: Application, profile_id: uuid.UUID) -> ApplicationProfile:
    """An unsaved attachment, only to ask the protocol modules for its URLs."""
    attachment = ApplicationProfile(application_id=application.id, profile_id=profile_id)
    attachment.application = application
    return attachment


def _urls(attachment: ApplicationProfile, method: str) -> str:
    if method == "acme":
        return acme_url(attachment, "directory")
    if method == "est":
        return est_url(attachment)
    return scep_url(attachment)


def client_guide(
    state: LegacyState,
    applications: Sequence[tuple[str, Application | None, Sequence[ProfileStep], Sequence[MemberStep]]],
) -> list[dict[str, Any]]:
    """One entry per (application, profile, client kind): old beside new, and what the client keeps."""
    guide: list[dict[str, Any]] = []
    project = state.project
    for name, application, profiles, members in applications:
        pending = application is None
        target = application or Application(
            id=_PLACEHOLDER_ID, organization_id=project.organization_id, name=name, legacy=False
        )
        app_id = str(target.id) if not pending else PLACEHOLDER
        operators = [
            m.legacy.principal.name
            for m in members
            if m.legacy.principal.kind == PrincipalKind.MACHINE
            and m.role in (ApplicationRole.ADMIN, ApplicationRole.OPERATOR)
        ]
        for step in profiles:
            legacy = step.legacy
            if legacy.attachment is None:
                continue
            profile = legacy.profile
            old_pair = _pair(state.container, profile.id)
            new_pair = _pair(target, profile.id)
            base = {
                "application": name,
                "applicationId": None if pending else app_id,
                "profile": legacy.slug,
                "profileName": profile.name,
                "profileId": str(profile.id),
                "pending": pending,
            }

            for method in legacy.methods:
                if method == "api":
                    guide.append(
                        {
                            **base,
                            "method": "api",
                            "old": f"applicationId: {project.id} (legacy project {project.slug!r}), "
                            f"profileId: {profile.id}",
                            "new": f"applicationId: {app_id}, profileId: {profile.id}",
                            "newLabel": None,
                            "credentials": "the same API tokens; their principals become application members",
                            "notes": [
                                "issueCertificate / renewCertificate take the application's id instead of "
                                "the legacy project's; certificates issued before stay in the legacy project "
                                "and keep renewing there",
                            ],
                        }
                    )
                    guide.append(
                        {
                            **base,
                            "method": "agent",
                            "old": f"profile-name: {profile.name}",
                            "new": f"application-name: {name}\nprofile-name: {profile.name}",
                            "newLabel": None,
                            "credentials": "the same token-file / token-env",
                            "notes": [
                                "keyward agent --config agent.yaml: add application-name (the profile is "
                                "named as before)",
                                "the agent's machine identity must be an Operator or Admin of the application"
                                + (f": migrated as such: {', '.join(operators)}" if operators else ""),
                                "certificates on disk stay until their renew window; the agent then issues "
                                "their successors in the application",
                            ],
                        }
                    )
                    continue
                old = _urls(old_pair, method)
                new = _urls(new_pair, method)
                if pending:
                    new = new.replace(str(_PLACEHOLDER_ID), PLACEHOLDER)
                entry: dict[str, Any] = {**base, "method": method, "old": old, "new": new, "newLabel": None}
                if method == "acme":
                    entry["credentials"] = "the same EAB key id and HMAC key"
                    entry["notes"] = [
                        "point the client at the new directory (certbot --server, lego --server, "
                        "cert-manager spec.acme.server) and register once with the same EAB key id and "
                        "HMAC key",
                        "accounts of the legacy directory stay there",
                    ]
                elif method == "est":
                    label = est_alias_url(name, profile.name)
                    entry["newLabel"] = label
                    entry["credentials"] = "the same username and passphrase, and the same bootstrap CA"
                    entry["notes"] = [
                        "clients append /cacerts, /simpleenroll, /simplereenroll, /csrattrs, /serverkeygen",
                        "certificates issued on the legacy URL re-enroll there; enroll once on the new URL",
                    ]
                    if label is None:
                        entry["notes"].append(
                            f"no single-label URL: the profile name {profile.name!r} does not fit one "
                            "label (a Product Admin can rename the profile)"
                        )
                else:
                    entry["credentials"] = "the same challenge password and the same RA certificate"
                    entry["notes"] = [
                        "the RA certificate and key are the same, so clients that pinned it keep working",
                        "certificates issued on the legacy URL renew there; enroll once on the new URL",
                    ]
                guide.append(entry)
    return guide
