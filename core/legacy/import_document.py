"""Reading a legacy export (format v1): the JSON Schema, JSON paths, canonical hashes, and the checks that
need no database. Each check adds a problem with its JSON path in the file instead of stopping, so a bad
export comes back with every problem at once.

The domain validators of the services that later write the rows (profiles, policies, EST, SCEP, alerts,
syncs, approvals) run here too, on the file's values, so their refusals arrive with the others.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from core.errors import InvalidInput, KeywardError
from models import CertificateAuthority, Principal
from models.enums import CertificateStatus, EnrollmentMethod
from pki.certificate import (
    CertificateFacts,
)
from pki.key import KeyAlgorithm, PrivateKey

SCHEMA_FILE = Path(__file__).with_name("export-v1.schema.json")
FORMAT_VERSIONS = ("1",)
MAX_PRODUCT_NAME = 100  # CertificateAuthority/Policy/Profile names are `{project}/{slug}`
METHODS = ("api", "acme", "est", "scep")
MIN_EAB_KEY_BYTES = 16
SECTIONS = (
    "roles",
    "members",
    "certificateAuthorities",
    "policies",
    "profiles",
    "certificates",
    "alerts",
    "syncs",
    "approvalPolicies",
)


@lru_cache(maxsize=1)
def export_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def canonical_json(value: Any) -> bytes:
    """The one serialization hashes are taken over: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def json_path(*parts: str | int) -> str:
    """`json_path("profiles", 2, "ca")` -> `$.profiles[2].ca`."""
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


FIELD_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def join_field(path: str, field_name: str | None, renames: Mapping[str, str] | None = None) -> str:
    """A service error's `field` (e.g. `channels[0].config.url`) appended to an item's JSON path, after
    renaming the service's input names to the file's (`profileIds` -> `profiles`)."""
    if not field_name:
        return path
    for source, target in (renames or {}).items():
        if field_name == source or field_name.startswith(source + ".") or field_name.startswith(source + "["):
            field_name = target + field_name[len(source) :]
            break
    for name, index in FIELD_TOKEN.findall(field_name):
        path += f"[{index}]" if index else f".{name}"
    return path


@dataclass
class Problems:
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        entry = {"path": path, "message": message}
        if entry not in self.items:
            self.items.append(entry)

    def error(self, path: str, error: KeywardError, renames: Mapping[str, str] | None = None) -> None:
        """A service validator's refusal, at the path its field names (each policy violation on its own)."""
        violations = error.details.get("violations") if isinstance(error, InvalidInput) else None
        if violations:
            for violation in violations:
                self.add(join_field(path, violation.get("field"), renames), violation.get("message", ""))
            return
        self.add(join_field(path, error.details.get("field"), renames), error.message)

    def check(
        self, path: str, check: Callable[..., Any], *args: Any, renames: Mapping[str, str] | None = None
    ) -> tuple[bool, Any]:
        """Run a validator on `args`; (True, its result) or (False, None) with its refusal recorded."""
        try:
            return True, check(*args)
        except KeywardError as error:
            self.error(path, error, renames)
            return False, None

    def __bool__(self) -> bool:
        return bool(self.items)

    def sorted(self) -> list[dict[str, str]]:
        return list(self.items)


# ---------------------------------------------------------------- items, reports

Progress = Callable[[int, int], None]

# Section of the file -> LegacyResource.kind, and the key that names an item of it.
KINDS: dict[str, tuple[str, str]] = {
    "roles": ("role", "slug"),
    "members": ("member", "member"),
    "certificateAuthorities": ("ca", "slug"),
    "policies": ("policy", "slug"),
    "profiles": ("profile", "slug"),
    "certificates": ("certificate", "slug"),
    "alerts": ("alert", "name"),
    "syncs": ("sync", "name"),
    "approvalPolicies": ("approval_policy", "name"),
}


@dataclass
class ImportReport:
    """What an import created, and (on a re-run) what was already there, per kind of item."""

    project_id: uuid.UUID
    project_slug: str
    created: dict[str, int] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)


def container_name(project_slug: str) -> str:
    return f"legacy:{project_slug}"


def item_key(section: str, item: dict[str, Any]) -> str | None:
    """The name an item is known by in LegacyResource.slug: slug, name, or a member's email / machine name."""
    _, key = KINDS[section]
    if key == "member":
        if item.get("kind") == "user" and isinstance(item.get("email"), str):
            return str(item["email"]).strip().lower()
        return str(item["name"]).strip() if isinstance(item.get("name"), str) else None
    value = item.get(key)
    return value.strip() if isinstance(value, str) else None


# ---------------------------------------------------------------- JSON Schema


def _words(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    spoken = {"object": "an object", "array": "an array", "string": "text", "integer": "a whole number"}
    return " or ".join(spoken.get(name, name) for name in names)


def _schema_message(error: ValidationError) -> str:
    """A message that names the rule without echoing the value (it may be a private key)."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    validator, expected = error.validator, error.validator_value
    if validator in ("required", "additionalProperties", "dependentRequired"):
        return str(error.message)
    if validator == "type":
        return f"must be {_words(expected)}"
    if validator == "enum":
        return "must be one of " + ", ".join(json.dumps(choice) for choice in expected)
    if validator == "const":
        return f"must be {json.dumps(expected)}"
    if validator == "pattern":
        return str(schema.get("x-pattern-message") or f"does not match the pattern {expected}")
    if validator == "minLength":
        return "must not be empty" if expected == 1 else f"must be at least {expected} characters"
    if validator == "maxLength":
        return f"must be at most {expected} characters"
    if validator == "minItems":
        return "must not be empty" if expected == 1 else f"must hold at least {expected} items"
    if validator == "maxItems":
        return f"must hold at most {expected} items"
    if validator == "uniqueItems":
        return "must not repeat an item"
    if validator == "minimum":
        return f"must be at least {expected}"
    if validator == "maximum":
        return f"must be at most {expected}"
    return str(schema.get("x-message") or f"does not satisfy the {validator} rule of the export schema")


def check_schema(document: Any, problems: Problems) -> set[str]:
    """Every JSON Schema violation as a problem; returns the paths of the items that have one."""
    validator = Draft202012Validator(export_schema())
    bad: set[str] = set()
    for error in sorted(validator.iter_errors(document), key=lambda e: (e.json_path, str(e.validator))):
        problems.add(error.json_path, _schema_message(error))
        bad.add(error.json_path)
    return bad


# ---------------------------------------------------------------- the parsed export


@dataclass
class CaItem:
    index: int
    slug: str
    path: str
    data: dict[str, Any]
    name: str  # the product-level name: `{project}/{slug}`
    existing_name: str | None = None
    certificate: x509.Certificate | None = None
    facts: CertificateFacts | None = None
    key: PrivateKey | None = None
    key_algorithm: KeyAlgorithm | None = None
    parent_slug: str | None = None
    chain: list[x509.Certificate] = field(default_factory=list)
    existing: CertificateAuthority | None = None  # filled by the database checks


@dataclass
class PolicyItem:
    index: int
    slug: str
    path: str
    data: dict[str, Any]
    name: str
    rules: dict[str, Any] | None = None


@dataclass
class ProfileItem:
    index: int
    slug: str
    path: str
    data: dict[str, Any]
    name: str
    method: EnrollmentMethod
    defaults: dict[str, Any] | None = None  # model fields from profile._normalize_defaults
    settings: dict[str, Any] = field(default_factory=dict)
    eab_key: bytes | None = None


@dataclass
class CertificateItem:
    index: int
    slug: str
    path: str
    data: dict[str, Any]
    profile_slug: str
    certificate: x509.Certificate
    facts: CertificateFacts
    key: PrivateKey | None
    status: CertificateStatus
    revoked_at: datetime | None
    revocation_reason: str | None
    auto_renew: bool
    metadata: dict[str, str]


@dataclass
class MemberItem:
    index: int
    key: str  # lower-cased email of a user, name of a machine identity
    path: str
    data: dict[str, Any]
    kind: str
    email: str | None
    name: str
    role: str
    custom_role: str | None
    permissions: frozenset[str]
    principal: Principal | None = None  # an existing principal it is matched to (the database checks)


@dataclass
class ParsedExport:
    document: dict[str, Any]
    project_slug: str
    project_name: str
    project_description: str
    roles: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    members: list[MemberItem] = field(default_factory=list)
    cas: dict[str, CaItem] = field(default_factory=dict)
    policies: dict[str, PolicyItem] = field(default_factory=dict)
    profiles: dict[str, ProfileItem] = field(default_factory=dict)
    certificates: list[CertificateItem] = field(default_factory=list)
    alerts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    syncs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    approval_policies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def items(self, section: str) -> list[Any]:
        value = self.document.get(section)
        return value if isinstance(value, list) else []

    @property
    def total_items(self) -> int:
        return sum(len(self.items(section)) for section in SECTIONS)
