"""Sync destinations: each pushes a certificate's material to one kind of place and removes it again.

A destination raises SyncFailure with a message safe to store and show (never a credential); anything else
it raises is reported by the runner by exception type only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from models.sync import SyncDestination, SyncFormat


class SyncFailure(Exception):
    """A failed push or removal; `retryable` failures are tried again with backoff."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class Material:
    """What a push carries. The private key is present only when the sync wants it and the server holds it."""

    certificate_id: uuid.UUID
    name: str  # the rendered name template, safe as a file or object name
    common_name: str | None
    serial: str
    not_after: datetime
    format: SyncFormat
    certificate_pem: str
    chain_pems: list[str] = field(default_factory=list)
    private_key_pem: str | None = field(default=None, repr=False)
    # PKCS#12 or JKS bytes when the format is not PEM.
    bundle: bytes | None = field(default=None, repr=False)

    @property
    def fullchain_pem(self) -> str:
        return self.certificate_pem + "".join(self.chain_pems)

    @property
    def bundle_extension(self) -> str:
        return {SyncFormat.PKCS12: "p12", SyncFormat.JKS: "jks"}.get(self.format, "crt")


@dataclass(frozen=True)
class Target:
    """The sync as a destination sees it: its non-secret connection settings and unsealed credentials."""

    sync_id: uuid.UUID
    sync_name: str
    application_name: str
    connection: dict[str, Any]
    credentials: dict[str, str] = field(repr=False)


class Destination(Protocol):
    # Whether a renewal re-uses the predecessor's remote reference (ACM re-imports into the same ARN).
    reuses_reference: bool

    def check(self, connection: dict[str, Any], credentials: dict[str, str]) -> dict[str, Any]:
        """Validate and normalize the connection settings and the (effective) credentials: InvalidInput."""
        ...

    async def push(self, target: Target, material: Material, reference: str | None) -> str:
        """Put the material at the destination; returns where it lives (path, URL, ARN)."""
        ...

    async def remove(self, target: Target, reference: str, certificate_id: uuid.UUID) -> None:
        """Take it away again; a reference that is already gone is not an error."""
        ...


def destination_for(kind: SyncDestination) -> Destination:
    from core.sync_destinations import aws, http, local, sftp

    table: dict[SyncDestination, Destination] = {
        SyncDestination.LOCAL: local.LocalDirectory(),
        SyncDestination.SFTP: sftp.SftpHost(),
        SyncDestination.HTTP: http.HttpPush(),
        SyncDestination.AWS_ACM: aws.AwsCertificateManager(),
        SyncDestination.AWS_SECRETS: aws.AwsSecretsManager(),
    }
    return table[kind]
