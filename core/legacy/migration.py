"""The migration assistant (SPEC §13): a legacy project's move into Applications, the seed's eight steps.

`migration_plan` reviews the project (step 1) and proposes steps 2-8: the Applications, the profiles each
attaches with the legacy enrollment copied (the same EAB key id and HMAC key, EST username, passphrase hash
and bootstrap CA, SCEP challenge and RA certificate and key), the alerts, syncs and approval policies to
recreate, the members with their application roles, the conflicts that keep something out, and the client
update guide. The plan is a JSON document carrying a fingerprint of the project as it was reviewed.

`apply_migration` refuses a plan the project has changed since (STALE_PLAN, naming what changed), then carries
it out one transaction per application through the core services, with the caller's actor; only the copy of
credentials writes the attachment directly (they exist only sealed or hashed). LegacyMigration rows record
what each legacy item became, so a second run changes nothing. Legacy certificates stay where they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import alert as alert_service
from core import application as application_service
from core import approval as approval_service
from core import audit, authz, runtime
from core import identity as identity_service
from core import sync as sync_service
from core.authz import Actor, Permission, Scope
from core.errors import Conflict, InvalidInput, InvalidState, KeywardError, NotFound, StalePlan
from core.legacy.migration_guide import client_guide
from core.legacy.migration_review import (
    LegacyMember,
    LegacyPolicy,
    LegacyProfile,
    LegacyState,
    alert_fields,
    compare_states,
    enrollment_fields,
    fingerprint,
    load_legacy_state,
    member_fields,
    policy_fields,
    profile_fields,
    state_entries,
    sync_fields,
)
from core.legacy.migration_roles import RoleMapping, chosen_role, map_builtin_role, map_custom_role
from models import (
    Alert,
    Application,
    ApplicationMembership,
    ApplicationProfile,
    ApprovalPolicy,
    LegacyMigration,
    LegacyProject,
    ProductMembership,
)
from models.enums import ApplicationRole, AuditOutcome, ProductRole
from models.sync import Sync
from pki import sealing
from pki.errors import PkiError

DOCUMENT_FORMAT = "keyward.migration-plan/1"
MAX_APPLICATIONS = 50
# Which permission a migration needs: it creates applications (Product Admins only).
MIGRATION_PERMISSION = Permission.APPLICATION_CREATE

# LegacyMigration.source_kind values.
KIND_PROJECT = "project"  # the application created for the project (source: the project)
KIND_ATTACHMENT = "attachment"  # source: the legacy attachment on the container
KIND_ALERT = "alert"
KIND_SYNC = "sync"
KIND_POLICY = "approval_policy"
KIND_MEMBER = "member"  # source: the LegacyMembership

CREATE = "create"  # to be done
DONE = "done"  # done by an earlier run
PRESENT = "present"  # already there, put there by hand: left as it is
EXISTS = "exists"  # an application migrated before
BLOCKED = "blocked"  # an application that cannot be created (a conflict)


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class ApplicationMapping:
    name: str
    profile_slugs: tuple[str, ...]


MEMBER_ROLE_CHOICES = ("admin", "operator", "auditor", "none")


@dataclass(frozen=True)
class MigrationOptions:
    """Which applications to make and which legacy profiles each holds (empty: one named after the project),
    and application roles chosen by hand for some members (email or name -> admin|operator|auditor|none),
    which replace the computed closest role in every application of the plan."""

    applications: tuple[ApplicationMapping, ...] = ()
    member_roles: tuple[tuple[str, str], ...] = ()

    def to_document(self) -> dict[str, Any]:
        return {
            "applications": [
                {"name": m.name, "profileSlugs": list(m.profile_slugs)} for m in self.applications
            ],
            "memberRoles": [{"member": member, "role": role} for member, role in self.member_roles],
        }

    @classmethod
    def from_document(cls, value: Any) -> MigrationOptions:
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise InvalidInput("options must be an object", field="options")
        raw = value.get("applications") or []
        if not isinstance(raw, list):
            raise InvalidInput("options.applications must be a list", field="options.applications")
        mappings = []
        for index, item in enumerate(raw):
            where = f"options.applications[{index}]"
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{where} must be an object with name and profileSlugs", field=where)
            name, slugs = item.get("name"), item.get("profileSlugs")
            if not isinstance(name, str) or not isinstance(slugs, list):
                raise InvalidInput(f"{where} needs a name and a list of profileSlugs", field=where)
            if not all(isinstance(slug, str) for slug in slugs):
                raise InvalidInput(f"{where}.profileSlugs must be text", field=f"{where}.profileSlugs")
            mappings.append(ApplicationMapping(name.strip(), tuple(s.strip() for s in slugs)))
        raw_roles = value.get("memberRoles") or []
        if not isinstance(raw_roles, list):
            raise InvalidInput("options.memberRoles must be a list", field="options.memberRoles")
        roles = []
        for index, item in enumerate(raw_roles):
            where = f"options.memberRoles[{index}]"
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{where} must be an object with member and role", field=where)
            roles.append(member_role_choice(item.get("member"), item.get("role"), where))
        return cls(tuple(mappings), tuple(roles))


def member_role_choice(member: Any, role: Any, where: str) -> tuple[str, str]:
    """One hand-chosen role, checked: (member email or name, admin|operator|auditor|none)."""
    if not isinstance(member, str) or not member.strip():
        raise InvalidInput(f"{where}: name the member by email or name", field=where)
    chosen = role.strip().lower() if isinstance(role, str) else ""
    if chosen not in MEMBER_ROLE_CHOICES:
        raise InvalidInput(f"{where}: role must be one of {', '.join(MEMBER_ROLE_CHOICES)}", field=where)
    return member.strip(), chosen


def parse_mapping(items: Sequence[str], roles: Sequence[str] = ()) -> MigrationOptions:
    """`APP=profile,profile` items (the CLI's --map) and `MEMBER=ROLE` items (its --role) as options."""
    mappings = []
    for item in items:
        name, equals, slugs = item.partition("=")
        if not equals or not name.strip():
            raise InvalidInput(f"--map {item!r}: write APP=profile,profile", field="map")
        mappings.append(
            ApplicationMapping(name.strip(), tuple(s.strip() for s in slugs.split(",") if s.strip()))
        )
    chosen = []
    for item in roles:
        member, equals, role = item.rpartition("=")
        if not equals:
            raise InvalidInput(f"--role {item!r}: write MEMBER=ROLE", field="role")
        chosen.append(member_role_choice(member, role, f"--role {item!r}"))
    return MigrationOptions(tuple(mappings), tuple(chosen))


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Notice:
    """A warning (something not carried over as it was) or a conflict (something left out)."""

    kind: str
    subject: str
    message: str
    application: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "application": self.application,
            "subject": self.subject,
            "message": self.message,
        }


@dataclass
class ProfileStep:
    legacy: LegacyProfile
    status: str
    attachment: ApplicationProfile | None = None  # the application's, once done

    @property
    def source_id(self) -> uuid.UUID:
        assert self.legacy.attachment is not None
        return self.legacy.attachment.id


@dataclass
class CopyStep:
    """An alert, sync or approval policy to recreate, with its profile filter as it lands in the app."""

    kind: str
    source_id: uuid.UUID
    name: str
    profile_ids: list[uuid.UUID]
    status: str
    target_id: uuid.UUID | None = None
    steps: list[tuple[list[uuid.UUID], int]] = field(default_factory=list)  # approval policies


@dataclass
class MemberStep:
    legacy: LegacyMember
    role: ApplicationRole
    status: str
    grant_product_member: bool
    target_id: uuid.UUID | None = None


@dataclass
class ApplicationPlan:
    name: str
    status: str
    application: Application | None
    profiles: list[ProfileStep] = field(default_factory=list)
    alerts: list[CopyStep] = field(default_factory=list)
    syncs: list[CopyStep] = field(default_factory=list)
    policies: list[CopyStep] = field(default_factory=list)
    members: list[MemberStep] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """How many things a run would still do here."""
        steps: list[Any] = [*self.profiles, *self.alerts, *self.syncs, *self.policies, *self.members]
        return sum(1 for s in steps if s.status == CREATE) + (1 if self.status == CREATE else 0)


@dataclass
class MigrationPlan:
    state: LegacyState
    options: MigrationOptions
    entries: dict[str, dict[str, Any]]
    fingerprint: str
    applications: list[ApplicationPlan]
    warnings: list[Notice]
    conflicts: list[Notice]
    migrated_keys: set[str]

    @property
    def project(self) -> LegacyProject:
        return self.state.project

    def guide(self) -> list[dict[str, Any]]:
        return client_guide(
            self.state,
            [
                (a.name, a.application, a.profiles, a.members)
                for a in self.applications
                if a.status != BLOCKED
            ],
        )

    def review(self) -> dict[str, Any]:
        """Step 1: the legacy setup as it stands."""
        state = self.state
        return {
            "profiles": [{"slug": p.slug, "method": p.method, **profile_fields(p)} for p in state.profiles],
            "alerts": [
                {"id": str(a.id), "isActive": a.is_active, **alert_fields(state, a)} for a in state.alerts
            ],
            "syncs": [
                {"id": str(s.id), "autoSync": s.auto_sync, **sync_fields(state, s)} for s in state.syncs
            ],
            "approvalPolicies": [{"id": str(p.policy.id), **policy_fields(state, p)} for p in state.policies],
            "roles": [
                {
                    "slug": r.slug,
                    "name": r.name,
                    "permissions": list(r.permissions or []),
                    "conditions": dict(r.conditions or {}),
                }
                for r in state.roles
            ],
            "members": [{"principalId": str(m.principal.id), **member_fields(m)} for m in state.members],
        }

    def to_document(self) -> dict[str, Any]:
        slug = self.state.slug_of_profile
        names = {m.principal.id: m.principal.name for m in self.state.members}
        return {
            "format": DOCUMENT_FORMAT,
            "projectId": str(self.project.id),
            "projectSlug": self.project.slug,
            "projectName": self.project.name,
            "plannedAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "options": self.options.to_document(),
            "fingerprint": self.fingerprint,
            "state": self.entries,
            "review": self.review(),
            "applications": [
                {
                    "name": a.name,
                    "status": a.status,
                    "applicationId": str(a.application.id) if a.application else None,
                    "profiles": [
                        {
                            "slug": p.legacy.slug,
                            "profileId": str(p.legacy.profile.id),
                            "profileName": p.legacy.profile.name,
                            "methods": p.legacy.methods,
                            "settings": enrollment_fields(p.legacy.attachment),
                            "status": p.status,
                        }
                        for p in a.profiles
                    ],
                    "alerts": [_copy_document(s, slug) for s in a.alerts],
                    "syncs": [_copy_document(s, slug) for s in a.syncs],
                    "approvalPolicies": [
                        {
                            **_copy_document(s, slug),
                            "steps": [
                                {"approvers": [names.get(p, str(p)) for p in approvers], "required": required}
                                for approvers, required in s.steps
                            ],
                        }
                        for s in a.policies
                    ],
                    "members": [
                        {
                            "principalId": str(m.legacy.principal.id),
                            "name": m.legacy.principal.name,
                            "kind": m.legacy.principal.kind.value,
                            "legacyRole": m.legacy.membership.role,
                            "customRole": m.legacy.custom_role.slug if m.legacy.custom_role else None,
                            "role": m.role.value,
                            "grantProductMember": m.grant_product_member,
                            "status": m.status,
                        }
                        for m in a.members
                    ],
                    "pending": a.pending,
                }
                for a in self.applications
            ],
            "warnings": [n.to_document() for n in self.warnings],
            "conflicts": [n.to_document() for n in self.conflicts],
            "clientGuide": self.guide(),
        }


def _copy_document(step: CopyStep, slug: Mapping[uuid.UUID, str]) -> dict[str, Any]:
    return {
        "sourceId": str(step.source_id),
        "name": step.name,
        "profiles": [slug.get(p, str(p)) for p in step.profile_ids],
        "status": step.status,
    }


# ---------------------------------------------------------------- loading


def _require(actor: Actor) -> uuid.UUID:
    """Product Admins only (the migration creates applications); an anonymous caller is UNAUTHENTICATED."""
    authz.require(actor, Permission.SELF)
    assert actor.organization_id is not None
    authz.require(actor, MIGRATION_PERMISSION, Scope(actor.organization_id))
    return actor.organization_id


async def find_project(*, actor: Actor, reference: str) -> LegacyProject:
    """A legacy project of the actor's organization by id or by slug."""
    organization_id = _require(actor)
    project = None
    try:
        project = await LegacyProject.get_or_none(id=uuid.UUID(reference), organization_id=organization_id)
    except ValueError:
        pass
    if project is None:
        project = await LegacyProject.get_or_none(slug=reference, organization_id=organization_id)
    if project is None:
        raise NotFound(f"legacy project {reference!r} not found")
    return project


async def _load_project(actor: Actor, project_id: uuid.UUID) -> LegacyProject:
    organization_id = _require(actor)
    project = await LegacyProject.get_or_none(id=project_id, organization_id=organization_id)
    if project is None:
        raise NotFound(f"legacy project {project_id} not found")
    return project


# ---------------------------------------------------------------- planning


def _mappings(state: LegacyState, options: MigrationOptions) -> tuple[ApplicationMapping, ...]:
    slugs = [p.slug for p in state.profiles]
    if not options.applications:
        return (ApplicationMapping(state.project.slug, tuple(slugs)),)
    if len(options.applications) > MAX_APPLICATIONS:
        raise InvalidInput(f"at most {MAX_APPLICATIONS} applications per plan", field="options.applications")
    seen: set[str] = set()
    for index, mapping in enumerate(options.applications):
        where = f"options.applications[{index}]"
        if mapping.name in seen:
            raise InvalidInput(f"{where}: application {mapping.name!r} is named twice", field=f"{where}.name")
        seen.add(mapping.name)
        if not mapping.profile_slugs:
            raise InvalidInput(f"{where}: name at least one legacy profile", field=f"{where}.profileSlugs")
        unknown = [s for s in mapping.profile_slugs if s not in slugs]
        if unknown:
            raise InvalidInput(
                f"{where}: {', '.join(map(repr, unknown))} name no profile of legacy project "
                f"{state.project.slug!r} (its profiles: {', '.join(slugs) or 'none'})",
                field=f"{where}.profileSlugs",
            )
    return options.applications


async def build_plan(project: LegacyProject, options: MigrationOptions) -> MigrationPlan:
    state = await load_legacy_state(project)
    mappings = _mappings(state, options)
    entries = state_entries(state)
    rows = await LegacyMigration.filter(project_id=project.id)
    done = {(r.application_id, r.source_kind, r.source_id): r.target_id for r in rows}
    owned = {r.application_id for r in rows if r.source_kind == KIND_PROJECT}
    migrated_keys = {
        f"{'alert' if r.source_kind == KIND_ALERT else 'sync'}:{r.source_id}"
        for r in rows
        if r.source_kind in (KIND_ALERT, KIND_SYNC)
    }
    planner = _Planner(state, done, owned, _chosen_roles(state, options))
    mapped = {slug for m in mappings for slug in m.profile_slugs}
    for item in state.profiles:
        if item.slug not in mapped:
            planner.warn(
                "profile_not_mapped",
                f"profile {item.slug}",
                f"legacy profile {item.slug!r} is in none of the planned applications: it stays in the "
                "legacy project only",
            )
    applications = [await planner.application(m) for m in mappings]
    planner.unplaced_items()
    return MigrationPlan(
        state,
        options,
        entries,
        fingerprint(entries),
        applications,
        planner.warnings,
        planner.conflicts,
        migrated_keys,
    )


def _chosen_roles(state: LegacyState, options: MigrationOptions) -> dict[str, str]:
    """The hand-chosen roles by member email or name; one naming nobody in the project is refused."""
    known = {m.principal.email for m in state.members if m.principal.email} | {
        m.principal.name for m in state.members
    }
    unknown = [member for member, _ in options.member_roles if member not in known]
    if unknown:
        raise InvalidInput(
            f"options.memberRoles names {', '.join(repr(u) for u in unknown)}, not a member of legacy "
            f"project {state.project.slug!r}",
            field="options.memberRoles",
        )
    return dict(options.member_roles)


class _Planner:
    def __init__(
        self,
        state: LegacyState,
        done: dict[tuple[uuid.UUID, str, uuid.UUID], uuid.UUID],
        owned: set[uuid.UUID],
        chosen_roles: dict[str, str],
    ) -> None:
        self.state = state
        self.done = done
        self.owned = owned
        self._chosen_roles = chosen_roles
        self.warnings: list[Notice] = []
        self.conflicts: list[Notice] = []
        self.placed: set[uuid.UUID] = set()  # alerts, syncs, policies recreated somewhere
        self.left_out: dict[uuid.UUID, str] = {}  # ... or deliberately left out, with why
        # Where each one lands: (application, whether it covers every profile there).
        self.placements: dict[uuid.UUID, list[tuple[str, bool]]] = {}
        self.by_slug = {p.slug: p for p in state.profiles}

    def warn(self, kind: str, subject: str, message: str, application: str | None = None) -> None:
        self.warnings.append(Notice(kind, subject, message, application))

    def conflict(self, kind: str, subject: str, message: str, application: str | None = None) -> None:
        self.conflicts.append(Notice(kind, subject, message, application))

    def _done(self, application: Application | None, kind: str, source_id: uuid.UUID) -> uuid.UUID | None:
        if application is None:
            return None
        return self.done.get((application.id, kind, source_id))

    async def application(self, mapping: ApplicationMapping) -> ApplicationPlan:
        project = self.state.project
        name = mapping.name
        try:
            application_service.validate_name(name)
        except InvalidInput:
            self.conflict(
                "invalid_application_name",
                f"application {name}",
                f"{name!r} cannot name an application (1-63 lowercase letters, digits and hyphens): map the "
                "profiles to an application with another name",
                name,
            )
            return ApplicationPlan(name, BLOCKED, None)
        existing = await Application.get_or_none(organization_id=project.organization_id, name=name)
        status = CREATE
        if existing is not None:
            if existing.id not in self.owned:
                self.conflict(
                    "application_name_taken",
                    f"application {name}",
                    f"an application named {name!r} already exists and was not made by migrating legacy "
                    f"project {project.slug!r}: map the profiles to an application with another name",
                    name,
                )
                return ApplicationPlan(name, BLOCKED, existing)
            status = EXISTS
        plan = ApplicationPlan(name, status, existing)
        await self._profiles(plan, mapping)
        if not plan.profiles:
            self.conflict(
                "no_profiles",
                f"application {name}",
                f"none of the profiles planned for {name!r} can be attached: the application is not created",
                name,
            )
            plan.status = BLOCKED
            return plan
        attached = [p.legacy.profile.id for p in plan.profiles]
        await self._copies(plan, attached)
        await self._members(plan)
        await self._policies(plan, attached)
        return plan

    # -- step 3: profiles and their enrollment

    async def _profiles(self, plan: ApplicationPlan, mapping: ApplicationMapping) -> None:
        for slug in dict.fromkeys(mapping.profile_slugs):
            item = self.by_slug[slug]
            subject = f"profile {slug}"
            if item.profile.deleted_at is not None:
                self.conflict(
                    "profile_deleted",
                    subject,
                    f"legacy profile {slug!r} is deleted: it issues no new certificates and is not attached",
                    plan.name,
                )
                continue
            if item.ca_status != "active":
                self.conflict(
                    "profile_ca_unusable",
                    subject,
                    f"the CA {item.profile.ca.name!r} of legacy profile {slug!r} is {item.ca_status}: the "
                    "profile cannot serve; activate the CA and plan again",
                    plan.name,
                )
                continue
            if item.attachment is None:
                self.conflict(
                    "profile_without_enrollment",
                    subject,
                    f"legacy profile {slug!r} has no enrollment configuration in the project",
                    plan.name,
                )
                continue
            step = ProfileStep(item, CREATE)
            if plan.application is not None:
                target = self._done(plan.application, KIND_ATTACHMENT, item.attachment.id)
                current = await ApplicationProfile.get_or_none(
                    application_id=plan.application.id, profile_id=item.profile.id
                )
                if target is not None and current is not None:
                    step.status, step.attachment = DONE, current
                elif current is not None:
                    self.conflict(
                        "profile_already_attached",
                        subject,
                        f"profile {item.profile.name!r} is already attached to {plan.name!r} (not by the "
                        "migration): its enrollment there is left as it is",
                        plan.name,
                    )
                    continue
            if item.method == "scep" and item.attachment.scep_challenge_mode == "dynamic":
                self.warn(
                    "scep_dynamic_challenges",
                    subject,
                    f"SCEP challenges already handed out for legacy profile {slug!r} work on the legacy URL "
                    f"only; Operators generate new ones in {plan.name!r}",
                    plan.name,
                )
            plan.profiles.append(step)

    # -- steps 4 and 5: alerts and syncs

    def _landing(
        self, kind: str, name: str, source_ids: Sequence[Any], attached: Sequence[uuid.UUID], app: str
    ) -> list[uuid.UUID] | None:
        """The item's profile filter as it lands in the application; None when it does not land there."""
        if not source_ids:
            return []  # every profile: every profile of this application
        wanted = []
        for raw in source_ids:
            try:
                wanted.append(uuid.UUID(str(raw)))
            except ValueError:
                continue
        landing = [p for p in wanted if p in attached]
        if not landing:
            return None
        if len(landing) < len(wanted):
            others = [p for p in wanted if p not in attached]
            self.warn(
                "filter_split",
                f"{kind} {name}",
                f"{kind} {name!r} covers profiles of several applications: in {app!r} it covers "
                f"{', '.join(self.state.profile_slugs(landing))} only (not "
                f"{', '.join(self.state.profile_slugs(others)) or 'profiles left out'})",
                app,
            )
        return landing

    async def _copies(self, plan: ApplicationPlan, attached: list[uuid.UUID]) -> None:
        app = plan.application
        for alert in self.state.alerts:
            landing = self._landing("alert", alert.name, alert.profile_ids or [], attached, plan.name)
            if landing is None:
                continue
            step = CopyStep(KIND_ALERT, alert.id, alert.name, landing, CREATE)
            if await self._settle(step, app, Alert, plan.name):
                plan.alerts.append(step)
        for sync in self.state.syncs:
            if sync.certificate_ids:
                self.left_out[sync.id] = "certificate filter"
                continue
            landing = self._landing("sync", sync.name, sync.profile_ids or [], attached, plan.name)
            if landing is None:
                continue
            step = CopyStep(KIND_SYNC, sync.id, sync.name, landing, CREATE)
            if await self._settle(step, app, Sync, plan.name):
                plan.syncs.append(step)

    async def _settle(self, step: CopyStep, app: Application | None, model: Any, app_name: str) -> bool:
        """Done before, to do, or blocked by a same-named item made by hand (False: left out)."""
        self.placed.add(step.source_id)
        self.placements.setdefault(step.source_id, []).append((app_name, not step.profile_ids))
        target = self._done(app, step.kind, step.source_id)
        if target is not None:
            step.status, step.target_id = DONE, target
            return True
        if app is not None and await model.exists(application_id=app.id, name=step.name):
            noun = "approval policy" if step.kind == KIND_POLICY else step.kind
            self.conflict(
                "name_taken",
                f"{noun} {step.name}",
                f"{app_name!r} already has an {noun} named {step.name!r} (not made by the migration): it is "
                "not recreated there",
                app_name,
            )
            return False
        return True

    # -- step 7: members

    def _map_role(self, member: LegacyMember, plan: ApplicationPlan) -> RoleMapping:
        chosen = self._chosen_roles.get(member.principal.email or "") or self._chosen_roles.get(
            member.principal.name
        )
        if chosen is not None:
            return chosen_role(member, chosen)
        legacy_role = member.membership.role
        if legacy_role != "custom":
            return map_builtin_role(legacy_role)
        role = member.custom_role
        if role is None:
            return RoleMapping(None, notes=("its custom role no longer exists",))
        return map_custom_role(
            list(role.permissions or []),
            dict(role.conditions or {}),
            application=plan.name,
            profile_slugs=[p.legacy.slug for p in plan.profiles],
            sync_names=[s.name for s in plan.syncs],
        )

    async def _members(self, plan: ApplicationPlan) -> None:
        app = plan.application
        present = (
            {
                m.principal_id: ApplicationRole(m.role)
                for m in await ApplicationMembership.filter(application_id=app.id)
            }
            if app is not None
            else {}
        )
        product_members = set(
            await ProductMembership.filter(
                principal_id__in=[m.principal.id for m in self.state.members]
            ).values_list("principal_id", flat=True)
        )
        for member in self.state.members:
            principal = member.principal
            who = f"member {principal.name}"
            described = (
                f"custom role {member.custom_role.slug!r}"
                if member.custom_role
                else f"legacy role {member.membership.role!r}"
            )
            if not principal.is_active:
                self.warn(
                    "member_inactive",
                    who,
                    f"{principal.name!r} is deactivated: not added to {plan.name!r}",
                    plan.name,
                )
                continue
            mapping = self._map_role(member, plan)
            for permission in mapping.dropped_permissions:
                if mapping.role is not None:
                    self.warn(
                        "permission_dropped",
                        who,
                        f"{principal.name!r} ({described}) becomes {mapping.role.value.title()} of "
                        f"{plan.name!r}: legacy permission {permission!r} is not carried over",
                        plan.name,
                    )
            for gained in mapping.gained_permissions:
                self.warn(
                    "permission_gained",
                    who,
                    f"{principal.name!r} ({described}) gets the role chosen in the options in {plan.name!r} "
                    f"and gains {gained!r}, which the legacy role did not grant",
                    plan.name,
                )
            for condition in mapping.dropped_conditions:
                self.warn(
                    "condition_dropped",
                    who,
                    f"{principal.name!r} ({described}): condition {condition}",
                    plan.name,
                )
            if mapping.role is None:
                reasons = list(mapping.notes) or [
                    "no application role is fully covered by its permissions "
                    f"({', '.join(mapping.dropped_permissions) or 'none'} in {plan.name!r}), and migration "
                    "never widens access"
                ]
                self.warn(
                    "role_not_migrated",
                    who,
                    f"{principal.name!r} ({described}) is not added to {plan.name!r}: {'; '.join(reasons)}",
                    plan.name,
                )
                continue
            step = MemberStep(member, mapping.role, CREATE, principal.id not in product_members)
            target = self._done(app, KIND_MEMBER, member.membership.id)
            if target is not None:
                step.status, step.target_id = DONE, target
            elif principal.id in present:
                step.status, step.role = PRESENT, present[principal.id]
                if present[principal.id] != mapping.role:
                    self.warn(
                        "member_present",
                        who,
                        f"{principal.name!r} is already {present[principal.id].value.title()} of "
                        f"{plan.name!r}; the migration would make them {mapping.role.value.title()} and "
                        "leaves the role as it is",
                        plan.name,
                    )
            plan.members.append(step)

    # -- step 6: approval policies

    async def _policies(self, plan: ApplicationPlan, attached: list[uuid.UUID]) -> None:
        roles = {m.legacy.principal.id: m.role for m in plan.members}
        names = {m.principal.id: m.principal.name for m in self.state.members}
        legacy_active = {m.principal.id for m in self.state.members if m.principal.is_active}
        for item in self.state.policies:
            policy = item.policy
            landing = self._landing("approval policy", policy.name, item.profile_ids, attached, plan.name)
            if not landing:  # no profile of this application (a policy always names profiles)
                continue
            subject = f"approval policy {policy.name}"
            steps: list[tuple[list[uuid.UUID], int]] = []
            for index, raw in enumerate(policy.steps or []):
                approvers: list[uuid.UUID] = []
                for text in raw.get("approvers", []):
                    try:
                        principal_id = uuid.UUID(str(text))
                    except ValueError:
                        principal_id = uuid.UUID(int=0)  # names nobody: reported as no longer a member
                    label = names.get(principal_id, str(principal_id))
                    if principal_id not in legacy_active:
                        self.conflict(
                            "approver_not_member",
                            subject,
                            f"approver {label!r} of step {index + 1} of approval policy {policy.name!r} is "
                            f"no longer an active member of legacy project {self.state.project.slug!r}: "
                            "dropped from the step",
                            plan.name,
                        )
                    elif roles.get(principal_id) not in approval_service.APPROVER_ROLES:
                        became = roles.get(principal_id)
                        self.warn(
                            "approver_dropped",
                            subject,
                            f"approver {label!r} of step {index + 1} of approval policy {policy.name!r} "
                            + (f"becomes {became.value.title()}" if became else "is not migrated")
                            + f" in {plan.name!r}, who cannot approve: dropped from the step",
                            plan.name,
                        )
                    else:
                        approvers.append(principal_id)
                required = int(raw.get("required") or 1)
                if not approvers:
                    steps = []
                    break
                if required > len(approvers):
                    self.warn(
                        "approvals_lowered",
                        subject,
                        f"step {index + 1} of approval policy {policy.name!r} required {required} "
                        f"approvals; {len(approvers)} approver(s) remain in {plan.name!r}, so it requires "
                        f"{len(approvers)}",
                        plan.name,
                    )
                    required = len(approvers)
                steps.append((approvers, required))
            if not steps:
                self.placed.add(policy.id)
                self.left_out[policy.id] = "approvers"
                self.conflict(
                    "approval_policy_without_approvers",
                    subject,
                    f"approval policy {policy.name!r} keeps no approver in a step in {plan.name!r}: it is "
                    "not recreated; add Admin or Operator approvers and create it there",
                    plan.name,
                )
                continue
            step = CopyStep(KIND_POLICY, policy.id, policy.name, landing, CREATE, steps=steps)
            if await self._settle(step, plan.application, ApprovalPolicy, plan.name):
                plan.policies.append(step)

    def unplaced_items(self) -> None:
        """Alerts, syncs and policies that land in no application, each said once; and those without a
        profile filter that several applications each get a copy of."""
        copies: list[tuple[str, Alert | Sync]] = [
            *(("alert", a) for a in self.state.alerts),
            *(("sync", s) for s in self.state.syncs),
        ]
        for kind, row in copies:
            landed = self.placements.get(row.id, [])
            if len(landed) > 1 and all(every for _, every in landed):
                self.warn(
                    "copied_to_several",
                    f"{kind} {row.name}",
                    f"{kind} {row.name!r} covers every profile: each of "
                    f"{', '.join(repr(name) for name, _ in landed)} gets its own copy",
                )
        for alert in self.state.alerts:
            if alert.id not in self.placed:
                self.warn(
                    "alert_not_recreated",
                    f"alert {alert.name}",
                    f"alert {alert.name!r} covers no profile of the planned applications: it is not "
                    "recreated",
                )
        for sync in self.state.syncs:
            if self.left_out.get(sync.id) == "certificate filter":
                self.warn(
                    "sync_certificate_filter",
                    f"sync {sync.name}",
                    f"sync {sync.name!r} filters by legacy certificates, which stay in the legacy project: "
                    "it is not recreated; create it in the application once it has certificates",
                )
            elif sync.id not in self.placed:
                self.warn(
                    "sync_not_recreated",
                    f"sync {sync.name}",
                    f"sync {sync.name!r} covers no profile of the planned applications: it is not recreated",
                )
        for item in self.state.policies:
            if item.policy.id not in self.placed:
                self.warn(
                    "approval_policy_not_recreated",
                    f"approval policy {item.policy.name}",
                    f"approval policy {item.policy.name!r} covers no profile of the planned applications: it "
                    "is not recreated",
                )


async def migration_plan(
    *, actor: Actor, legacy_project_id: uuid.UUID, options: MigrationOptions | None = None
) -> MigrationPlan:
    """Steps 1-8 for a legacy project (Product Admins)."""
    project = await _load_project(actor, legacy_project_id)
    return await build_plan(project, options or MigrationOptions())


# ---------------------------------------------------------------- applying


@dataclass
class ApplicationOutcome:
    name: str
    status: str  # created | updated | unchanged | skipped | failed
    application_id: uuid.UUID | None = None
    created: dict[str, int] = field(default_factory=dict)
    error_code: str | None = None
    message: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "applicationId": str(self.application_id) if self.application_id else None,
            "created": self.created,
            "errorCode": self.error_code,
            "message": self.message,
        }


@dataclass
class MigrationResult:
    project: LegacyProject
    dry_run: bool
    applications: list[ApplicationOutcome]
    disabled_alerts: list[str]
    disabled_syncs: list[str]
    client_guide: list[dict[str, Any]]
    warnings: list[Notice]
    conflicts: list[Notice]

    @property
    def changed(self) -> bool:
        return any(sum(a.created.values()) for a in self.applications) or bool(
            self.disabled_alerts or self.disabled_syncs
        )

    @property
    def message(self) -> str:
        failed = [a.name for a in self.applications if a.status == "failed"]
        if self.dry_run:
            head = "dry run: nothing was written"
        elif not self.changed:
            head = "nothing to do: everything in this plan was migrated before; nothing changed"
        else:
            head = "migration applied"
        if failed:
            head += f"; failed (rolled back): {', '.join(failed)}"
        return head

    def to_document(self) -> dict[str, Any]:
        return {
            "projectId": str(self.project.id),
            "dryRun": self.dry_run,
            "changed": self.changed,
            "message": self.message,
            "applications": [a.to_document() for a in self.applications],
            "disabledLegacyAlerts": self.disabled_alerts,
            "disabledLegacySyncs": self.disabled_syncs,
            "clientGuide": self.client_guide,
            "warnings": [n.to_document() for n in self.warnings],
            "conflicts": [n.to_document() for n in self.conflicts],
        }


@dataclass(frozen=True)
class _PlanDocument:
    project_id: uuid.UUID
    options: MigrationOptions
    fingerprint: str
    state: dict[str, Any]


def _parse_document(document: Any) -> _PlanDocument:
    def bad(why: str) -> InvalidInput:
        return InvalidInput(
            f"plan is not a migration plan document: {why} (make one with migrationPlan)", field="plan"
        )

    if not isinstance(document, Mapping):
        raise bad("not an object")
    if document.get("format") != DOCUMENT_FORMAT:
        raise bad(f"format must be {DOCUMENT_FORMAT!r}")
    try:
        project_id = uuid.UUID(str(document.get("projectId")))
    except ValueError:
        raise bad("projectId is not an id") from None
    digest, state = document.get("fingerprint"), document.get("state")
    if not isinstance(digest, str) or not isinstance(state, Mapping):
        raise bad("fingerprint or state missing")
    if not all(isinstance(k, str) and isinstance(v, Mapping) for k, v in state.items()):
        raise bad("state entries must be objects")
    return _PlanDocument(
        project_id, MigrationOptions.from_document(document.get("options")), digest, dict(state)
    )


class _DryRun(Exception):  # noqa: N818 - control flow: rolls a dry run's transaction back
    def __init__(self, outcome: ApplicationOutcome, disabled: tuple[list[str], list[str]]) -> None:
        super().__init__("dry run")
        self.outcome = outcome
        self.disabled = disabled


async def apply_migration(
    *,
    actor: Actor,
    plan_document: Any,
    dry_run: bool = False,
    disable_legacy_copies: bool = False,
) -> MigrationResult:
    """Carry a plan out, one transaction per application; STALE_PLAN when the project changed since."""
    _require(actor)
    parsed = _parse_document(plan_document)
    project = await _load_project(actor, parsed.project_id)
    plan = await build_plan(project, parsed.options)
    if parsed.fingerprint != plan.fingerprint:
        changes = compare_states(parsed.state, plan.entries, plan.migrated_keys)
        if changes:
            raise StalePlan(
                f"legacy project {project.slug!r} changed since this plan was made: make a new plan and "
                "review it again",
                changes=changes,
            )
    outcomes: list[ApplicationOutcome] = []
    disabled_alerts: list[str] = []
    disabled_syncs: list[str] = []
    for app_plan in plan.applications:
        if app_plan.status == BLOCKED:
            outcomes.append(
                ApplicationOutcome(app_plan.name, "skipped", message="left out: see the plan's conflicts")
            )
            continue
        try:
            async with in_transaction():
                outcome = await _apply_application(actor, plan, app_plan)
                disabled = (
                    await _disable_legacy_copies(actor, plan, app_plan) if disable_legacy_copies else ([], [])
                )
                if sum(outcome.created.values()) or disabled[0] or disabled[1]:
                    await _record_summary(actor, plan, app_plan, outcome, disabled)
                if dry_run:
                    raise _DryRun(outcome, disabled)
        except _DryRun as rollback:
            outcome, disabled = rollback.outcome, rollback.disabled
            if outcome.created.get("applications"):
                outcome.application_id = None  # it was rolled back with the rest
        except (KeywardError, IntegrityError) as caught:
            error = (
                caught
                if isinstance(caught, KeywardError)
                else Conflict(
                    f"another run is migrating {app_plan.name!r} right now; run again to see the result"
                )
            )
            outcome = ApplicationOutcome(
                app_plan.name,
                "failed",
                app_plan.application.id if app_plan.application else None,
                error_code=error.code,
                message=error.message,
            )
            disabled = ([], [])
            if not dry_run:
                await audit.record(
                    actor=actor,
                    action="legacy_project.migrate",
                    resource_type="legacy_project",
                    resource_id=project.id,
                    outcome=AuditOutcome.FAILURE,
                    details={"application": app_plan.name, "code": error.code, "message": error.message},
                )
        outcomes.append(outcome)
        disabled_alerts += [n for n in disabled[0] if n not in disabled_alerts]
        disabled_syncs += [n for n in disabled[1] if n not in disabled_syncs]
    guide = plan.guide()
    if not dry_run:
        guide = (await build_plan(project, parsed.options)).guide()  # with the applications' real ids
    return MigrationResult(
        project, dry_run, outcomes, disabled_alerts, disabled_syncs, guide, plan.warnings, plan.conflicts
    )


async def _record(
    application: Application, plan: MigrationPlan, kind: str, source_id: uuid.UUID, target_id: uuid.UUID
) -> None:
    await LegacyMigration.create(
        project_id=plan.project.id,
        application_id=application.id,
        source_kind=kind,
        source_id=source_id,
        target_id=target_id,
    )


async def _apply_application(
    actor: Actor, plan: MigrationPlan, app_plan: ApplicationPlan
) -> ApplicationOutcome:
    """Steps 2-7 for one application, inside the caller's transaction."""
    created = {"applications": 0, "profiles": 0, "members": 0, "alerts": 0, "syncs": 0, "approvalPolicies": 0}
    project = plan.project
    application = app_plan.application
    if app_plan.status == CREATE or application is None:
        application = await application_service.create_application(
            actor=actor,
            name=app_plan.name,
            description=f"Migrated from legacy project {project.slug!r} ({project.name})",
        )
        await _record(application, plan, KIND_PROJECT, project.id, application.id)
        created["applications"] += 1
    for profile_step in app_plan.profiles:
        if profile_step.status == CREATE:
            attachment = await _attach(actor, application, profile_step)
            await _record(application, plan, KIND_ATTACHMENT, profile_step.source_id, attachment.id)
            created["profiles"] += 1
    for member_step in app_plan.members:
        if member_step.status == CREATE:
            principal_id = member_step.legacy.principal.id
            if member_step.grant_product_member and not await ProductMembership.exists(
                principal_id=principal_id
            ):
                await identity_service.set_product_role(
                    actor=actor, principal_id=principal_id, role=ProductRole.MEMBER
                )
            membership = await application_service.add_member(
                actor=actor, application_id=application.id, principal_id=principal_id, role=member_step.role
            )
            await _record(application, plan, KIND_MEMBER, member_step.legacy.membership.id, membership.id)
            created["members"] += 1
    alerts = {a.id: a for a in plan.state.alerts}
    for step in app_plan.alerts:
        if step.status == CREATE:
            alert = await _copy_alert(actor, application, plan, alerts[step.source_id], step)
            await _record(application, plan, KIND_ALERT, step.source_id, alert.id)
            created["alerts"] += 1
    syncs = {s.id: s for s in plan.state.syncs}
    for step in app_plan.syncs:
        if step.status == CREATE:
            sync = await _copy_sync(actor, application, syncs[step.source_id], step)
            await _record(application, plan, KIND_SYNC, step.source_id, sync.id)
            created["syncs"] += 1
    policies = {p.policy.id: p for p in plan.state.policies}
    for step in app_plan.policies:
        if step.status == CREATE:
            policy = await _copy_policy(actor, application, policies[step.source_id], step)
            await _record(application, plan, KIND_POLICY, step.source_id, policy.id)
            created["approvalPolicies"] += 1
    status = "created" if created["applications"] else "updated" if sum(created.values()) else "unchanged"
    return ApplicationOutcome(app_plan.name, status, application.id, created)


# -- step 3: attach, then copy the enrollment with the same credentials


def _unsealed(sealed: bytes, context: str, what: str) -> bytes:
    try:
        return sealing.unseal(kek=runtime.kek(), sealed=bytes(sealed), context=context.encode())
    except PkiError:
        raise InvalidState(
            f"{what} cannot be decrypted (was the key-encryption key replaced?): set it again on the legacy "
            "item, or leave the item out, then plan again"
        ) from None


def _reseal(sealed: bytes | None, old_context: str, new_context: str, what: str) -> bytes | None:
    """A secret sealed for the legacy attachment, sealed again for the new one (never shown anywhere)."""
    if sealed is None:
        return None
    plaintext = _unsealed(sealed, old_context, what)
    return sealing.seal(kek=runtime.kek(), plaintext=plaintext, context=new_context.encode())


_COPIED_FIELDS = [
    "acme_enabled",
    "acme_eab_required",
    "acme_eab_kid",
    "acme_eab_hmac_encrypted",
    "est_enabled",
    "est_username",
    "est_passphrase_hash",
    "est_client_ca_pem",
    "scep_enabled",
    "scep_challenge_mode",
    "scep_static_challenge_hash",
    "scep_challenge_ttl_seconds",
    "scep_max_pending_challenges",
    "scep_include_ca",
    "scep_allow_renewal",
    "scep_ra_certificate_pem",
    "scep_ra_key_encrypted",
    "updated_at",
]


async def _attach(actor: Actor, application: Application, step: ProfileStep) -> ApplicationProfile:
    legacy = step.legacy.attachment
    assert legacy is not None
    attachment = await application_service.attach_profile(
        actor=actor,
        application_id=application.id,
        profile_id=step.legacy.profile.id,
        api=application_service.ApiEnrollmentSettings(
            enabled=legacy.api_enabled,
            auto_renew=legacy.api_auto_renew,
            renew_before_days=legacy.api_renew_before_days,
        ),
    )
    methods = [m for m in step.legacy.methods if m != "api"]
    if not methods:
        return attachment
    # ACME: the same key id and HMAC key; EST: the same username, passphrase hash and bootstrap CA; SCEP: the
    # same challenge (hash) or dynamic settings and the same RA certificate and key, so pinned clients work.
    attachment.acme_enabled = legacy.acme_enabled
    attachment.acme_eab_required = legacy.acme_eab_required
    attachment.acme_eab_kid = legacy.acme_eab_kid
    what = f"the enrollment secret of legacy profile {step.legacy.slug!r}"
    attachment.acme_eab_hmac_encrypted = _reseal(
        legacy.acme_eab_hmac_encrypted, f"eab:{legacy.id}", f"eab:{attachment.id}", what
    )
    attachment.est_enabled = legacy.est_enabled
    attachment.est_username = legacy.est_username
    attachment.est_passphrase_hash = legacy.est_passphrase_hash
    attachment.est_client_ca_pem = legacy.est_client_ca_pem
    attachment.scep_enabled = legacy.scep_enabled
    attachment.scep_challenge_mode = legacy.scep_challenge_mode
    attachment.scep_static_challenge_hash = legacy.scep_static_challenge_hash
    attachment.scep_challenge_ttl_seconds = legacy.scep_challenge_ttl_seconds
    attachment.scep_max_pending_challenges = legacy.scep_max_pending_challenges
    attachment.scep_include_ca = legacy.scep_include_ca
    attachment.scep_allow_renewal = legacy.scep_allow_renewal
    attachment.scep_ra_certificate_pem = legacy.scep_ra_certificate_pem
    attachment.scep_ra_key_encrypted = _reseal(
        legacy.scep_ra_key_encrypted, f"scep-ra:{legacy.id}", f"scep-ra:{attachment.id}", what
    )
    await attachment.save(update_fields=_COPIED_FIELDS)
    settings = enrollment_fields(attachment)
    for method in methods:
        await audit.record(
            actor=actor,
            action=f"application_profile.{method}_enable",
            resource_type="application_profile",
            resource_id=attachment.id,
            application_id=application.id,
            details={
                "profile_id": str(attachment.profile_id),
                **settings[method],
                "migrated_from_legacy_project": str(step.legacy.profile.legacy_project_id or ""),
                "credentials": "copied from the legacy profile",
            },
        )
    return attachment


# -- steps 4-6: alerts, syncs, approval policies through their services


def _channel_secret(alert: Alert, channel: Any) -> str | None:
    if not channel.encrypted_secret:
        return None
    what = f"the {channel.type.value} secret of legacy alert {alert.name!r}"
    return _unsealed(channel.encrypted_secret, f"channel:{channel.id}", what).decode()


async def _copy_alert(
    actor: Actor, application: Application, plan: MigrationPlan, alert: Alert, step: CopyStep
) -> Alert:
    channels = plan.state.channels.get(alert.id, [])
    return await alert_service.create_alert(
        actor=actor,
        application_id=application.id,
        name=alert.name,
        event_types=list(alert.event_types or []),
        channels=[
            alert_service.ChannelSpec(
                type=c.type.value, config=dict(c.config or {}), secret=_channel_secret(alert, c)
            )
            for c in channels
        ],
        thresholds=[f"{days}d" for days in alert.thresholds_days or []],
        daily_repeat=alert.daily_repeat,
        profile_ids=step.profile_ids,
        name_pattern=alert.name_pattern,
        is_active=alert.is_active,
    )


def _sync_credentials(sync: Sync) -> dict[str, Any]:
    try:
        return dict(sync_service.unseal_credentials(sync))
    except PkiError:
        raise InvalidState(
            f"the credentials of legacy sync {sync.name!r} cannot be decrypted (was the key-encryption key "
            "replaced?): set them again on the legacy sync, then plan again"
        ) from None


async def _copy_sync(actor: Actor, application: Application, sync: Sync, step: CopyStep) -> Sync:
    return await sync_service.create_sync(
        actor=actor,
        application_id=application.id,
        name=sync.name,
        destination=sync.destination.value,
        connection=dict(sync.connection or {}),
        credentials=_sync_credentials(sync),
        profile_ids=step.profile_ids,
        metadata=dict(sync.metadata_filter or {}),
        auto_sync=sync.auto_sync,
        remove_on_revoke=sync.remove_on_revoke,
        remove_on_expiry=sync.remove_on_expiry,
        include_root=sync.include_root,
        include_private_key=sync.include_private_key,
        name_template=sync.name_template,
        format=sync.format.value,
        max_concurrency=sync.max_concurrency,
    )


async def _copy_policy(
    actor: Actor, application: Application, item: LegacyPolicy, step: CopyStep
) -> ApprovalPolicy:
    policy = item.policy
    return await approval_service.create_policy(
        actor=actor,
        application_id=application.id,
        name=policy.name,
        profile_ids=step.profile_ids,
        steps=[approval_service.StepSpec(approver_ids=a, required=r) for a, r in step.steps],
        max_request_ttl=timedelta(seconds=policy.max_request_ttl_seconds),
        bypass_machine_identities=policy.bypass_machine_identities,
        is_active=policy.is_active,
    )


async def _disable_legacy_copies(
    actor: Actor, plan: MigrationPlan, app_plan: ApplicationPlan
) -> tuple[list[str], list[str]]:
    """Switch off the legacy alerts and syncs this application now has copies of.

    Alerts have an on/off flag (is_active). Syncs have none: turning auto-sync off stops their pushes on
    issuance and renewal (they still remove revoked certificates they pushed, and run by hand).
    """
    alerts: list[str] = []
    syncs: list[str] = []
    legacy_alerts = {a.id: a for a in plan.state.alerts}
    legacy_syncs = {s.id: s for s in plan.state.syncs}
    for step in app_plan.alerts:
        alert = legacy_alerts[step.source_id]
        current = await Alert.get(id=alert.id)
        if current.is_active:
            await alert_service.update_alert(actor=actor, alert_id=alert.id, is_active=False)
            alerts.append(alert.name)
    for step in app_plan.syncs:
        sync = legacy_syncs[step.source_id]
        current_sync = await Sync.get(id=sync.id)
        if current_sync.auto_sync:
            await sync_service.update_sync(actor=actor, sync_id=sync.id, auto_sync=False)
            syncs.append(sync.name)
    return alerts, syncs


async def _record_summary(
    actor: Actor,
    plan: MigrationPlan,
    app_plan: ApplicationPlan,
    outcome: ApplicationOutcome,
    disabled: tuple[list[str], list[str]],
) -> None:
    """The one event per application that says what the migration did there."""
    await audit.record(
        actor=actor,
        action="legacy_project.migrate",
        resource_type="legacy_project",
        resource_id=plan.project.id,
        application_id=outcome.application_id,
        details={
            "project": plan.project.slug,
            "application": app_plan.name,
            "created": outcome.created,
            "profiles": [p.legacy.slug for p in app_plan.profiles if p.status == CREATE],
            "alerts": [s.name for s in app_plan.alerts if s.status == CREATE],
            "syncs": [s.name for s in app_plan.syncs if s.status == CREATE],
            "approvalPolicies": [s.name for s in app_plan.policies if s.status == CREATE],
            "members": [
                {"principalId": str(m.legacy.principal.id), "role": m.role.value}
                for m in app_plan.members
                if m.status == CREATE
            ],
            "disabledLegacyAlerts": disabled[0],
            "disabledLegacySyncs": disabled[1],
            "planFingerprint": plan.fingerprint,
        },
    )
