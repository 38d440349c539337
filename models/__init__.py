"""Tortoise models, one module per aggregate; `models` is the single Tortoise app."""

from models.acme import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeNonce, AcmeOrder
from models.alert import Alert, AlertChannel, Delivery, DeliveryAttempt, ExpirationNotice
from models.application import Application, ApplicationProfile
from models.approval import ApprovalDecision, ApprovalPolicy, ApprovalPolicyAttachment, ApprovalRequest
from models.audit import AuditChainHead, AuditEvent
from models.certificate import Certificate
from models.legacy import LegacyMembership, LegacyMigration, LegacyProject, LegacyResource, LegacyRole
from models.membership import ApplicationMembership, ProductMembership
from models.organization import Organization
from models.outbox import OutboxEvent
from models.pki import CertificateAuthority, CertificatePolicy, CertificateProfile
from models.principal import ApiToken, Principal
from models.scep import ScepChallenge, ScepTransaction
from models.sync import Sync, SyncTarget

__all__ = [
    "AcmeAccount",
    "AcmeAuthorization",
    "AcmeChallenge",
    "AcmeNonce",
    "AcmeOrder",
    "Alert",
    "AlertChannel",
    "Delivery",
    "DeliveryAttempt",
    "ExpirationNotice",
    "ApiToken",
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalPolicyAttachment",
    "ApprovalRequest",
    "Application",
    "ApplicationMembership",
    "ApplicationProfile",
    "AuditChainHead",
    "AuditEvent",
    "Certificate",
    "CertificateAuthority",
    "CertificatePolicy",
    "CertificateProfile",
    "LegacyMembership",
    "LegacyMigration",
    "LegacyProject",
    "LegacyResource",
    "LegacyRole",
    "Organization",
    "OutboxEvent",
    "Principal",
    "ProductMembership",
    "ScepChallenge",
    "ScepTransaction",
    "Sync",
    "SyncTarget",
]
