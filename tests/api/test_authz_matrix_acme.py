"""The authorization matrix (SPEC §2) for ACME settings: application Admins (and Product Admins) enable,
disable and rotate ACME and read the EAB key id and HMAC key; Operators and Auditors see only the settings.

ACME_OPERATIONS joins ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage checks count
these mutations and the secret field; the cells run here.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from authz_matrix_support import APP_ADMIN, APP_READ, Operation, check_rows, run_cell
from conftest import CAST_ROLES, Cast, GraphQL, create_profile_rows

from core import application as application_service
from core.authz import Actor
from models import ApplicationProfile


async def _attachment(cast: Cast, *, enabled: bool) -> ApplicationProfile:
    profile = await create_profile_rows(cast.organization_id, name=f"acme-{uuid.uuid4().hex[:6]}")
    attachment = await ApplicationProfile.create(application_id=cast.application_id, profile_id=profile.id)
    if enabled:
        attachment = await application_service.enable_acme(
            actor=Actor.system(cast.organization_id),
            application_id=cast.application_id,
            profile_id=profile.id,
        )
    return attachment


async def a_plain_attachment(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, enabled=False)
    return {"input": {"applicationId": str(cast.application_id), "profileId": str(attachment.profile_id)}}


async def an_acme_attachment(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, enabled=True)
    return {"a": str(cast.application_id), "p": str(attachment.profile_id)}


async def an_application_with_acme(cast: Cast, role: str) -> dict[str, Any]:
    await _attachment(cast, enabled=True)
    return {"id": str(cast.application_id)}


def _revealed(data: dict[str, Any], variables: dict[str, Any]) -> None:
    acme = next(iter(data.values()))
    acme = acme["profiles"][0]["acme"] if "profiles" in acme else acme["acme"]
    assert acme["eabKid"] and acme["eabHmacKey"]


ACME_OPERATIONS = [
    Operation(
        "acmeSettings",
        "query($id: ID!) { application(id: $id) { profiles { acme { enabled eabRequired directoryUrl } } } }",
        APP_READ,
        an_application_with_acme,
    ),
    Operation(
        "acmeEabCredentials",
        "query($id: ID!) { application(id: $id) { profiles { acme { eabKid eabHmacKey } } } }",
        APP_ADMIN,
        an_application_with_acme,
        check=_revealed,
    ),
    Operation(
        "enableAcme",
        "mutation($input: EnableAcmeInput!) { enableAcme(input: $input) "
        "{ id acme { enabled eabKid eabHmacKey } } }",
        APP_ADMIN,
        a_plain_attachment,
        check=_revealed,
    ),
    Operation(
        "disableAcme",
        "mutation($a: ID!, $p: ID!) { disableAcme(applicationId: $a, profileId: $p) { acme { enabled } } }",
        APP_ADMIN,
        an_acme_attachment,
    ),
    Operation(
        "rotateAcmeEab",
        "mutation($a: ID!, $p: ID!) { rotateAcmeEab(applicationId: $a, profileId: $p) "
        "{ acme { eabKid eabHmacKey } } }",
        APP_ADMIN,
        an_acme_attachment,
        check=_revealed,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in ACME_OPERATIONS for role in CAST_ROLES]


def test_acme_rows_name_every_role() -> None:
    check_rows(ACME_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_acme_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
