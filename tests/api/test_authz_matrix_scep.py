"""The authorization matrix (SPEC §2) for SCEP: application Admins (and Product Admins) enable, update and
disable SCEP; Operators and Admins create dynamic one-time challenges; every member sees the settings,
never a challenge (there is no field that could show the static one).

SCEP_OPERATIONS joins ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage checks count
these mutations; the cells run here.
"""

from __future__ import annotations

from typing import Any

import pytest
from authz_matrix_support import APP_ADMIN, APP_OPERATE, APP_READ, Operation, check_rows, run_cell
from conftest import CAST_ROLES, Cast, GraphQL
from factories import make_pki

from core import scep as scep_service
from core.authz import Actor
from models import ApplicationProfile, Organization


async def _attachment(cast: Cast, *, mode: str | None) -> ApplicationProfile:
    """A real PKI (the RA certificate is issued by the profile's CA) attached; SCEP on in `mode`."""
    org = await Organization.get(id=cast.organization_id)
    pki = await make_pki(org)
    attachment = await ApplicationProfile.create(
        application_id=cast.application_id, profile_id=pki.profile.id
    )
    if mode is not None:
        attachment = await scep_service.enable_scep(
            actor=Actor.system(cast.organization_id),
            application_id=cast.application_id,
            profile_id=pki.profile.id,
            challenge_mode=mode,
            static_challenge="matrix-static-secret" if mode == "static" else None,
        )
    return attachment


async def a_plain_attachment(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, mode=None)
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "profileId": str(attachment.profile_id),
            "challengeMode": "STATIC",
            "staticChallenge": "a-new-static-secret",
        }
    }


async def a_scep_attachment(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, mode="static")
    return {"a": str(cast.application_id), "p": str(attachment.profile_id)}


async def an_update(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, mode="static")
    return {
        "input": {
            "applicationId": str(cast.application_id),
            "profileId": str(attachment.profile_id),
            "challengeMode": "DYNAMIC",
            "maxPendingChallenges": 5,
        }
    }


async def a_dynamic_attachment(cast: Cast, role: str) -> dict[str, Any]:
    attachment = await _attachment(cast, mode="dynamic")
    return {"a": str(cast.application_id), "p": str(attachment.profile_id)}


async def an_application_with_scep(cast: Cast, role: str) -> dict[str, Any]:
    await _attachment(cast, mode="static")
    return {"id": str(cast.application_id)}


def _enabled(data: dict[str, Any], variables: dict[str, Any]) -> None:
    scep = next(iter(data.values()))["scep"]
    assert scep["enabled"] and scep["challengeSet"] and scep["raCertificatePem"].startswith("-----BEGIN")


def _challenge(data: dict[str, Any], variables: dict[str, Any]) -> None:
    assert len(data["generateScepChallenge"]["challenge"]) == 40


SCEP_OPERATIONS = [
    Operation(
        "scepSettings",
        "query($id: ID!) { application(id: $id) { profiles { scep { enabled url challengeMode challengeSet "
        "challengeTtlSeconds maxPendingChallenges includeCa allowRenewal raCertificatePem "
        "pendingChallenges } } } }",
        APP_READ,
        an_application_with_scep,
    ),
    Operation(
        "enableScep",
        "mutation($input: EnableScepInput!) { enableScep(input: $input) "
        "{ id scep { enabled challengeSet raCertificatePem } } }",
        APP_ADMIN,
        a_plain_attachment,
        check=_enabled,
    ),
    Operation(
        "updateScep",
        "mutation($input: UpdateScepInput!) { updateScep(input: $input) "
        "{ scep { enabled challengeMode maxPendingChallenges challengeSet raCertificatePem } } }",
        APP_ADMIN,
        an_update,
        check=_enabled,
    ),
    Operation(
        "disableScep",
        "mutation($a: ID!, $p: ID!) { disableScep(applicationId: $a, profileId: $p) { scep { enabled } } }",
        APP_ADMIN,
        a_scep_attachment,
    ),
    Operation(
        "generateScepChallenge",
        "mutation($a: ID!, $p: ID!) { generateScepChallenge(applicationId: $a, profileId: $p) "
        "{ id challenge expiresAt } }",
        APP_OPERATE,
        a_dynamic_attachment,
        check=_challenge,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in SCEP_OPERATIONS for role in CAST_ROLES]


def test_scep_rows_name_every_role() -> None:
    check_rows(SCEP_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_scep_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
