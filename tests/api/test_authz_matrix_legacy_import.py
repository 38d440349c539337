"""The authorization matrix (SPEC §2) for importing a legacy project export: Product Admins only.

LEGACY_IMPORT_OPERATIONS joins ALL_OPERATIONS in test_authz_matrix_pki_certificates.py so the coverage check
counts it. The foreign Product Admin imports into their own organization (globex), like every creation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from authz_matrix_support import PRODUCT_ADMIN_CREATES, Operation, check_rows, run_cell
from conftest import CAST_ROLES, Cast, GraphQL

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "legacy-export.json"


async def example_export(cast: Cast, role: str) -> dict[str, Any]:
    return {"document": json.loads(EXAMPLE.read_text())}


def check_imported(data: dict[str, Any], variables: dict[str, Any]) -> None:
    report = data["importLegacyProject"]
    assert report["projectSlug"] == "payments" and report["alreadyImported"] is False
    assert {"kind": "certificate", "count": 5} in report["created"]


LEGACY_IMPORT_OPERATIONS = [
    Operation(
        "importLegacyProject",
        "mutation($document: JSON!) { importLegacyProject(document: $document) "
        "{ projectId projectSlug alreadyImported created { kind count } existing { kind count } } }",
        PRODUCT_ADMIN_CREATES,
        example_export,
        check=check_imported,
    ),
]

CELLS = [
    pytest.param(op, role, id=f"{op.name}-{role}") for op in LEGACY_IMPORT_OPERATIONS for role in CAST_ROLES
]


def test_legacy_import_rows_name_every_role() -> None:
    check_rows(LEGACY_IMPORT_OPERATIONS)


@pytest.mark.parametrize(("operation", "role"), CELLS)
async def test_legacy_import_matrix(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    await run_cell(gql, cast, operation, role)
