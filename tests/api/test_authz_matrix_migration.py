"""The authorization matrix (SPEC §2) for the migration assistant: `migrationPlan` and `applyMigration` are
the Product Admin's; Product Members (application roles or none) are refused; another organization's Product
Admin finds no such legacy project; nobody without a token gets in.

MIGRATION_OPERATIONS joins ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage check
counts these fields; the cells run here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from authz_matrix_support import FORBIDDEN, NOT_FOUND, Operation, check_rows, expect, run_cell
from conftest import CAST_ROLES, Cast, GraphQL

from core.authz import Actor
from core.legacy import migration

# The example export, imported the way the migration tests import it.
_LEGACY_MIGRATION_TESTS = Path(__file__).resolve().parents[1] / "legacy_migration"
if str(_LEGACY_MIGRATION_TESTS) not in sys.path:
    sys.path.append(str(_LEGACY_MIGRATION_TESTS))

from migration_support import import_example  # noqa: E402

PRODUCT_ADMIN_ONLY = expect(FORBIDDEN, foreign=NOT_FOUND)


async def a_legacy_project(cast: Cast, role: str) -> dict[str, Any]:
    imported = await import_example(cast.organization_id)
    return {"id": str(imported.project_id)}


async def a_plan(cast: Cast, role: str) -> dict[str, Any]:
    imported = await import_example(cast.organization_id)
    plan = await migration.migration_plan(
        actor=Actor.system(cast.organization_id, "matrix"), legacy_project_id=imported.project_id
    )
    return {"plan": plan.to_document()}


def check_planned(data: dict[str, Any], variables: dict[str, Any]) -> None:
    plan = data["migrationPlan"]
    assert [a["name"] for a in plan["applications"]] == ["payments"]
    assert plan["document"]["projectId"] == variables["id"]
    assert "legacy-est-passphrase-2019" not in str(data)


def check_applied(data: dict[str, Any], variables: dict[str, Any]) -> None:
    result = data["applyMigration"]
    assert result["changed"] is True
    assert [a["status"] for a in result["applications"]] == ["CREATED"]


MIGRATION_OPERATIONS = [
    Operation(
        "migrationPlan",
        "query($id: ID!) { migrationPlan(legacyProjectId: $id) { projectId fingerprint document "
        "applications { name status profiles { slug status } members { name role } } "
        "warnings { kind message } conflicts { kind message } clientGuide { method old new keeps } } }",
        PRODUCT_ADMIN_ONLY,
        a_legacy_project,
        check=check_planned,
    ),
    Operation(
        "applyMigration",
        "mutation($plan: JSON!) { applyMigration(plan: $plan) { projectId changed message "
        "applications { name status applicationId created } clientGuide { method new } } }",
        PRODUCT_ADMIN_ONLY,
        a_plan,
        check=check_applied,
    ),
]

CELLS = [pytest.param(op, role, id=f"{op.name}-{role}") for op in MIGRATION_OPERATIONS for role in CAST_ROLES]


def test_migration_rows_name_every_role() -> None:
    check_rows(MIGRATION_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_migration_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
