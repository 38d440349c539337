"""The machinery of the authorization matrix (SPEC §2), shared by its test modules.

A row (`Operation`) is a GraphQL document, how to prepare its variables for one caller of the cast (fresh
targets each time), and the expected outcome per cast role: `OK` (no error) or the exact error code. The
role patterns below (APP_READ, APP_ADMIN, ...) cover most rows. The cast is the `cast` fixture of
tests/conftest.py; every cell runs on a clean database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conftest import CAST_ROLES, Cast, GraphQL
from graphql import FieldNode, TypeInfo, TypeInfoVisitor, Visitor, parse, validate, visit
from tortoise import Tortoise

from api.graphql.schema import schema
from models import AuditEvent
from models.enums import AuditOutcome

OK = "OK"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
UNAUTHENTICATED = "UNAUTHENTICATED"

APP_ROLES = ("app_admin", "app_operator", "app_auditor")


def expect(default: str, **overrides: str) -> dict[str, str]:
    """`default` for every acme product member; the Product Admin OK; no token UNAUTHENTICATED."""
    codes = {role: default for role in CAST_ROLES}
    codes.update(product_admin=OK, anonymous=UNAUTHENTICATED)
    codes.update(overrides)
    return codes


def app_gate(*allowed: str) -> dict[str, str]:
    """An application resource: allowed app roles OK, other app roles FORBIDDEN, non-members NOT_FOUND."""
    codes = expect(NOT_FOUND)
    for role in APP_ROLES:
        codes[role] = OK if role in allowed else FORBIDDEN
    return codes


APP_READ = app_gate(*APP_ROLES)
APP_ADMIN = app_gate("app_admin")
APP_OPERATE = app_gate("app_admin", "app_operator")
# Anyone signed in; a foreign caller sees their own organization.
ANY_PRINCIPAL = expect(OK, foreign=OK)
# Creations in the caller's own organization: only Product Admins (of acme, or of globex in globex).
PRODUCT_ADMIN_CREATES = expect(FORBIDDEN, foreign=OK)
# Changes to an existing acme object: Product Admin only; to another organization it does not exist.
PRODUCT_ADMIN_CHANGES = expect(FORBIDDEN, foreign=NOT_FOUND)
# Reads of an existing acme object of the shared PKI: every acme member; another organization: not found.
PKI_METADATA = expect(OK, foreign=NOT_FOUND)

Prepare = Callable[[Cast, str], Awaitable[dict[str, Any]]]
TokenFor = Callable[[Cast, str], Awaitable[str | None]]
Check = Callable[[dict[str, Any], dict[str, Any]], None]


async def no_variables(cast: Cast, role: str) -> dict[str, Any]:
    return {}


async def cast_token(cast: Cast, role: str) -> str | None:
    return cast.token(role)


@dataclass(frozen=True)
class Operation:
    name: str
    document: str
    expected: Mapping[str, str]
    prepare: Prepare = no_variables
    # The bearer token the caller sends: their cast API token unless the row needs another (a session).
    token: TokenFor = cast_token
    # Run on an allowed call with (data, variables): proves the OK was the real thing, not an empty answer.
    check: Check | None = None


async def database_state() -> dict[str, Any]:
    """Every row of every table, but the audit log's failure entries and tokens' last-use times.

    A refused call may write exactly those: the audit entry of its refusal, and the caller's token use.
    """
    state: dict[str, Any] = {
        "successful_audit_entries": await AuditEvent.filter(outcome=AuditOutcome.SUCCESS).count()
    }
    for models in Tortoise.apps.values():
        for name, model in sorted(models.items()):
            if name in {"AuditEvent", "AuditChainHead"}:
                continue
            rows = await model.all().order_by(model._meta.pk_attr).values()
            for row in rows:
                row.pop("last_used_at", None)
            state[name] = rows
    return state


async def run_cell(gql: GraphQL, cast: Cast, operation: Operation, role: str) -> None:
    """One cell: the caller gets exactly the expected code and a refusal changes nothing; or real data."""
    variables = await operation.prepare(cast, role)
    token = await operation.token(cast, role)
    before = await database_state()
    body = await gql.raw(operation.document, variables, token=token)
    codes = {error.get("extensions", {}).get("code") for error in body.get("errors") or []}
    got = OK if not codes else ",".join(sorted(str(code) for code in codes))
    assert got == operation.expected[role], body.get("errors")
    if got != OK:
        assert await database_state() == before, "a refused call changed the database"
    else:
        assert body["data"] is not None and all(value is not None for value in body["data"].values())
        if operation.check is not None:
            operation.check(body["data"], variables)


def check_rows(operations: Iterable[Operation]) -> None:
    """Every row names every role once, has a unique name and a document valid against the live schema."""
    names = [op.name for op in operations]
    assert len(set(names)) == len(names), "duplicate row names"
    for op in operations:
        assert set(op.expected) == set(CAST_ROLES), op.name
        assert set(op.expected.values()) <= {OK, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED}, op.name
        errors = validate(schema._schema, parse(op.document))
        assert not errors, f"{op.name}: {errors}"


def field_coordinates(document: str) -> set[str]:
    """Every `Type.field` a document selects, e.g. {"Mutation.issueCertificate", "Certificate.id"}."""
    type_info = TypeInfo(schema._schema)
    found: set[str] = set()

    class Collect(Visitor):
        def enter_field(self, node: FieldNode, *_: Any) -> None:
            parent = type_info.get_parent_type()
            if parent is not None:
                found.add(f"{parent.name}.{node.name.value}")

    visit(parse(document), TypeInfoVisitor(type_info, Collect()))
    return found
