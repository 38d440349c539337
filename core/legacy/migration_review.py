"""Step 1 of the migration (SPEC §13): what a legacy project holds, and a fingerprint of it.

`load_legacy_state` reads the project's profiles with their enrollment, alerts, syncs, approval policies,
custom roles and members. `state_entries` turns that into one entry per item: the non-secret fields a
reader may see, a digest over everything the migration copies (secrets only as hashes of their sealed or
hashed form), and an `activity` flag (an alert's is_active, a sync's auto-sync) kept apart because the
migration itself may switch it off. A plan carries the entries; `compare_states` tells what changed since.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.est import client_ca_subjects
from models import (
    Alert,
    AlertChannel,
    Application,
    ApplicationProfile,
    ApprovalPolicy,
    ApprovalPolicyAttachment,
    CertificateProfile,
    LegacyMembership,
    LegacyProject,
    LegacyResource,
    LegacyRole,
    Principal,
)
from models.enums import CaStatus
from models.sync import Sync

METHODS = ("api", "acme", "est", "scep")


@dataclass
class LegacyProfile:
    slug: str
    profile: CertificateProfile  # ca loaded
    attachment: ApplicationProfile | None  # on the project's container

    @property
    def methods(self) -> list[str]:
        """The enrollment methods enabled on the legacy attachment (a legacy profile has one)."""
        a = self.attachment
        if a is None:
            return []
        enabled = {"api": a.api_enabled, "acme": a.acme_enabled, "est": a.est_enabled, "scep": a.scep_enabled}
        return [m for m in METHODS if enabled[m]]

    @property
    def method(self) -> str | None:
        methods = self.methods
        # ACME, EST and SCEP name the profile's protocol; API alone otherwise.
        return next((m for m in methods if m != "api"), methods[0] if methods else None)

    @property
    def ca_status(self) -> str:
        return CaStatus(self.profile.ca.status).value


@dataclass
class LegacyPolicy:
    policy: ApprovalPolicy
    profile_ids: list[uuid.UUID]


@dataclass
class LegacyMember:
    membership: LegacyMembership
    principal: Principal
    custom_role: LegacyRole | None


@dataclass
class LegacyState:
    project: LegacyProject
    container: Application
    profiles: list[LegacyProfile]
    alerts: list[Alert]
    syncs: list[Sync]
    policies: list[LegacyPolicy]
    roles: list[LegacyRole]
    members: list[LegacyMember]
    slug_of_profile: dict[uuid.UUID, str] = field(default_factory=dict)
    channels: dict[uuid.UUID, list[AlertChannel]] = field(default_factory=dict)  # per alert, in order

    def profile_slugs(self, profile_ids: Collection[Any]) -> list[str]:
        """Slugs of the given profile ids (ids of no legacy profile are left out), in order."""
        slugs = []
        for raw in profile_ids:
            try:
                slug = self.slug_of_profile.get(uuid.UUID(str(raw)))
            except ValueError:
                slug = None
            if slug is not None and slug not in slugs:
                slugs.append(slug)
        return slugs


def _profile_slug(
    project: LegacyProject, profile: CertificateProfile, resources: Mapping[uuid.UUID, str]
) -> str:
    if profile.id in resources:
        return resources[profile.id]
    prefix = f"{project.slug}-"
    return profile.name[len(prefix) :] if profile.name.startswith(prefix) else profile.name


async def load_legacy_state(project: LegacyProject) -> LegacyState:
    container = await Application.get(id=project.application_id)
    resources = {
        r.target_id: r.slug for r in await LegacyResource.filter(project_id=project.id, kind="profile")
    }
    attachments = {a.profile_id: a for a in await ApplicationProfile.filter(application_id=container.id)}
    profiles = [
        LegacyProfile(_profile_slug(project, p, resources), p, attachments.get(p.id))
        for p in await CertificateProfile.filter(legacy_project_id=project.id).prefetch_related("ca")
    ]
    # Profiles attached to the container without being legacy profiles (an existing product profile the
    # export referenced) belong to the project too.
    known = {p.profile.id for p in profiles}
    extra = [pid for pid in attachments if pid not in known]
    if extra:
        for p in await CertificateProfile.filter(id__in=extra).prefetch_related("ca"):
            profiles.append(LegacyProfile(_profile_slug(project, p, resources), p, attachments[p.id]))
    profiles.sort(key=lambda item: item.slug)
    alerts = list(await Alert.filter(application_id=container.id).order_by("name", "id"))
    channels: dict[uuid.UUID, list[AlertChannel]] = {a.id: [] for a in alerts}
    for channel in await AlertChannel.filter(alert_id__in=list(channels)).order_by("position", "id"):
        channels[channel.alert_id].append(channel)
    syncs = list(await Sync.filter(application_id=container.id).order_by("name", "id"))
    policy_rows = list(await ApprovalPolicy.filter(application_id=container.id).order_by("name", "id"))
    coverage: dict[uuid.UUID, list[uuid.UUID]] = {}
    by_attachment = {a.id: a.profile_id for a in attachments.values()}
    for row in await ApprovalPolicyAttachment.filter(policy_id__in=[p.id for p in policy_rows]):
        if row.attachment_id in by_attachment:
            coverage.setdefault(row.policy_id, []).append(by_attachment[row.attachment_id])
    policies = [LegacyPolicy(p, coverage.get(p.id, [])) for p in policy_rows]
    roles = list(await LegacyRole.filter(project_id=project.id).order_by("slug"))
    roles_by_id = {r.id: r for r in roles}
    memberships = await LegacyMembership.filter(project_id=project.id).prefetch_related("principal")
    members = [
        LegacyMember(m, m.principal, roles_by_id.get(m.custom_role_id) if m.custom_role_id else None)
        for m in memberships
    ]
    members.sort(key=lambda m: (m.principal.name.lower(), str(m.principal.id)))
    state = LegacyState(project, container, profiles, alerts, syncs, policies, roles, members)
    state.slug_of_profile = {p.profile.id: p.slug for p in profiles}
    state.channels = channels
    return state


# ---------------------------------------------------------------- state entries and the fingerprint


def _sha(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = bytes(part) if isinstance(part, bytes | bytearray | memoryview) else str(part).encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def enrollment_fields(attachment: ApplicationProfile | None) -> dict[str, Any]:
    """The non-secret enrollment settings of an attachment, per method."""
    if attachment is None:
        return {}
    return {
        "api": {
            "enabled": attachment.api_enabled,
            "autoRenew": attachment.api_auto_renew,
            "renewBeforeDays": attachment.api_renew_before_days,
        },
        "acme": {"enabled": attachment.acme_enabled, "eabRequired": attachment.acme_eab_required},
        "est": {
            "enabled": attachment.est_enabled,
            "username": attachment.est_username,
            "passphraseSet": attachment.est_passphrase_hash is not None,
            "clientCaSubjects": client_ca_subjects(attachment),
        },
        "scep": {
            "enabled": attachment.scep_enabled,
            "challengeMode": attachment.scep_challenge_mode,
            "challengeTtlSeconds": attachment.scep_challenge_ttl_seconds,
            "maxPendingChallenges": attachment.scep_max_pending_challenges,
            "includeCa": attachment.scep_include_ca,
            "allowRenewal": attachment.scep_allow_renewal,
        },
    }


def _enrollment_secrets(attachment: ApplicationProfile | None) -> str:
    if attachment is None:
        return _sha("none")
    return _sha(
        attachment.acme_eab_kid or "",
        bytes(attachment.acme_eab_hmac_encrypted or b""),
        attachment.est_passphrase_hash or "",
        attachment.est_client_ca_pem or "",
        attachment.scep_static_challenge_hash or "",
        attachment.scep_ra_certificate_pem or "",
        bytes(attachment.scep_ra_key_encrypted or b""),
    )


def alert_fields(state: LegacyState, alert: Alert) -> dict[str, Any]:
    channels = state.channels.get(alert.id, [])
    return {
        "name": alert.name,
        "eventTypes": list(alert.event_types or []),
        "thresholdsDays": list(alert.thresholds_days or []),
        "dailyRepeat": alert.daily_repeat,
        "profiles": state.profile_slugs(alert.profile_ids or []),
        "namePattern": alert.name_pattern,
        "channels": [{"type": c.type.value, "config": dict(c.config or {})} for c in channels],
    }


def _channel_secrets(channels: Collection[AlertChannel]) -> str:
    return _sha(*(bytes(c.encrypted_secret or b"") for c in channels))


def sync_fields(state: LegacyState, sync: Sync) -> dict[str, Any]:
    return {
        "name": sync.name,
        "destination": sync.destination.value,
        "connection": dict(sync.connection or {}),
        "profiles": state.profile_slugs(sync.profile_ids or []),
        "certificateIds": [str(c) for c in sync.certificate_ids or []],
        "metadata": dict(sync.metadata_filter or {}),
        "removeOnRevoke": sync.remove_on_revoke,
        "removeOnExpiry": sync.remove_on_expiry,
        "includeRoot": sync.include_root,
        "includePrivateKey": sync.include_private_key,
        "nameTemplate": sync.name_template,
        "format": sync.format.value,
        "maxConcurrency": sync.max_concurrency,
    }


def policy_fields(state: LegacyState, item: LegacyPolicy) -> dict[str, Any]:
    policy = item.policy
    return {
        "name": policy.name,
        "profiles": state.profile_slugs(item.profile_ids),
        "steps": [
            {"approvers": [str(a) for a in step.get("approvers", [])], "required": step.get("required")}
            for step in policy.steps or []
        ],
        "maxRequestTtlSeconds": policy.max_request_ttl_seconds,
        "bypassMachineIdentities": policy.bypass_machine_identities,
        "isActive": policy.is_active,
    }


def member_fields(member: LegacyMember) -> dict[str, Any]:
    return {
        "name": member.principal.name,
        "kind": member.principal.kind.value,
        "email": member.principal.email,
        "active": member.principal.is_active,
        "role": member.membership.role,
        "customRole": member.custom_role.slug if member.custom_role else None,
    }


def profile_fields(item: LegacyProfile) -> dict[str, Any]:
    return {
        "name": item.profile.name,
        "profileId": str(item.profile.id),
        "deleted": item.profile.deleted_at is not None,
        "ca": item.profile.ca.name,
        "caStatus": item.ca_status,
        "methods": item.methods,
        "settings": enrollment_fields(item.attachment),
    }


def state_entries(state: LegacyState) -> dict[str, dict[str, Any]]:
    """One entry per item of the project: kind, label, fields (no secret), digest, and activity."""
    entries: dict[str, dict[str, Any]] = {}

    def add(
        key: str, kind: str, label: str, fields: dict[str, Any], secrets: str = "", activity: Any = None
    ) -> None:
        entries[key] = {
            "kind": kind,
            "label": label,
            "fields": fields,
            "digest": _sha(_canonical(fields), secrets),
            "activity": activity,
        }

    project = state.project
    add("project", "project", project.slug, {"slug": project.slug, "name": project.name})
    for item in state.profiles:
        add(
            f"profile:{item.profile.id}",
            "profile",
            item.slug,
            profile_fields(item),
            _enrollment_secrets(item.attachment),
        )
    for alert in state.alerts:
        add(
            f"alert:{alert.id}",
            "alert",
            alert.name,
            alert_fields(state, alert),
            _channel_secrets(state.channels.get(alert.id, [])),
            alert.is_active,
        )
    for sync in state.syncs:
        add(
            f"sync:{sync.id}",
            "sync",
            sync.name,
            sync_fields(state, sync),
            _sha(bytes(sync.encrypted_credentials or b"")),
            sync.auto_sync,
        )
    for policy in state.policies:
        add(
            f"approvalPolicy:{policy.policy.id}",
            "approval policy",
            policy.policy.name,
            policy_fields(state, policy),
        )
    for role in state.roles:
        add(
            f"role:{role.id}",
            "role",
            role.slug,
            {
                "slug": role.slug,
                "name": role.name,
                "permissions": list(role.permissions or []),
                "conditions": dict(role.conditions or {}),
            },
        )
    for member in state.members:
        add(f"member:{member.principal.id}", "member", member.principal.name, member_fields(member))
    return entries


def fingerprint(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 over every entry's digest and activity, in key order."""
    return _sha(
        _canonical(
            {key: [entry.get("digest"), entry.get("activity")] for key, entry in sorted(entries.items())}
        )
    )


# ---------------------------------------------------------------- what changed


def _describe_activity(kind: str, label: str, before: Any, after: Any) -> str:
    if kind == "sync":
        return f"sync {label!r}: auto-sync turned {'on' if after else 'off'}"
    return f"{kind} {label!r} was {'enabled' if after else 'disabled'}"


def _describe_change(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    old_fields = before.get("fields") or {}
    new_fields = after.get("fields") or {}
    label = str(before.get("label"))
    name_key = "slug" if kind in ("project", "role") else "name"
    messages = []
    if kind not in ("profile", "member") and old_fields.get(name_key) != new_fields.get(name_key):
        messages.append(f"{kind} {label!r} renamed to {new_fields.get(name_key)!r}")
    changed = sorted(
        key
        for key in set(old_fields) | set(new_fields)
        if old_fields.get(key) != new_fields.get(key) and not (key == name_key and messages)
    )
    if changed:
        messages.append(f"{kind} {label!r} changed: {', '.join(changed)}")
    if not messages:
        what = "credentials" if kind == "sync" else "secrets" if kind in ("alert", "profile") else "contents"
        messages.append(f"{kind} {label!r}: its {what} changed")
    return messages


def compare_states(
    planned: Mapping[str, Any], current: Mapping[str, Mapping[str, Any]], migrated: Collection[str]
) -> list[str]:
    """What changed between the plan's entries and now; `migrated` are keys already carried over (their
    activity may have been switched off by the migration itself, so it is not compared)."""
    changes: list[str] = []
    for key in sorted(set(planned) | set(current)):
        before = planned.get(key)
        after = current.get(key)
        if not isinstance(before, Mapping):
            assert after is not None
            changes.append(f"{after['kind']} {after['label']!r} added")
            continue
        if after is None:
            changes.append(f"{before.get('kind')} {before.get('label')!r} removed")
            continue
        if before.get("digest") != after["digest"]:
            changes.extend(_describe_change(after["kind"], before, after))
        if before.get("activity") != after["activity"] and key not in migrated:
            changes.append(
                _describe_activity(
                    after["kind"], str(after["label"]), before.get("activity"), after["activity"]
                )
            )
    return changes
