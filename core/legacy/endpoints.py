"""Legacy protocol URLs (SPEC §12): a legacy URL names only a profile id, and resolves to that legacy
profile's attachment on its project's container.

`/acme/profiles/{profileId}/...`, `/.well-known/est/{profileId}/{op}` and `/scep/{profileId}/pkiclient.exe`
reach only legacy containers; the application forms reach only Applications. The protocol modules (core
.acme_account, core.est, core.scep) build their URLs in the form of the attachment they serve, so every URL
a server hands out keeps the client on the form it came in on.
"""

from __future__ import annotations

import uuid

from models import Application, ApplicationProfile, CertificateProfile


def profile_uuid(text: str) -> uuid.UUID | None:
    """The profile id of a legacy URL, or None when the text is no UUID (then nothing is found there)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def is_legacy_attachment(attachment: ApplicationProfile) -> bool:
    """Whether the attachment is a legacy profile's on its project's container (served on legacy URLs).

    Decided from what is already loaded, without a query: the application (its `legacy` flag) or else the
    profile (a legacy profile's `legacy_project_id` is its container's id). With neither, False.
    """
    application = getattr(attachment, "_application", None)
    if isinstance(application, Application):
        return bool(application.legacy)
    profile = getattr(attachment, "_profile", None)
    if isinstance(profile, CertificateProfile):
        return profile.legacy_project_id == attachment.application_id
    return False
