"""Data flows one way (ARCHITECTURE.md): api/worker -> core -> pki/models. This reads every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "worker": {"api", "strawberry", "starlette", "uvicorn"},
    "core": {"api", "worker", "strawberry", "starlette", "uvicorn", "apscheduler"},
    "pki": {"api", "worker", "core", "models", "tortoise", "strawberry", "starlette"},
    "models": {"api", "worker", "core", "strawberry", "starlette"},
    # The agent is a client of the GraphQL API over HTTP: no database, no server code (issue #8).
    "agent": {"api", "worker", "core", "models", "tortoise", "strawberry", "starlette", "uvicorn"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_flow_one_way(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []
