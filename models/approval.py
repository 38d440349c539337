"""Approval policies of an application (SPEC §11), the requests they hold, and each approver's decision."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.application import Application, ApplicationProfile
    from models.certificate import Certificate
    from models.principal import Principal


class ApprovalPolicy(Model):
    """Ordered steps of approvers that a request for a covered attached profile must pass before issuance.

    Steps are a JSON list of {"approvers": [principal ids], "required": n}, decided in order.
    """

    id = fields.UUIDField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="approval_policies"
    )
    application_id: uuid.UUID
    name = fields.CharField(max_length=100)
    steps: fields.JSONField[Any] = fields.JSONField(default=list)
    max_request_ttl_seconds = fields.IntField()
    # Machine identities (API tokens) issue at once, without a request.
    bypass_machine_identities = fields.BooleanField(default=False)
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "approval_policy"
        unique_together = (("application_id", "name"),)


class ApprovalPolicyAttachment(Model):
    """One attached profile covered by a policy (looked up by attachment on every issuance)."""

    id = fields.UUIDField(primary_key=True)
    policy: fields.ForeignKeyRelation[ApprovalPolicy] = fields.ForeignKeyField(
        "models.ApprovalPolicy", related_name="coverage", on_delete=fields.CASCADE
    )
    policy_id: uuid.UUID
    attachment: fields.ForeignKeyRelation[ApplicationProfile] = fields.ForeignKeyField(
        "models.ApplicationProfile", related_name="approval_coverage", on_delete=fields.CASCADE
    )
    attachment_id: uuid.UUID

    class Meta:
        table = "approval_policy_attachment"
        unique_together = (("policy_id", "attachment_id"),)
        indexes = (("attachment_id",),)


class ApprovalRequest(Model):
    """A certificate request held back by a policy, with what is needed to issue it once approved.

    A server-generated key is never stored here: it is generated at issuance, after the approval.
    """

    id = fields.UUIDField(primary_key=True)
    organization_id = fields.UUIDField()
    policy: fields.ForeignKeyNullableRelation[ApprovalPolicy] = fields.ForeignKeyField(
        "models.ApprovalPolicy", related_name="requests", null=True, on_delete=fields.SET_NULL
    )
    policy_id: uuid.UUID | None
    policy_name = fields.CharField(max_length=100)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="approval_requests"
    )
    application_id: uuid.UUID
    attachment: fields.ForeignKeyRelation[ApplicationProfile] = fields.ForeignKeyField(
        "models.ApplicationProfile", related_name="approval_requests"
    )
    attachment_id: uuid.UUID
    profile_id = fields.UUIDField()
    # The requesting user or machine identity, null for protocol clients (ACME, EST, SCEP).
    requester: fields.ForeignKeyNullableRelation[Principal] = fields.ForeignKeyField(
        "models.Principal", related_name="approval_requests", null=True, on_delete=fields.SET_NULL
    )
    requester_id: uuid.UUID | None
    # Who asked as the audit log names them, e.g. "est:device-1" or "acme:<account id>".
    requester_name = fields.CharField(max_length=200)
    method = fields.CharField(max_length=8)  # api | acme | est | scep
    csr_pem = fields.TextField(null=True)
    # Subject, SANs, key algorithm, usages, validity seconds, metadata, auto-renew as requested.
    request: fields.JSONField[Any] = fields.JSONField(default=dict)
    # Common name and SANs for listings and notifications.
    summary: fields.JSONField[Any] = fields.JSONField(default=dict)
    # The policy's steps as they were at submission.
    steps: fields.JSONField[Any] = fields.JSONField(default=list)
    status = fields.CharField(max_length=16, default="pending")
    current_step = fields.IntField(default=0)
    expires_at = fields.DatetimeField()
    decided_at = fields.DatetimeField(null=True)
    failure_reason = fields.TextField(null=True)
    certificate: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="approval_requests", null=True, on_delete=fields.SET_NULL
    )
    certificate_id: uuid.UUID | None
    # A renewal: the certificate the approved request renews (it becomes `renewed` once, at issuance).
    renewal_of: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="renewal_requests", null=True, on_delete=fields.SET_NULL
    )
    renewal_of_id: uuid.UUID | None
    # The protocol's own handle: ACME order id, EST identity and CSR key digest, SCEP transaction row id.
    correlation = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "approval_request"
        indexes = (
            ("application_id", "status", "expires_at"),
            ("status", "expires_at"),
            ("organization_id", "created_at"),
            ("requester_id",),
            ("attachment_id", "correlation"),
            ("renewal_of_id", "status"),
        )


class ApprovalDecision(Model):
    """One approver's approval or rejection at one step."""

    id = fields.UUIDField(primary_key=True)
    request: fields.ForeignKeyRelation[ApprovalRequest] = fields.ForeignKeyField(
        "models.ApprovalRequest", related_name="decisions", on_delete=fields.CASCADE
    )
    request_id: uuid.UUID
    step = fields.IntField()
    approver: fields.ForeignKeyNullableRelation[Principal] = fields.ForeignKeyField(
        "models.Principal", related_name="approval_decisions", null=True, on_delete=fields.SET_NULL
    )
    approver_id: uuid.UUID | None
    approver_name = fields.CharField(max_length=200)
    decision = fields.CharField(max_length=8)  # approve | reject
    comment = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "approval_decision"
        unique_together = (("request_id", "step", "approver_id"),)
        indexes = (("approver_id", "created_at"),)
