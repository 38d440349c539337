"""Value sets stored in the database; the GraphQL enums mirror them."""

from __future__ import annotations

from enum import Enum


class PrincipalKind(str, Enum):
    USER = "user"
    MACHINE = "machine"


class TokenKind(str, Enum):
    SESSION = "session"  # from a password login; expires
    API = "api"  # for machine identities and bootstrap; may expire


class ProductRole(str, Enum):
    ADMIN = "admin"
    MEMBER = "member"


class ApplicationRole(str, Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"


class CaKind(str, Enum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"


class CaStatus(str, Enum):
    PENDING_CERTIFICATE = "pending_certificate"
    ACTIVE = "active"
    DISABLED = "disabled"


class CertificateStatus(str, Enum):
    ACTIVE = "active"
    RENEWED = "renewed"
    REVOKED = "revoked"
    EXPIRED = "expired"


class CertificateSource(str, Enum):
    ISSUED = "issued"
    IMPORTED = "imported"


class EnrollmentMethod(str, Enum):
    API = "api"
    ACME = "acme"
    EST = "est"
    SCEP = "scep"
    IMPORT = "import"


class AuditOutcome(str, Enum):
    SUCCESS = "success"
    FAILURE = "failure"


class ChannelType(str, Enum):
    EMAIL = "email"
    WEBHOOK = "webhook"
    SLACK = "slack"
    PAGERDUTY = "pagerduty"


class DeliveryStatus(str, Enum):
    PENDING = "pending"  # waiting for its next attempt
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # out of attempts; retryable by hand
