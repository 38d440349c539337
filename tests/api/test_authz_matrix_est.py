"""The authorization matrix (SPEC §2) for EST settings: application Admins (and Product Admins) enable, update
and disable EST; Operators and Auditors see the settings (never the passphrase, which nothing returns).

EST_OPERATIONS joins ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage checks count
these mutations; the cells run here.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from authz_matrix_support import APP_ADMIN, APP_READ, Operation, check_rows, run_cell
from conftest import CAST_ROLES, Cast, GraphQL, create_profile_rows

from core import est as est_service
from core.authz import Actor
from models import ApplicationProfile

PASSPHRASE = "matrix-passphrase"


async def _attachment(cast: Cast, *, enabled: bool) -> ApplicationProfile:
    profile = await create_profile_rows(cast.organization_id, name=f"est-{uuid.uuid4().hex[:6]}")
    attachment = await ApplicationProfile.create(application_id=cast.application_id, profile_id=profile.id)
    if enabled:
        attachment = await est_service.enable_est(
            actor=Actor.system(cast.organization_id),
            application_id=cast.application_id,
            profile_id=profile.id,
            passphrase=PASSPHRASE,
        )
    return attachment


async def a_plain_attachment(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, enabled=False)
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "profileId": str(attachment.profile_id),
            "username": "devices",
            "passphrase": PASSPHRASE,
        }
    }


async def an_est_attachment_update(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, enabled=True)
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "profileId": str(attachment.profile_id),
            "passphrase": "another-passphrase",
        }
    }


async def an_est_attachment(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, enabled=True)
    return {"a": str(cast.application_id), "p": str(attachment.profile_id)}


async def an_application_with_est(cast: Cast, role: str) -> dict[str, Any]:
    await _attachment(cast, enabled=True)
    return {"id": str(cast.application_id)}


def _enabled(data: dict[str, Any], variables: dict[str, Any]) -> None:
    est = next(iter(data.values()))["est"]
    assert est["enabled"] and est["passphraseSet"]


def _settings(data: dict[str, Any], variables: dict[str, Any]) -> None:
    est = data["application"]["profiles"][0]["est"]
    assert est["enabled"] and est["passphraseSet"] and est["url"].endswith(est["url"].split("/")[-1])


EST_OPERATIONS = [
    Operation(
        "estSettings",
        "query($id: ID!) { application(id: $id) { profiles { est "
        "{ enabled url aliasUrl username passphraseSet clientCaSubjects } } } }",
        APP_READ,
        an_application_with_est,
        check=_settings,
    ),
    Operation(
        "enableEst",
        "mutation($input: EnableEstInput!) { enableEst(input: $input) "
        "{ id est { enabled username passphraseSet } } }",
        APP_ADMIN,
        a_plain_attachment,
        check=_enabled,
    ),
    Operation(
        "updateEst",
        "mutation($input: UpdateEstInput!) { updateEst(input: $input) { est { enabled passphraseSet } } }",
        APP_ADMIN,
        an_est_attachment_update,
        check=_enabled,
    ),
    Operation(
        "disableEst",
        "mutation($a: ID!, $p: ID!) { disableEst(applicationId: $a, profileId: $p) { est { enabled } } }",
        APP_ADMIN,
        an_est_attachment,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in EST_OPERATIONS for role in CAST_ROLES]


def test_est_rows_name_every_role() -> None:
    check_rows(EST_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_est_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
