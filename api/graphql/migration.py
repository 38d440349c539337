"""The migration assistant (SPEC §13): `migrationPlan` and `applyMigration`, Product Admins only.

The plan comes back typed (steps 1-8, warnings, conflicts, the client update guide) and as `document`, the
JSON to pass back to `applyMigration` unchanged: it carries the fingerprint of the legacy project as reviewed.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.application import ApplicationRoleEnum
from api.graphql.ids import parse_id
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core.legacy import migration as service

PERMISSION = service.MIGRATION_PERMISSION


@strawberry.enum(
    name="MigrationStepStatus",
    description="CREATE: a run does it. DONE: an earlier run did. PRESENT: already there by hand, kept.",
)
class MigrationStepStatusEnum(Enum):
    CREATE = "create"
    DONE = "done"
    PRESENT = "present"


@strawberry.enum(
    name="MigrationApplicationStatus",
    description="CREATE: made by the run. EXISTS: made by an earlier run. BLOCKED: a conflict keeps it out.",
)
class MigrationApplicationStatusEnum(Enum):
    CREATE = "create"
    EXISTS = "exists"
    BLOCKED = "blocked"


@strawberry.enum(
    name="MigrationOutcome",
    description="What a run did to one application (FAILED: all rolled back; SKIPPED: blocked in the plan).",
)
class MigrationOutcomeEnum(Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"


@strawberry.input(description="One application to make and the legacy profiles (by slug) it attaches.")
class MigrationApplicationInput:
    name: str
    profile_slugs: list[str]


@strawberry.input(description="A role chosen by hand for one legacy member, instead of the closest one.")
class MigrationMemberRoleInput:
    member: str = strawberry.field(description="The member's email, or a machine identity's name.")
    role: str = strawberry.field(description="admin, operator, auditor, or none (not added).")


@strawberry.input(description="Without applications: one application named after the legacy project.")
class MigrationOptionsInput:
    applications: list[MigrationApplicationInput] | None = None
    member_roles: list[MigrationMemberRoleInput] | None = None

    def to_options(self) -> service.MigrationOptions:
        return service.MigrationOptions(
            tuple(
                service.ApplicationMapping(a.name.strip(), tuple(s.strip() for s in a.profile_slugs))
                for a in self.applications or []
            ),
            tuple(
                service.member_role_choice(r.member, r.role, f"options.memberRoles[{index}]")
                for index, r in enumerate(self.member_roles or [])
            ),
        )


@guard_type(PERMISSION)
@strawberry.type(description="A warning (not carried over as it was) or a conflict (left out).")
class MigrationNotice:
    kind: str
    application: str | None
    subject: str
    message: str


@guard_type(PERMISSION)
@strawberry.type(
    description="Step 3: a legacy profile attached with its enrollment copied, same credentials."
)
class MigrationProfileStep:
    slug: str
    profile_id: strawberry.ID
    profile_name: str
    methods: list[str]
    status: MigrationStepStatusEnum


@guard_type(PERMISSION)
@strawberry.type(description="Steps 4 and 5: an alert or sync recreated, its profile filter as it lands.")
class MigrationItemStep:
    source_id: strawberry.ID
    name: str
    profiles: list[str] = strawberry.field(description="Legacy profile slugs; empty: every profile.")
    status: MigrationStepStatusEnum


@guard_type(PERMISSION)
@strawberry.type(description="One step of a recreated approval policy.")
class MigrationApprovalStep:
    approvers: list[str]
    required: int


@guard_type(PERMISSION)
@strawberry.type(description="Step 6: an approval policy recreated with the approvers who can still approve.")
class MigrationPolicyStep:
    source_id: strawberry.ID
    name: str
    profiles: list[str]
    steps: list[MigrationApprovalStep]
    status: MigrationStepStatusEnum


@guard_type(PERMISSION)
@strawberry.type(description="Step 7: a legacy member and the application role they get.")
class MigrationMemberStep:
    principal_id: strawberry.ID
    name: str
    kind: str
    legacy_role: str
    custom_role: str | None
    role: ApplicationRoleEnum
    grant_product_member: bool = strawberry.field(description="They get the Product Member role first.")
    status: MigrationStepStatusEnum


@guard_type(PERMISSION)
@strawberry.type(description="Steps 2-7 for one application.")
class MigrationApplicationPlan:
    name: str
    status: MigrationApplicationStatusEnum
    application_id: strawberry.ID | None
    profiles: list[MigrationProfileStep]
    alerts: list[MigrationItemStep]
    syncs: list[MigrationItemStep]
    approval_policies: list[MigrationPolicyStep]
    members: list[MigrationMemberStep]
    pending: int = strawberry.field(description="How many things a run would still do here.")


@guard_type(PERMISSION)
@strawberry.type(description="Step 8: an old URL (or configuration) beside its new one.")
class ClientUpdate:
    application: str
    application_id: strawberry.ID | None = strawberry.field(description="Null until the application exists.")
    profile: str
    profile_name: str
    profile_id: strawberry.ID
    method: str = strawberry.field(description="acme, est, scep, api or agent.")
    old: str
    new: str = strawberry.field(description="Holds {applicationId} while the application does not exist yet.")
    new_label: str | None = strawberry.field(description="EST's single-label form, where the names fit one.")
    keeps: str = strawberry.field(description="What the client keeps as it was (no secret values here).")
    notes: list[str]
    pending: bool


@guard_type(PERMISSION)
@strawberry.type(description="A proposal to move a legacy project into Applications (SPEC §13).")
class MigrationPlan:
    project_id: strawberry.ID
    project_slug: str
    project_name: str
    fingerprint: str
    review: JSON = strawberry.field(description="Step 1: profiles, alerts, syncs, policies, roles, members.")
    applications: list[MigrationApplicationPlan]
    warnings: list[MigrationNotice]
    conflicts: list[MigrationNotice]
    client_guide: list[ClientUpdate]
    document: JSON = strawberry.field(description="Pass it back to applyMigration unchanged.")


@guard_type(PERMISSION)
@strawberry.type(description="What one application got.")
class MigrationApplicationResult:
    name: str
    status: MigrationOutcomeEnum
    application_id: strawberry.ID | None
    created: JSON = strawberry.field(description='How many of each were created, e.g. {"alerts": 1}.')
    error_code: str | None
    message: str | None


@guard_type(PERMISSION)
@strawberry.type(description="What applyMigration did (or, in a dry run, would do).")
class MigrationResult:
    project_id: strawberry.ID
    dry_run: bool
    changed: bool
    message: str
    applications: list[MigrationApplicationResult]
    disabled_legacy_alerts: list[str]
    disabled_legacy_syncs: list[str] = strawberry.field(description="Their auto-sync was turned off.")
    client_guide: list[ClientUpdate]
    warnings: list[MigrationNotice]
    conflicts: list[MigrationNotice]


def _notice(item: dict[str, Any]) -> MigrationNotice:
    return MigrationNotice(
        kind=item["kind"], application=item["application"], subject=item["subject"], message=item["message"]
    )


def _guide(items: list[dict[str, Any]]) -> list[ClientUpdate]:
    return [
        ClientUpdate(
            application=g["application"],
            application_id=strawberry.ID(g["applicationId"]) if g["applicationId"] else None,
            profile=g["profile"],
            profile_name=g["profileName"],
            profile_id=strawberry.ID(g["profileId"]),
            method=g["method"],
            old=g["old"],
            new=g["new"],
            new_label=g["newLabel"],
            keeps=g["credentials"],
            notes=list(g["notes"]),
            pending=g["pending"],
        )
        for g in items
    ]


def _item(step: dict[str, Any]) -> MigrationItemStep:
    return MigrationItemStep(
        source_id=strawberry.ID(step["sourceId"]),
        name=step["name"],
        profiles=list(step["profiles"]),
        status=MigrationStepStatusEnum(step["status"]),
    )


def _application(app: dict[str, Any]) -> MigrationApplicationPlan:
    return MigrationApplicationPlan(
        name=app["name"],
        status=MigrationApplicationStatusEnum(app["status"]),
        application_id=strawberry.ID(app["applicationId"]) if app["applicationId"] else None,
        profiles=[
            MigrationProfileStep(
                slug=p["slug"],
                profile_id=strawberry.ID(p["profileId"]),
                profile_name=p["profileName"],
                methods=list(p["methods"]),
                status=MigrationStepStatusEnum(p["status"]),
            )
            for p in app["profiles"]
        ],
        alerts=[_item(s) for s in app["alerts"]],
        syncs=[_item(s) for s in app["syncs"]],
        approval_policies=[
            MigrationPolicyStep(
                source_id=strawberry.ID(s["sourceId"]),
                name=s["name"],
                profiles=list(s["profiles"]),
                steps=[
                    MigrationApprovalStep(approvers=list(x["approvers"]), required=x["required"])
                    for x in s["steps"]
                ],
                status=MigrationStepStatusEnum(s["status"]),
            )
            for s in app["approvalPolicies"]
        ],
        members=[
            MigrationMemberStep(
                principal_id=strawberry.ID(m["principalId"]),
                name=m["name"],
                kind=m["kind"],
                legacy_role=m["legacyRole"],
                custom_role=m["customRole"],
                role=ApplicationRoleEnum(m["role"]),
                grant_product_member=m["grantProductMember"],
                status=MigrationStepStatusEnum(m["status"]),
            )
            for m in app["members"]
        ],
        pending=app["pending"],
    )


def plan_from_document(document: dict[str, Any]) -> MigrationPlan:
    return MigrationPlan(
        project_id=strawberry.ID(document["projectId"]),
        project_slug=document["projectSlug"],
        project_name=document["projectName"],
        fingerprint=document["fingerprint"],
        review=cast(JSON, document["review"]),
        applications=[_application(a) for a in document["applications"]],
        warnings=[_notice(n) for n in document["warnings"]],
        conflicts=[_notice(n) for n in document["conflicts"]],
        client_guide=_guide(document["clientGuide"]),
        document=cast(JSON, document),
    )


def result_from_document(document: dict[str, Any]) -> MigrationResult:
    return MigrationResult(
        project_id=strawberry.ID(document["projectId"]),
        dry_run=document["dryRun"],
        changed=document["changed"],
        message=document["message"],
        applications=[
            MigrationApplicationResult(
                name=a["name"],
                status=MigrationOutcomeEnum(a["status"]),
                application_id=strawberry.ID(a["applicationId"]) if a["applicationId"] else None,
                created=cast(JSON, a["created"]),
                error_code=a["errorCode"],
                message=a["message"],
            )
            for a in document["applications"]
        ],
        disabled_legacy_alerts=list(document["disabledLegacyAlerts"]),
        disabled_legacy_syncs=list(document["disabledLegacySyncs"]),
        client_guide=_guide(document["clientGuide"]),
        warnings=[_notice(n) for n in document["warnings"]],
        conflicts=[_notice(n) for n in document["conflicts"]],
    )


@strawberry.type
class Query:
    @guarded_field(
        PERMISSION,
        description="Review a legacy project and propose its move into Applications (steps 1-8).",
    )
    async def migration_plan(
        self, info: Info, legacy_project_id: strawberry.ID, options: MigrationOptionsInput | None = None
    ) -> MigrationPlan:
        plan = await service.migration_plan(
            actor=info.context.actor,
            legacy_project_id=parse_id(legacy_project_id, "legacy project"),
            options=options.to_options() if options is not None else None,
        )
        return plan_from_document(plan.to_document())


@strawberry.type
class Mutation:
    @guarded_mutation(
        PERMISSION,
        description="Carry out a migrationPlan document: one transaction per application, idempotent; "
        "STALE_PLAN when the legacy project changed since the plan.",
    )
    async def apply_migration(
        self, info: Info, plan: JSON, dry_run: bool = False, disable_legacy_copies: bool = False
    ) -> MigrationResult:
        result = await service.apply_migration(
            actor=info.context.actor,
            plan_document=plan,
            dry_run=dry_run,
            disable_legacy_copies=disable_legacy_copies,
        )
        return result_from_document(result.to_document())
