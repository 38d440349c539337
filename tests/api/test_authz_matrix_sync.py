"""The authorization matrix (SPEC §2) for syncs: application Admins (and Product Admins) create, change and
delete them; Operators run them and remove certificates from them; Auditors read them; nobody reads a
credential (only `credentialsSet`).

SYNC_OPERATIONS joins ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage check counts
these mutations; the cells run here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from authz_matrix_support import APP_ADMIN, APP_OPERATE, APP_READ, Operation, check_rows, run_cell
from conftest import CAST_ROLES, Cast, GraphQL

from core import sync as sync_service
from models import Certificate
from models.enums import CertificateSource, EnrollmentMethod
from models.sync import Sync, SyncDestination, SyncTarget, SyncTargetStatus

SIGNING_SECRET = "matrix-sync-signing-secret-0123"


async def _sync(cast: Cast) -> Sync:
    sync_id = uuid.uuid4()
    return await Sync.create(
        id=sync_id,
        application_id=cast.application_id,
        name=f"sync-{uuid.uuid4().hex[:6]}",
        destination=SyncDestination.HTTP,
        connection={"url": "https://sync.example.test/hook"},
        encrypted_credentials=sync_service.seal_credentials(sync_id, {"signingSecret": SIGNING_SECRET}),
        auto_sync=False,
    )


async def an_application(cast: Cast, role: str) -> dict[str, Any]:
    return {"app": str(cast.application_id)}


async def a_sync(cast: Cast, role: str) -> dict[str, Any]:
    return {"id": str((await _sync(cast)).id)}


async def a_pushed_certificate(cast: Cast, role: str) -> dict[str, Any]:
    sync = await _sync(cast)
    now = datetime.now(UTC)
    certificate = await Certificate.create(
        id=uuid.uuid4(),
        organization_id=cast.organization_id,
        application_id=cast.application_id,
        serial_hex=uuid.uuid4().hex,
        common_name="pushed.example.com",
        subject_dn="CN=pushed.example.com",
        key_algorithm="EC_P256",
        signature_algorithm="ecdsa-with-SHA256",
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=30),
        source=CertificateSource.IMPORTED,
        enrollment_method=EnrollmentMethod.IMPORT,
        certificate_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        fingerprint_sha256=uuid.uuid4().hex * 2,
    )
    await SyncTarget.create(
        id=uuid.uuid4(),
        sync_id=sync.id,
        certificate_id=certificate.id,
        status=SyncTargetStatus.SUCCEEDED,
        remote_reference="https://sync.example.test/hook#x",
    )
    return {"sync": str(sync.id), "certificate": str(certificate.id)}


async def a_new_sync(cast: Cast, role: str) -> dict[str, Any]:
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "name": f"new-{role}",
            "destination": "HTTP",
            "connection": {"url": "https://sync.example.test/new"},
            "credentials": {"signingSecret": SIGNING_SECRET},
        }
    }


def check_no_credentials(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert SIGNING_SECRET not in str(data)


SYNC_OPERATIONS = [
    Operation(
        "syncs",
        "query($app: ID!) { syncs(applicationId: $app) { id name destination connection credentialsSet } }",
        APP_READ,
        an_application,
        check=check_no_credentials,
    ),
    Operation(
        "sync",
        "query($id: ID!) { sync(id: $id) { id credentialsSet format targets(first: 5) { edges { cursor "
        "node { id status message attempts remoteReference } } pageInfo { hasNextPage } } } }",
        APP_READ,
        a_sync,
        check=check_no_credentials,
    ),
    Operation(
        "createSync",
        "mutation($input: CreateSyncInput!) { createSync(input: $input) { id credentialsSet } }",
        APP_ADMIN,
        a_new_sync,
        check=check_no_credentials,
    ),
    Operation(
        "updateSync",
        'mutation($id: ID!) { updateSync(id: $id, input: {name: "renamed", removeOnExpiry: true}) '
        "{ id name removeOnExpiry } }",
        APP_ADMIN,
        a_sync,
    ),
    Operation("deleteSync", "mutation($id: ID!) { deleteSync(id: $id) }", APP_ADMIN, a_sync),
    Operation(
        "runSync",
        "mutation($id: ID!) { runSync(id: $id) { queued sync { id } } }",
        APP_OPERATE,
        a_sync,
    ),
    Operation(
        "removeFromSync",
        "mutation($sync: ID!, $certificate: ID!) "
        "{ removeFromSync(syncId: $sync, certificateId: $certificate) { id action status } }",
        APP_OPERATE,
        a_pushed_certificate,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in SYNC_OPERATIONS for role in CAST_ROLES]


def test_sync_rows_name_every_role() -> None:
    check_rows(SYNC_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_sync_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
