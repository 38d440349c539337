"""Approval policies of an application and the approval requests they hold (SPEC §11)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import Enum
from typing import TypeVar

import strawberry
from strawberry.types import Info

from api.graphql.certificate import Certificate
from api.graphql.ids import parse_id
from api.graphql.legacy import LegacyProject, legacy_project_of
from api.graphql.pagination import Connection, Edge, PageInfo, check_page_size, decode_cursor, encode_cursor
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import approval as service
from core.authz import Permission, Scope
from core.errors import InvalidInput
from models import ApprovalDecision as ApprovalDecisionModel
from models import ApprovalPolicy as ApprovalPolicyModel
from models import ApprovalRequest as ApprovalRequestModel
from models import Certificate as CertificateModel
from models.enums import EnrollmentMethod
from pki.duration import format_duration, parse_duration
from pki.errors import PkiError


@strawberry.enum(name="ApprovalRequestStatus")
class ApprovalRequestStatusEnum(Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ISSUED = "issued"
    FAILED = "failed"


@strawberry.enum(name="ApprovalDecisionKind")
class ApprovalDecisionEnum(Enum):
    APPROVE = "approve"
    REJECT = "reject"


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="One step of a policy: any `required` of its approvers must approve.")
class ApprovalStep:
    _scope: strawberry.Private[Scope]
    approver_ids: list[strawberry.ID] = strawberry.field(
        description="Principals (users or machine identities); only current Admin/Operator members count."
    )
    required: int

    def authz_scope(self) -> Scope:
        return self._scope


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="An approval policy of an application (SPEC §11).")
class ApprovalPolicy:
    _model: strawberry.Private[ApprovalPolicyModel]
    _organization_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    application_id: strawberry.ID
    name: str
    steps: list[ApprovalStep]
    max_request_ttl: str = strawberry.field(description='How long a request may wait, e.g. "7d" or "12h".')
    bypass_machine_identities: bool
    is_active: bool
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(Permission.APPLICATION_READ, description="The attached profiles the policy covers.")
    async def profile_ids(self) -> list[strawberry.ID]:
        return [strawberry.ID(str(p)) for p in await service.covered_profile_ids(self._model)]

    @guarded_field(
        Permission.APPLICATION_READ, description="The legacy project it belongs to; null in an Application."
    )
    async def legacy_project(self, info: Info) -> LegacyProject | None:
        return await legacy_project_of(info, self._model.application_id)

    @classmethod
    def from_model(cls, model: ApprovalPolicyModel, organization_id: uuid.UUID) -> ApprovalPolicy:
        scope = Scope(organization_id, model.application_id)
        return cls(
            _model=model,
            _organization_id=organization_id,
            id=strawberry.ID(str(model.id)),
            application_id=strawberry.ID(str(model.application_id)),
            name=model.name,
            steps=[
                ApprovalStep(
                    _scope=scope,
                    approver_ids=[strawberry.ID(a) for a in step["approvers"]],
                    required=int(step["required"]),
                )
                for step in model.steps
            ],
            max_request_ttl=format_duration(timedelta(seconds=model.max_request_ttl_seconds)),
            bypass_machine_identities=model.bypass_machine_identities,
            is_active=model.is_active,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="One approver's decision at one step.")
class ApprovalDecision:
    _scope: strawberry.Private[Scope]
    step: int = strawberry.field(description="1-based.")
    approver_id: strawberry.ID | None
    approver_name: str
    decision: ApprovalDecisionEnum
    comment: str
    created_at: datetime

    def authz_scope(self) -> Scope:
        return self._scope


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="A certificate request held by an approval policy.")
class ApprovalRequest:
    _model: strawberry.Private[ApprovalRequestModel]
    id: strawberry.ID
    application_id: strawberry.ID
    profile_id: strawberry.ID
    policy_id: strawberry.ID | None
    policy_name: str
    status: ApprovalRequestStatusEnum
    enrollment_method: str = strawberry.field(description="api, acme, est or scep.")
    requester_id: strawberry.ID | None = strawberry.field(description="Null for protocol clients.")
    requester_name: str
    common_name: str | None
    sans: list[str]
    key_algorithm: str | None
    csr_pem: str | None = strawberry.field(
        description="The client's request; null for a server-made key and for SCEP (it holds the challenge)."
    )
    current_step: int = strawberry.field(description="1-based; the step waiting for approvals.")
    step_count: int
    steps: list[ApprovalStep] = strawberry.field(description="As they were when the request was made.")
    expires_at: datetime
    decided_at: datetime | None
    failure_reason: str | None
    created_at: datetime
    renewal_of_id: strawberry.ID | None = strawberry.field(
        default=None, description="A renewal: the certificate it renews once approved."
    )

    def authz_scope(self) -> Scope:
        model = self._model
        return Scope(model.organization_id, model.application_id, profile_id=model.profile_id)

    @guarded_field(Permission.APPLICATION_READ)
    async def decisions(self) -> list[ApprovalDecision]:
        rows = await service.list_decisions(self._model)
        return [_decision(self.authz_scope(), row) for row in rows]

    @guarded_field(Permission.CERTIFICATE_READ, description="Once issued.")
    async def certificate(self) -> Certificate | None:
        if self._model.certificate_id is None:
            return None
        model = await CertificateModel.get_or_none(id=self._model.certificate_id)
        return Certificate.from_model(model) if model is not None else None

    @guarded_field(
        Permission.APPLICATION_READ, description="The legacy project it belongs to; null in an Application."
    )
    async def legacy_project(self, info: Info) -> LegacyProject | None:
        return await legacy_project_of(info, self._model.application_id)

    @classmethod
    def from_model(cls, model: ApprovalRequestModel) -> ApprovalRequest:
        scope = Scope(model.organization_id, model.application_id)
        summary = model.summary or {}
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            application_id=strawberry.ID(str(model.application_id)),
            profile_id=strawberry.ID(str(model.profile_id)),
            policy_id=strawberry.ID(str(model.policy_id)) if model.policy_id else None,
            policy_name=model.policy_name,
            status=ApprovalRequestStatusEnum(model.status),
            enrollment_method=model.method,
            requester_id=strawberry.ID(str(model.requester_id)) if model.requester_id else None,
            requester_name=model.requester_name,
            common_name=summary.get("commonName"),
            sans=list(summary.get("sans") or []),
            key_algorithm=summary.get("keyAlgorithm"),
            # A SCEP request carries its challenge password in the CSR: never shown back.
            csr_pem=None if model.method == EnrollmentMethod.SCEP.value else model.csr_pem,
            current_step=model.current_step + 1,
            step_count=len(model.steps or []),
            steps=[
                ApprovalStep(
                    _scope=scope,
                    approver_ids=[strawberry.ID(a) for a in step["approvers"]],
                    required=int(step["required"]),
                )
                for step in model.steps or []
            ],
            expires_at=model.expires_at,
            decided_at=model.decided_at,
            failure_reason=model.failure_reason,
            created_at=model.created_at,
            renewal_of_id=strawberry.ID(str(model.renewal_of_id)) if model.renewal_of_id else None,
        )


def _decision(scope: Scope, row: ApprovalDecisionModel) -> ApprovalDecision:
    return ApprovalDecision(
        _scope=scope,
        step=row.step + 1,
        approver_id=strawberry.ID(str(row.approver_id)) if row.approver_id else None,
        approver_name=row.approver_name,
        decision=ApprovalDecisionEnum(row.decision),
        comment=row.comment,
        created_at=row.created_at,
    )


@strawberry.input
class ApprovalStepInput:
    approver_ids: list[strawberry.ID] = strawberry.field(
        description="Admin or Operator members of the application (users or machine identities)."
    )
    required: int = 1


@strawberry.input
class CreateApprovalPolicyInput:
    application_id: strawberry.ID
    name: str
    profile_ids: list[strawberry.ID] = strawberry.field(description="Profiles attached to the application.")
    steps: list[ApprovalStepInput] = strawberry.field(description="In order; at least one.")
    max_request_ttl: str = strawberry.field(default="7d", description="1h to 30d, e.g. 24h or 7d.")
    bypass_machine_identities: bool = False
    is_active: bool = True


@strawberry.input(description="Omitted fields stay as they are; pending requests keep their steps.")
class UpdateApprovalPolicyInput:
    name: str | None = strawberry.UNSET
    profile_ids: list[strawberry.ID] | None = strawberry.UNSET
    steps: list[ApprovalStepInput] | None = strawberry.UNSET
    max_request_ttl: str | None = strawberry.UNSET
    bypass_machine_identities: bool | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET


T = TypeVar("T")


def _opt(value: T | None) -> T | None:
    return None if value is strawberry.UNSET else value


def _ttl(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except PkiError as exc:
        raise InvalidInput(f"maxRequestTtl: {exc.message}", field="maxRequestTtl") from None


def _steps(steps: list[ApprovalStepInput]) -> list[service.StepSpec]:
    specs = []
    for index, step in enumerate(steps):
        ids = []
        for value in step.approver_ids:
            try:
                ids.append(uuid.UUID(str(value)))
            except ValueError:
                raise InvalidInput(
                    f"steps[{index}]: {value!r} is not a principal id", field=f"steps[{index}].approverIds"
                ) from None
        specs.append(service.StepSpec(approver_ids=ids, required=step.required))
    return specs


def _profile_ids(values: list[strawberry.ID]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            raise InvalidInput(f"{value!r} is not a profile id", field="profileIds") from None
    return ids


def _organization(info: Info) -> uuid.UUID:
    organization_id = info.context.actor.organization_id
    assert organization_id is not None  # the services loaded the application in the actor's organization
    return uuid.UUID(str(organization_id))


@strawberry.type
class Query:
    @guarded_field(Permission.APPLICATION_READ, description="An application's approval policies, by name.")
    async def approval_policies(self, info: Info, application_id: strawberry.ID) -> list[ApprovalPolicy]:
        rows = await service.list_policies(
            actor=info.context.actor, application_id=parse_id(application_id, "application")
        )
        return [ApprovalPolicy.from_model(r, _organization(info)) for r in rows]

    @guarded_field(
        Permission.SELF,
        description=(
            "Approval requests you may act on, oldest first: those naming you as approver and your own "
            "(Product Admins: all). Filters: status, application, profile."
        ),
    )
    async def approval_requests(
        self,
        info: Info,
        status: ApprovalRequestStatusEnum | None = None,
        application_id: strawberry.ID | None = None,
        profile_id: strawberry.ID | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> Connection[ApprovalRequest]:
        rows, has_next = await service.list_requests(
            actor=info.context.actor,
            status=status.value if status is not None else None,
            application_id=parse_id(application_id, "application") if application_id is not None else None,
            profile_id=parse_id(profile_id, "profile") if profile_id is not None else None,
            first=check_page_size(first),
            after=decode_cursor(after) if after else None,
        )
        edges = [
            Edge(cursor=encode_cursor(r.created_at, r.id), node=ApprovalRequest.from_model(r)) for r in rows
        ]
        return Connection(
            edges=edges,
            page_info=PageInfo(has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None),
        )

    @guarded_field(Permission.APPLICATION_READ, description="One request; NOT_FOUND if you may not see it.")
    async def approval_request(self, info: Info, id: strawberry.ID) -> ApprovalRequest:
        model = await service.get_request(
            actor=info.context.actor, request_id=parse_id(id, "approval request")
        )
        return ApprovalRequest.from_model(model)


@strawberry.type
class Mutation:
    @guarded_mutation(Permission.APPROVAL_POLICY_MANAGE, description="Create an approval policy (app Admin).")
    async def create_approval_policy(self, info: Info, input: CreateApprovalPolicyInput) -> ApprovalPolicy:
        model = await service.create_policy(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            name=input.name,
            profile_ids=_profile_ids(input.profile_ids),
            steps=_steps(input.steps),
            max_request_ttl=_ttl(input.max_request_ttl),
            bypass_machine_identities=input.bypass_machine_identities,
            is_active=input.is_active,
        )
        return ApprovalPolicy.from_model(model, _organization(info))

    @guarded_mutation(Permission.APPROVAL_POLICY_MANAGE, description="Change a policy; omitted fields stay.")
    async def update_approval_policy(
        self, info: Info, id: strawberry.ID, input: UpdateApprovalPolicyInput
    ) -> ApprovalPolicy:
        profile_ids, steps, ttl = _opt(input.profile_ids), _opt(input.steps), _opt(input.max_request_ttl)
        model = await service.update_policy(
            actor=info.context.actor,
            policy_id=parse_id(id, "approval policy"),
            name=_opt(input.name),
            profile_ids=_profile_ids(profile_ids) if profile_ids is not None else None,
            steps=_steps(steps) if steps is not None else None,
            max_request_ttl=_ttl(ttl) if ttl is not None else None,
            bypass_machine_identities=_opt(input.bypass_machine_identities),
            is_active=_opt(input.is_active),
        )
        return ApprovalPolicy.from_model(model, _organization(info))

    @guarded_mutation(Permission.APPROVAL_POLICY_MANAGE, description="Delete a policy; returns its id.")
    async def delete_approval_policy(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        model = await service.delete_policy(
            actor=info.context.actor, policy_id=parse_id(id, "approval policy")
        )
        return strawberry.ID(str(model.id))

    @guarded_mutation(
        Permission.APPROVAL_DECIDE,
        description="Approve the current step as its approver; the last approval issues the certificate.",
    )
    async def approve_request(
        self, info: Info, id: strawberry.ID, comment: str | None = None
    ) -> ApprovalRequest:
        model = await service.approve(
            actor=info.context.actor, request_id=parse_id(id, "approval request"), comment=comment
        )
        return ApprovalRequest.from_model(await ApprovalRequestModel.get(id=model.id))

    @guarded_mutation(Permission.APPROVAL_DECIDE, description="Reject a request, saying why.")
    async def reject_request(self, info: Info, id: strawberry.ID, comment: str) -> ApprovalRequest:
        model = await service.reject(
            actor=info.context.actor, request_id=parse_id(id, "approval request"), comment=comment
        )
        return ApprovalRequest.from_model(model)

    @guarded_mutation(Permission.CERTIFICATE_ISSUE, description="Withdraw your own pending request.")
    async def cancel_request(self, info: Info, id: strawberry.ID) -> ApprovalRequest:
        model = await service.cancel(actor=info.context.actor, request_id=parse_id(id, "approval request"))
        return ApprovalRequest.from_model(model)
