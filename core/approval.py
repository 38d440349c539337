"""Approval policies (SPEC §11): requests under a policy wait for ordered steps of approvers, then issue.

Every enrollment method reaches core.issuance.issue_certificate, which calls `hold_if_required` once the
request passed the certificate policy and before any key is generated: a covered request becomes an
ApprovalRequest and the caller gets ApprovalPending, answered in its protocol's own way. When the last step
has its approvals the stored request goes through issue_certificate again (policy checked again); the
protocol's own record (ACME order, SCEP transaction) follows in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from core import audit, authz, outbox
from core.access import attached_profiles, load_application, load_application_row, organization_scope
from core.authz import Actor, Permission, Scope
from core.errors import Conflict, Forbidden, InvalidInput, InvalidState, KeywardError, NotFound
from core.issuance import APPROVAL_COVERED, IssuanceContext, PreparedRequest, issue_certificate
from core.legacy import projects as legacy_projects
from core.legacy import rules as legacy_rules
from models import (
    AcmeOrder,
    Application,
    ApplicationMembership,
    ApplicationProfile,
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalPolicyAttachment,
    ApprovalRequest,
    Certificate,
    ScepTransaction,
)
from models.enums import ApplicationRole, AuditOutcome, EnrollmentMethod
from pki.key import KeyAlgorithm
from pki.san import SubjectAltName

log = logging.getLogger("keyward.approval")

MIN_TTL = timedelta(hours=1)
MAX_TTL = timedelta(days=30)
MAX_NAME_LENGTH = 100
MAX_STEPS = 10
MAX_APPROVERS = 50
MAX_COMMENT = 2000
# Seconds a protocol client (EST 202, ACME processing, SCEP PENDING) is told to wait before asking again.
RETRY_AFTER_SECONDS = 30

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"
ISSUED = "issued"
FAILED = "failed"
STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED, CANCELLED, ISSUED, FAILED)
APPROVER_ROLES = frozenset({ApplicationRole.ADMIN, ApplicationRole.OPERATOR})


class ApprovalPending(Exception):  # noqa: N818 - not an error: the request waits, the caller answers "pending"
    """Raised by issuance when a policy holds the request; callers answer in their protocol's way."""

    def __init__(self, request: ApprovalRequest) -> None:
        super().__init__(f"the request is pending approval (request {request.id})")
        self.request = request
        self.retry_after = RETRY_AFTER_SECONDS


@dataclass(frozen=True)
class StepSpec:
    approver_ids: Sequence[uuid.UUID]
    required: int


# ---------------------------------------------------------------- validation (before any write)


def _name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"policy name must be 1 to {MAX_NAME_LENGTH} characters", field="name")
    return name


def _ttl(ttl: timedelta) -> int:
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise InvalidInput(
            "maxRequestTtl must be between 1 hour (1h) and 30 days (30d)", field="maxRequestTtl"
        )
    return int(ttl.total_seconds())


async def eligible_approvers(
    application_id: uuid.UUID, candidates: Sequence[uuid.UUID | str]
) -> set[uuid.UUID]:
    """The candidates who are, right now, active Admin or Operator members of the application."""
    ids = {uuid.UUID(str(c)) for c in candidates}
    if not ids:
        return set()
    rows = await ApplicationMembership.filter(
        application_id=application_id,
        principal_id__in=ids,
        role__in=[r.value for r in APPROVER_ROLES],
        principal__is_active=True,
    ).values_list("principal_id", flat=True)
    eligible = {uuid.UUID(str(r)) for r in rows}
    if eligible != ids:  # a legacy project's container: its members whose legacy role decides approvals
        eligible |= await legacy_projects.approvers(application_id, ids - eligible)
    return eligible


async def _steps(application: Application, steps: Sequence[StepSpec]) -> list[dict[str, Any]]:
    if not steps:
        raise InvalidInput("give at least one step with approvers", field="steps")
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"at most {MAX_STEPS} steps", field="steps")
    checked: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        where = f"steps[{index}]"
        approvers = list(dict.fromkeys(step.approver_ids))
        if not approvers:
            raise InvalidInput(f"{where} names no approver", field=f"{where}.approverIds")
        if len(approvers) > MAX_APPROVERS:
            raise InvalidInput(f"{where}: at most {MAX_APPROVERS} approvers", field=f"{where}.approverIds")
        if not 1 <= step.required <= len(approvers):
            raise InvalidInput(
                f"{where} requires {step.required} approvals but names {len(approvers)} approver(s): "
                "required must be between 1 and the number of approvers",
                field=f"{where}.required",
            )
        eligible = await eligible_approvers(application.id, approvers)
        missing = [str(a) for a in approvers if a not in eligible]
        if missing:
            raise InvalidInput(
                f"{where}: {', '.join(missing)} must be Admin or Operator members of application "
                f"'{application.name}' to approve",
                field=f"{where}.approverIds",
            )
        checked.append({"approvers": [str(a) for a in approvers], "required": step.required})
    return checked


async def _attachments(
    application: Application, profile_ids: Sequence[uuid.UUID]
) -> list[ApplicationProfile]:
    if not profile_ids:
        raise InvalidInput("name at least one attached profile the policy covers", field="profileIds")
    return await attached_profiles(application, profile_ids)


async def _check_overlap(
    attachments: Sequence[ApplicationProfile], is_active: bool, policy_id: uuid.UUID | None
) -> None:
    """One active policy per attached profile: two would leave it unclear whose steps apply."""
    if not is_active:
        return
    query = ApprovalPolicyAttachment.filter(
        attachment_id__in=[a.id for a in attachments], policy__is_active=True
    )
    if policy_id is not None:
        query = query.exclude(policy_id=policy_id)
    clash = await query.prefetch_related("policy").first()
    if clash is not None:
        raise InvalidInput(
            f"profile {clash.attachment_id} is already covered by active policy '{clash.policy.name}'",
            field="profileIds",
        )


def _taken(name: str) -> Conflict:
    return Conflict(f"an approval policy named '{name}' already exists in this application", field="name")


def _policy_details(policy: ApprovalPolicy, attachments: Sequence[ApplicationProfile]) -> dict[str, Any]:
    return {
        "name": policy.name,
        "profileIds": [str(a.profile_id) for a in attachments],
        "steps": policy.steps,
        "maxRequestTtlSeconds": policy.max_request_ttl_seconds,
        "bypassMachineIdentities": policy.bypass_machine_identities,
        "isActive": policy.is_active,
    }


# ---------------------------------------------------------------- policies


async def create_policy(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    name: str,
    profile_ids: Sequence[uuid.UUID],
    steps: Sequence[StepSpec],
    max_request_ttl: timedelta,
    bypass_machine_identities: bool = False,
    is_active: bool = True,
) -> ApprovalPolicy:
    """Everything is validated before the first write; nothing is saved on bad input."""
    application = await load_application(actor, application_id, Permission.APPROVAL_POLICY_MANAGE)
    legacy_rules.refuse_create_outside_application(application, "approval policy")
    name = _name(name)
    ttl = _ttl(max_request_ttl)
    attachments = await _attachments(application, profile_ids)
    checked = await _steps(application, steps)
    await _check_overlap(attachments, is_active, None)
    if await ApprovalPolicy.exists(application_id=application.id, name=name):
        raise _taken(name)
    policy = ApprovalPolicy(
        id=uuid.uuid4(),
        application_id=application.id,
        name=name,
        steps=checked,
        max_request_ttl_seconds=ttl,
        bypass_machine_identities=bypass_machine_identities,
        is_active=is_active,
    )
    try:
        async with in_transaction() as conn:
            await policy.save(using_db=conn, force_create=True)
            for attachment in attachments:
                await ApprovalPolicyAttachment.create(
                    policy_id=policy.id, attachment_id=attachment.id, using_db=conn
                )
            await audit.record(
                actor=actor,
                action="approval_policy.create",
                resource_type="approval_policy",
                resource_id=policy.id,
                application_id=application.id,
                details=_policy_details(policy, attachments),
                connection=conn,
            )
    except IntegrityError:
        raise _taken(name) from None
    return policy


async def _load_policy(actor: Actor, policy_id: uuid.UUID, permission: Permission) -> ApprovalPolicy:
    policy, _ = await load_application_row(actor, ApprovalPolicy, policy_id, permission, "approval policy")
    return policy


async def update_policy(
    *,
    actor: Actor,
    policy_id: uuid.UUID,
    name: str | None = None,
    profile_ids: Sequence[uuid.UUID] | None = None,
    steps: Sequence[StepSpec] | None = None,
    max_request_ttl: timedelta | None = None,
    bypass_machine_identities: bool | None = None,
    is_active: bool | None = None,
) -> ApprovalPolicy:
    """Omitted values stay; requests already pending keep the steps they were submitted with."""
    policy = await _load_policy(actor, policy_id, Permission.APPROVAL_POLICY_MANAGE)
    application = await Application.get(id=policy.application_id)
    new_name = _name(name) if name is not None else policy.name
    ttl = _ttl(max_request_ttl) if max_request_ttl is not None else policy.max_request_ttl_seconds
    if profile_ids is not None:
        attachments = await _attachments(application, profile_ids)
    else:
        attachments = await ApplicationProfile.filter(approval_coverage__policy_id=policy.id)
    checked = await _steps(application, steps) if steps is not None else policy.steps
    active = policy.is_active if is_active is None else is_active
    await _check_overlap(attachments, active, policy.id)
    if new_name != policy.name and await ApprovalPolicy.exists(application_id=application.id, name=new_name):
        raise _taken(new_name)
    policy.name, policy.max_request_ttl_seconds, policy.steps, policy.is_active = (
        new_name,
        ttl,
        checked,
        active,
    )
    if bypass_machine_identities is not None:
        policy.bypass_machine_identities = bypass_machine_identities
    try:
        async with in_transaction() as conn:
            await policy.save(using_db=conn)
            if profile_ids is not None:
                await ApprovalPolicyAttachment.filter(policy_id=policy.id).using_db(conn).delete()
                for attachment in attachments:
                    await ApprovalPolicyAttachment.create(
                        policy_id=policy.id, attachment_id=attachment.id, using_db=conn
                    )
            await audit.record(
                actor=actor,
                action="approval_policy.update",
                resource_type="approval_policy",
                resource_id=policy.id,
                application_id=application.id,
                details=_policy_details(policy, attachments),
                connection=conn,
            )
    except IntegrityError:
        raise _taken(new_name) from None
    return policy


async def delete_policy(*, actor: Actor, policy_id: uuid.UUID) -> ApprovalPolicy:
    """Pending requests of the policy stay pending with their own copy of the steps."""
    policy = await _load_policy(actor, policy_id, Permission.APPROVAL_POLICY_MANAGE)
    async with in_transaction() as conn:
        await policy.delete(using_db=conn)
        await audit.record(
            actor=actor,
            action="approval_policy.delete",
            resource_type="approval_policy",
            resource_id=policy.id,
            application_id=policy.application_id,
            details={"name": policy.name},
            connection=conn,
        )
    return policy


async def list_policies(*, actor: Actor, application_id: uuid.UUID) -> list[ApprovalPolicy]:
    application = await load_application(actor, application_id, Permission.APPLICATION_READ)
    return await ApprovalPolicy.filter(application_id=application.id).order_by("name")


async def covered_profile_ids(policy: ApprovalPolicy) -> list[uuid.UUID]:
    return [
        uuid.UUID(str(p))
        for p in await ApplicationProfile.filter(approval_coverage__policy_id=policy.id)
        .order_by("created_at")
        .values_list("profile_id", flat=True)
    ]


# ---------------------------------------------------------------- submission (called by issuance)


async def covering_policy(attachment: ApplicationProfile) -> ApprovalPolicy | None:
    """The active policy covering this attached profile, in one indexed query; none asked for when the
    attachment's join read (core.issuance) already said no policy covers it, as for most."""
    if not getattr(attachment, APPROVAL_COVERED, True):
        return None
    return await ApprovalPolicy.filter(is_active=True, coverage__attachment_id=attachment.id).first()


def _csr_pem(csr: str | bytes | None) -> str | None:
    if csr is None:
        return None
    if isinstance(csr, str):
        return csr
    if csr.lstrip().startswith(b"-----"):
        return csr.decode("ascii")
    return x509.load_der_x509_csr(csr).public_bytes(serialization.Encoding.PEM).decode("ascii")


def _summary(prepared: PreparedRequest) -> dict[str, Any]:
    names = [value for attribute_type, value in prepared.request.subject if attribute_type == "CN"]
    return {
        "commonName": names[-1] if names else None,
        "sans": [str(san) for san in prepared.request.sans],
        "keyAlgorithm": prepared.request.key_algorithm.value,
    }


async def submit_or_none(
    context: IssuanceContext,
    prepared: PreparedRequest,
    *,
    csr: str | bytes | None,
    subject: Sequence[tuple[str, str]],
    sans: Sequence[SubjectAltName],
    key_algorithm: KeyAlgorithm | None,
    key_usages: frozenset[str] | None,
    extended_key_usages: frozenset[str] | None,
    validity: timedelta,
    metadata: dict[str, Any],
    auto_renew: bool | None,
    correlation: str | None = None,
    renewal_of: Certificate | None = None,
    renewal_mode: str | None = None,
) -> ApprovalRequest | None:
    """The ApprovalRequest when an active policy covers the attachment (and no bypass applies), else None.

    Stores what issuance needs later, never a private key: a server-generated key is made after approval.
    A renewal (`renewal_of`) has at most one open (pending or approved) request: asking again with no
    protocol handle, or with the same one, answers with that request; another handle is a conflict.
    """
    policy = await covering_policy(context.attachment)
    actor = context.actor
    if policy is None or (policy.bypass_machine_identities and actor.is_machine):
        return None
    now = datetime.now(UTC)
    request = ApprovalRequest(
        id=uuid.uuid4(),
        organization_id=context.application.organization_id,
        policy_id=policy.id,
        policy_name=policy.name,
        application_id=context.application.id,
        attachment_id=context.attachment.id,
        profile_id=context.profile.id,
        requester_id=actor.principal_id,
        requester_name=actor.name[:200],
        method=context.method.value,
        csr_pem=_csr_pem(csr),
        request={
            "subject": [list(pair) for pair in subject],
            "sans": [str(san) for san in sans],
            "keyAlgorithm": key_algorithm.value if key_algorithm is not None and csr is None else None,
            "keyUsages": sorted(key_usages) if key_usages else None,
            "extendedKeyUsages": sorted(extended_key_usages) if extended_key_usages is not None else None,
            "validitySeconds": int(validity.total_seconds()),
            "metadata": metadata,
            "autoRenew": auto_renew,
            "renewalMode": renewal_mode,
        },
        summary=_summary(prepared),
        steps=list(policy.steps),
        status=PENDING,
        current_step=0,
        expires_at=now + timedelta(seconds=policy.max_request_ttl_seconds),
        correlation=correlation,
        renewal_of_id=renewal_of.id if renewal_of is not None else None,
    )
    async with in_transaction() as conn:
        if renewal_of is not None:
            existing = await _open_renewal(renewal_of.id, conn)
            if existing is not None:
                if correlation is None or existing.correlation == correlation:
                    return existing
                raise Conflict(
                    f"a renewal of certificate {renewal_of.id} is already waiting for approval "
                    f"(request {existing.id})",
                    approval_request_id=str(existing.id),
                )
        await request.save(using_db=conn, force_create=True)
        await audit.record(
            actor=actor,
            action="approval.request",
            resource_type="approval_request",
            resource_id=request.id,
            application_id=request.application_id,
            details={
                "policy": policy.name,
                "renewal_of": str(renewal_of.id) if renewal_of is not None else None,
                "profile_id": str(request.profile_id),
                "enrollment_method": request.method,
                "common_name": request.summary.get("commonName"),
                "expires_at": request.expires_at.isoformat(),
            },
            connection=conn,
        )
        await _notify(request, conn)
    return request


async def hold_if_required(context: IssuanceContext, prepared: PreparedRequest, **request: Any) -> None:
    """Raise ApprovalPending with a new request when a policy holds this one; return when it may issue."""
    held = await submit_or_none(context, prepared, **request)
    if held is not None:
        raise ApprovalPending(held)


async def _open_renewal(certificate_id: uuid.UUID, conn: BaseDBAsyncClient) -> ApprovalRequest | None:
    """The pending or approved renewal request of a certificate, its row locked so two never start."""
    await Certificate.select_for_update().using_db(conn).filter(id=certificate_id).only("id")
    return (
        await ApprovalRequest.filter(renewal_of_id=certificate_id, status__in=[PENDING, APPROVED])
        .using_db(conn)
        .order_by("created_at")
        .first()
    )


async def hold_renewal_if_required(
    context: IssuanceContext,
    prepared: PreparedRequest,
    *,
    old: Certificate,
    mode: str,
    csr: str | bytes | None,
    correlation: str | None = None,
) -> None:
    """The one approval check of every renewal (API, EST re-enrollment, SCEP RenewalReq, the worker).

    Under an active policy covering the attachment (no machine bypass) it raises ApprovalPending with the
    renewal's request, stored with its predecessor: once approved the renewal runs from it.
    """
    request = prepared.request
    held = await submit_or_none(
        context,
        prepared,
        csr=csr,
        subject=list(request.subject),
        sans=list(request.sans),
        key_algorithm=request.key_algorithm if csr is None else None,
        key_usages=request.key_usages,
        extended_key_usages=request.extended_key_usages,
        validity=request.validity,
        metadata=dict(old.metadata or {}),
        auto_renew=None,
        correlation=correlation,
        renewal_of=old,
        renewal_mode=mode,
    )
    if held is not None:
        raise ApprovalPending(held)


async def _notify(request: ApprovalRequest, conn: BaseDBAsyncClient) -> None:
    """approval.requested for the current step's approvers, delivered by the alert machinery."""
    step = request.steps[request.current_step]
    await outbox.emit(
        event_type=outbox.APPROVAL_REQUESTED,
        organization_id=request.organization_id,
        application_id=request.application_id,
        certificate_id=None,
        payload={
            "approval_request_id": str(request.id),
            "policy": request.policy_name,
            "profile_id": str(request.profile_id),
            "enrollment_method": request.method,
            "requester": request.requester_name,
            "common_name": request.summary.get("commonName"),
            "requested_sans": request.summary.get("sans"),
            "step": request.current_step + 1,
            "steps": len(request.steps),
            "required": step["required"],
            "approver_ids": step["approvers"],
            "expires_at": request.expires_at.isoformat(),
        },
        connection=conn,
    )


# ---------------------------------------------------------------- reading requests


async def _visible_request(actor: Actor, request_id: uuid.UUID, permission: Permission) -> ApprovalRequest:
    scope = organization_scope(actor)
    row = await ApprovalRequest.get_or_none(id=request_id, organization_id=scope.organization_id)
    if row is None or not authz.can_see_application(actor, _scope(row)):
        raise NotFound(f"approval request {request_id} not found")
    authz.require(actor, permission, _scope(row))
    return row


def _scope(row: ApprovalRequest) -> Scope:
    return Scope(
        organization_id=row.organization_id, application_id=row.application_id, profile_id=row.profile_id
    )


async def get_request(*, actor: Actor, request_id: uuid.UUID) -> ApprovalRequest:
    return await _visible_request(actor, request_id, Permission.APPLICATION_READ)


def _involves(actor: Actor, row: ApprovalRequest) -> bool:
    if actor.principal_id is None:
        return False
    if row.requester_id == actor.principal_id:
        return True
    me = str(actor.principal_id)
    return any(me in step.get("approvers", []) for step in row.steps or [])


async def list_requests(
    *,
    actor: Actor,
    status: str | None = None,
    application_id: uuid.UUID | None = None,
    profile_id: uuid.UUID | None = None,
    first: int = 50,
    after: tuple[datetime, str] | None = None,
) -> tuple[list[ApprovalRequest], bool]:
    """What the caller may act on, oldest first: requests naming them as approver, and their own.

    Product Admins see every request of the organization. Returns (page, has_next_page).
    """
    scope = organization_scope(actor)
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}: use one of {', '.join(STATUSES)}", field="status")
    query = ApprovalRequest.filter(organization_id=scope.organization_id)
    if not actor.is_product_admin:
        deciding = [
            app_id
            for app_id, role in actor.application_roles.items()
            if ApplicationRole(role) in APPROVER_ROLES
        ] + [
            project_id
            for project_id, grant in actor.legacy_grants.items()
            if Permission.APPROVAL_DECIDE in grant.permissions
        ]
        query = (
            query.filter(application_id__in=deciding)
            if deciding
            else query.filter(requester_id=actor.principal_id)
        )
    if application_id is not None:
        query = query.filter(application_id=application_id)
    if profile_id is not None:
        query = query.filter(profile_id=profile_id)
    if status is not None:
        query = query.filter(status=status)
    found: list[ApprovalRequest] = []
    cursor = after
    batch = max(first + 1, 100)
    while len(found) <= first:
        page = query
        if cursor is not None:
            created_at, row_id = cursor
            page = page.filter(created_at__gte=created_at).filter(
                Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=row_id)
            )
        rows = await page.order_by("created_at", "id").limit(batch)
        for row in rows:
            if actor.is_product_admin or _involves(actor, row):
                found.append(row)
        if len(rows) < batch:
            break
        cursor = (rows[-1].created_at, str(rows[-1].id))
    return found[:first], len(found) > first


async def list_decisions(request: ApprovalRequest) -> list[ApprovalDecision]:
    return await ApprovalDecision.filter(request_id=request.id).order_by("created_at", "id")


# ---------------------------------------------------------------- decisions


def _comment(comment: str | None) -> str:
    text = (comment or "").strip()
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"comment must be at most {MAX_COMMENT} characters", field="comment")
    return text


async def _locked(request_id: uuid.UUID, conn: BaseDBAsyncClient) -> ApprovalRequest:
    row = await ApprovalRequest.select_for_update().using_db(conn).get(id=request_id)
    if row.status != PENDING:
        raise InvalidState(f"the request is {row.status}; only a pending request can be decided")
    if row.expires_at <= datetime.now(UTC):
        raise InvalidState("the request has expired; the requester must ask again")
    return row


async def _decide(actor: Actor, request_id: uuid.UUID, decision: str, comment: str | None) -> ApprovalRequest:
    text = _comment(comment)
    if decision == "reject" and not text:
        raise InvalidInput("say why in a comment when you reject a request", field="comment")
    await _visible_request(actor, request_id, Permission.APPROVAL_DECIDE)
    approved = False
    async with in_transaction() as conn:
        row = await _locked(request_id, conn)
        if actor.principal_id is None or row.requester_id == actor.principal_id:
            raise Forbidden("nobody approves or rejects their own request")
        step_index = row.current_step
        step = row.steps[step_index]
        eligible = await eligible_approvers(row.application_id, step["approvers"])
        if actor.principal_id not in eligible:
            raise Forbidden(
                f"you are not an approver of step {step_index + 1} of this request "
                "(approvers are the step's listed Admin and Operator members)"
            )
        if (
            await ApprovalDecision.filter(request_id=row.id, step=step_index, approver_id=actor.principal_id)
            .using_db(conn)
            .exists()
        ):
            raise Conflict(f"you already decided step {step_index + 1} of this request")
        await ApprovalDecision.create(
            request_id=row.id,
            step=step_index,
            approver_id=actor.principal_id,
            approver_name=actor.name[:200],
            decision=decision,
            comment=text,
            using_db=conn,
        )
        now = datetime.now(UTC)
        details: dict[str, Any] = {"step": step_index + 1, "comment": text}
        if decision == "reject":
            row.status, row.decided_at, row.failure_reason = REJECTED, now, f"rejected: {text}"
            await _close_protocol(row, f"the request was rejected: {text}", conn)
        else:
            approvals = (
                await ApprovalDecision.filter(
                    request_id=row.id, step=step_index, decision="approve", approver_id__in=list(eligible)
                )
                .using_db(conn)
                .count()
            )
            details["approvals"] = approvals
            if approvals >= int(step["required"]):
                if step_index + 1 >= len(row.steps):
                    row.status, row.decided_at = APPROVED, now
                    approved = True
                else:
                    row.current_step = step_index + 1
                    await _notify(row, conn)
        await row.save(using_db=conn)
        await audit.record(
            actor=actor,
            action=f"approval.{decision}",
            resource_type="approval_request",
            resource_id=row.id,
            application_id=row.application_id,
            details={**details, "status": row.status},
            connection=conn,
        )
    if approved:
        await issue_approved(row)
    return row


async def approve(*, actor: Actor, request_id: uuid.UUID, comment: str | None = None) -> ApprovalRequest:
    """Count an approval; the step's last one advances, and the last step's issues the certificate."""
    return await _decide(actor, request_id, "approve", comment)


async def reject(*, actor: Actor, request_id: uuid.UUID, comment: str) -> ApprovalRequest:
    return await _decide(actor, request_id, "reject", comment)


async def cancel(*, actor: Actor, request_id: uuid.UUID) -> ApprovalRequest:
    """The requester withdraws a pending request."""
    row = await _visible_request(actor, request_id, Permission.CERTIFICATE_ISSUE)
    if actor.principal_id is None or row.requester_id != actor.principal_id:
        raise Forbidden("only the requester can cancel a request")
    async with in_transaction() as conn:
        row = await _locked(request_id, conn)
        row.status, row.decided_at, row.failure_reason = (
            CANCELLED,
            datetime.now(UTC),
            "cancelled by the requester",
        )
        await row.save(using_db=conn)
        await _close_protocol(row, "the request was cancelled", conn)
        await audit.record(
            actor=actor,
            action="approval.cancel",
            resource_type="approval_request",
            resource_id=row.id,
            application_id=row.application_id,
            connection=conn,
        )
    return row


# ---------------------------------------------------------------- issuing, and the protocols' records


async def _close_protocol(row: ApprovalRequest, reason: str, conn: BaseDBAsyncClient) -> None:
    """A request that will never issue: the ACME order turns invalid, the SCEP transaction failed."""
    if row.correlation is None:
        return
    if row.method == EnrollmentMethod.ACME.value:
        await (
            AcmeOrder.filter(id=row.correlation, status="processing")
            .using_db(conn)
            .update(
                status="invalid",
                error={"type": "urn:ietf:params:acme:error:unauthorized", "detail": reason, "status": 403},
                updated_at=datetime.now(UTC),
            )
        )
    elif row.method == EnrollmentMethod.SCEP.value:
        await (
            ScepTransaction.filter(id=row.correlation, status="pending")
            .using_db(conn)
            .update(status="failed")
        )


class _AlreadyDone(Exception):  # noqa: N818 - control flow: rolls back a second issuance of one request
    """The request was issued (or closed) by someone else meanwhile; this issuance rolls back."""


async def _record_issued(row: ApprovalRequest, certificate: Certificate, conn: BaseDBAsyncClient) -> None:
    # Conditional, in the issuing transaction: of two concurrent issuances of one request only one commits.
    updated = await (
        ApprovalRequest.filter(id=row.id, status=APPROVED, certificate_id=None)
        .using_db(conn)
        .update(status=ISSUED, certificate_id=certificate.id, updated_at=datetime.now(UTC))
    )
    if updated == 0:
        raise _AlreadyDone(str(row.id))
    if row.correlation is None:
        return
    if row.method == EnrollmentMethod.ACME.value:
        await (
            AcmeOrder.filter(id=row.correlation, status="processing")
            .using_db(conn)
            .update(status="valid", certificate_id=certificate.id, updated_at=datetime.now(UTC))
        )
    elif row.method == EnrollmentMethod.SCEP.value:
        await (
            ScepTransaction.filter(id=row.correlation, status="pending")
            .using_db(conn)
            .update(status="issued", certificate_id=certificate.id)
        )


async def _issue(row: ApprovalRequest, actor: Actor) -> Certificate:
    """The stored request through the normal issuance (or renewal) service, policy checked again."""

    async def record(certificate: Certificate, conn: BaseDBAsyncClient) -> None:
        await _record_issued(row, certificate, conn)

    stored = row.request or {}
    if row.renewal_of_id is not None:
        from core.certificate import renew_certificate  # noqa: PLC0415 - certificate holds renewals here

        return await renew_certificate(
            actor=actor,
            certificate_id=row.renewal_of_id,
            mode=str(stored.get("renewalMode") or "new_key"),
            csr=row.csr_pem,
            enrollment_method=EnrollmentMethod(row.method),
            approved_request_id=row.id,
            after_insert=record,
        )
    application = await Application.get(id=row.application_id)
    replaces = None  # an ACME order's certificate to renew (RFC 9773), as finalize would have passed it
    if row.method == EnrollmentMethod.ACME.value and row.correlation is not None:
        order = await AcmeOrder.get_or_none(id=row.correlation)
        replaces = order.replaces_certificate_id if order is not None else None
    return await issue_certificate(
        actor=actor,
        application_id=row.application_id,
        profile_id=row.profile_id,
        csr=row.csr_pem,
        subject=[(str(t), str(v)) for t, v in stored.get("subject") or []] if row.csr_pem is None else None,
        sans=list(stored.get("sans") or []) if row.csr_pem is None else None,
        key_algorithm=stored.get("keyAlgorithm") if row.csr_pem is None else None,
        key_usages=stored.get("keyUsages"),
        extended_key_usages=stored.get("extendedKeyUsages"),
        validity=timedelta(seconds=int(stored.get("validitySeconds") or 0)) or None,
        metadata=stored.get("metadata") or None,
        auto_renew=stored.get("autoRenew"),
        enrollment_method=EnrollmentMethod(row.method),
        application=application,
        after_insert=record,
        approved_request_id=row.id,
        replaces_certificate_id=replaces,
    )


async def _mark_failed(row: ApprovalRequest, actor: Actor, code: str, reason: str) -> bool:
    """Approved -> failed with the reason; False when the request was issued or closed meanwhile."""
    async with in_transaction() as conn:
        updated = await (
            ApprovalRequest.filter(id=row.id, status=APPROVED, certificate_id=None)
            .using_db(conn)
            .update(status=FAILED, failure_reason=reason, updated_at=datetime.now(UTC))
        )
        if updated == 0:
            return False
        await _close_protocol(row, f"the approved request could not be issued: {reason}", conn)
        await audit.record(
            actor=actor,
            action="approval.issue",
            resource_type="approval_request",
            resource_id=row.id,
            application_id=row.application_id,
            outcome=AuditOutcome.FAILURE,
            details={"code": code, "reason": reason},
            connection=conn,
        )
    return True


async def issue_approved(row: ApprovalRequest, *, retry: bool = False) -> ApprovalRequest:
    """Issue from the stored request through the normal issuance service; a refusal marks it failed.

    A renewal renews its predecessor (which becomes `renewed` exactly once). Issuing twice is impossible:
    the request turns `issued` in the issuing transaction only while still approved with no certificate.
    An unexpected error leaves the request approved for `retry_approved`, whose own (`retry`) attempt
    ends the request issued or failed.
    """
    actor = Actor.system(row.organization_id, f"approval:{row.id}")
    try:
        certificate = await _issue(row, actor)
    except _AlreadyDone:
        await row.refresh_from_db()
        return row
    except KeywardError as exc:
        if await _mark_failed(row, actor, exc.code, exc.message[:2000]):
            row.status, row.failure_reason = FAILED, exc.message[:2000]
        else:
            await row.refresh_from_db()
        return row
    except Exception as exc:
        if not retry:
            raise
        log.exception("retrying approved request %s failed", row.id)
        reason = f"issuance failed unexpectedly ({type(exc).__name__}); see the worker log"
        if await _mark_failed(row, actor, "INTERNAL", reason):
            row.status, row.failure_reason = FAILED, reason
        else:
            await row.refresh_from_db()
        return row
    row.status, row.certificate_id = ISSUED, certificate.id
    return row


# ---------------------------------------------------------------- the worker


async def expire_due(now: datetime | None = None, *, batch_size: int = 200) -> int:
    """Expire pending requests past their TTL; replicas claim rows with SKIP LOCKED."""
    now = now or datetime.now(UTC)
    expired = 0
    while True:
        async with in_transaction() as conn:
            rows = await (
                ApprovalRequest.select_for_update(skip_locked=True)
                .using_db(conn)
                .filter(status=PENDING, expires_at__lte=now)
                .order_by("expires_at")
                .limit(batch_size)
            )
            for row in rows:
                organization_actor = Actor.system(row.organization_id, "approvals.expire")
                row.status, row.decided_at, row.failure_reason = EXPIRED, now, "expired before it was decided"
                await row.save(
                    using_db=conn, update_fields=["status", "decided_at", "failure_reason", "updated_at"]
                )
                await _close_protocol(row, "the request expired before it was approved", conn)
                await audit.record(
                    actor=organization_actor,
                    action="approval.expire",
                    resource_type="approval_request",
                    resource_id=row.id,
                    application_id=row.application_id,
                    details={"expires_at": row.expires_at.isoformat()},
                    connection=conn,
                )
        expired += len(rows)
        if len(rows) < batch_size:
            return expired


# Approved requests whose issuance did not happen (the process died, or issuance failed unexpectedly) are
# retried once this long after their last change, so the approver's own issuance is never raced.
RETRY_GRACE = timedelta(minutes=2)


async def retry_approved(
    now: datetime | None = None, *, grace: timedelta = RETRY_GRACE, batch_size: int = 50
) -> int:
    """Issue approved requests left without a certificate; each ends issued or failed.

    Replicas pick rows with SKIP LOCKED and claim each with a conditional update of `updated_at` (a lease
    of `grace`); the conditional approved -> issued update in the issuing transaction makes a second
    issuance of one request roll back, so a request is issued at most once whatever the timing.
    """
    now = now or datetime.now(UTC)
    cutoff = now - grace
    done = 0
    while True:
        claimed: list[ApprovalRequest] = []
        async with in_transaction() as conn:
            rows = await (
                ApprovalRequest.select_for_update(skip_locked=True)
                .using_db(conn)
                .filter(status=APPROVED, certificate_id__isnull=True, updated_at__lte=cutoff)
                .order_by("updated_at")
                .limit(batch_size)
            )
            for row in rows:
                # The lease: a claimed row's updated_at moves past the cutoff, so no one else takes it.
                leased = await (
                    ApprovalRequest.filter(
                        id=row.id, status=APPROVED, certificate_id__isnull=True, updated_at__lte=cutoff
                    )
                    .using_db(conn)
                    .update(updated_at=now)
                )
                if leased:
                    claimed.append(row)
        for row in claimed:
            result = await issue_approved(row, retry=True)
            log.info("approved request %s retried: %s", row.id, result.status)
            done += 1
        if len(rows) < batch_size or not claimed:
            return done


# ---------------------------------------------------------------- protocol helpers


def est_correlation(actor: Actor, csr_der: bytes, kind: str = "simpleenroll") -> str:
    """The EST client's identity with its CSR's public key and subject: its retry finds the same request."""
    csr = x509.load_der_x509_csr(csr_der)
    digest = hashlib.sha256(
        csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        + csr.subject.public_bytes()
    ).hexdigest()
    identity = hashlib.sha256(f"{kind}\0{actor.name}".encode()).hexdigest()[:32]
    return f"est:{identity}:{digest}"


async def latest_for(attachment_id: uuid.UUID, correlation: str) -> ApprovalRequest | None:
    return (
        await ApprovalRequest.filter(attachment_id=attachment_id, correlation=correlation)
        .order_by("-created_at")
        .first()
        .prefetch_related("certificate")
    )
