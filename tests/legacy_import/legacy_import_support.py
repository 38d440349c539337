"""Shared helpers of the legacy import tests: the example export, row counts of every table, and the
refusal check (an InvalidImport that names its problems and leaves every table as it was)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from tortoise import Tortoise

from core.authz import Actor
from core.errors import InvalidImport
from core.legacy.importer import ImportReport, import_legacy_project
from models import AuditEvent
from models.enums import AuditOutcome

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PATH = ROOT / "examples" / "legacy-export.json"
_EXAMPLE: dict[str, Any] = json.loads(EXAMPLE_PATH.read_text())

# What the example creates (scripts/make-legacy-example documents it).
EXAMPLE_CREATED = {
    "project": 1,
    "role": 2,
    "principal": 5,
    "member": 5,
    "ca": 1,
    "policy": 2,
    "profile": 4,
    "certificate": 5,
    "alert": 1,
    "sync": 1,
    "approval_policy": 1,
}


def example() -> dict[str, Any]:
    """A fresh copy of examples/legacy-export.json, free to change."""
    return copy.deepcopy(_EXAMPLE)


def profile_index(document: dict[str, Any], slug: str) -> int:
    return next(i for i, p in enumerate(document["profiles"]) if p["slug"] == slug)


def certificate_index(document: dict[str, Any], slug: str) -> int:
    return next(i for i, c in enumerate(document["certificates"]) if c["slug"] == slug)


async def row_counts() -> dict[str, int]:
    """Rows of every table (successful audit entries only: a refusal may audit itself)."""
    counts: dict[str, int] = {}
    for models in Tortoise.apps.values():
        for name, model in sorted(models.items()):
            if name in {"AuditEvent", "AuditChainHead"}:
                continue
            counts[name] = await model.all().count()
    counts["AuditEvent(success)"] = await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).count()
    return counts


async def run_import(document: Any, organization_id: Any, **kwargs: Any) -> ImportReport:
    return await import_legacy_project(document, actor=Actor.system(organization_id, "test"), **kwargs)


async def refused(document: Any, organization_id: Any) -> list[dict[str, str]]:
    """The problems of a refused import, after checking that no table changed."""
    before = await row_counts()
    with pytest.raises(InvalidImport) as caught:
        await run_import(document, organization_id)
    assert caught.value.code == "INVALID_IMPORT"
    assert await row_counts() == before, "a refused import changed the database"
    problems: list[dict[str, str]] = caught.value.details["problems"]
    assert problems and all(set(p) == {"path", "message"} and p["message"] for p in problems)
    return problems


def paths(problems: list[dict[str, str]]) -> set[str]:
    return {p["path"] for p in problems}


def with_many_certificates(
    document: dict[str, Any], count: int, profile: str = "web-checkout"
) -> dict[str, Any]:
    """The document plus `count` certificates signed by its CA (one shared leaf key, distinct serials), under
    a copy of the API profile that nothing else uses."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = document["certificateAuthorities"][0]
    issuer = x509.load_pem_x509_certificate(ca["certificatePem"].encode())
    issuer_key: Any = serialization.load_pem_private_key(ca["privateKeyPem"].encode(), None)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    document["profiles"].append(dict(document["profiles"][profile_index(document, "web-api")], slug=profile))
    for number in range(count):
        name = f"host-{number}.checkout.payments.example.com"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        item: dict[str, Any] = {
            "slug": f"bulk-{number}",
            "profile": profile,
            "certificatePem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        }
        if number % 100 == 0:
            item.update(
                status="revoked", revokedAt="2025-03-01T00:00:00Z", revocationReason="cessationOfOperation"
            )
        document["certificates"].append(item)
    return document
