"""Fixtures for pki tests (helpers live in pki_support so test modules can import them)."""

from collections.abc import Callable

import pytest
from pki_support import Hierarchy, build_hierarchy

from pki.key import KeyAlgorithm


@pytest.fixture(scope="session")
def hierarchy_for() -> Callable[[KeyAlgorithm], Hierarchy]:
    """Hierarchies built once per algorithm for the whole run."""
    built: dict[KeyAlgorithm, Hierarchy] = {}

    def get(algorithm: KeyAlgorithm) -> Hierarchy:
        if algorithm not in built:
            built[algorithm] = build_hierarchy(algorithm)
        return built[algorithm]

    return get
