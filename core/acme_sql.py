"""The ACME hot path's statements in plain, parameterised SQL (SQLite and PostgreSQL).

Every ACME order costs about seven requests, and each read or write through the ORM's query builder cost
more CPU than the database took to run it. These are the statements the order, authorization, challenge
and download requests run on every order, written once per dialect and kept; rows become the same model
instances the ORM builds (core.rows). Writes go through the fields' own `to_db_value`, so the stored
values are the ORM's. Anything rare (errors, revocation, the worker's sweeps) stays on the ORM.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from core.rows import aliased_columns, from_row
from core.sqlite_inline import BEGIN, InlineConnection
from models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder, Certificate

_statements: dict[tuple[str, str], str] = {}


def connection(using: BaseDBAsyncClient | None = None) -> BaseDBAsyncClient:
    """The caller's transaction, else the current connection (a transaction's, inside in_transaction)."""
    return using if using is not None else AcmeOrder._meta.db


def _dialect(conn: BaseDBAsyncClient) -> str:
    return str(conn.capabilities.dialect)


def _numbered(text: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (the statements here hold no other `?`)."""
    parts = text.split("?")
    out = [parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        out.append(f"${index}{part}")
    return "".join(out)


def _sql(conn: BaseDBAsyncClient, name: str, build: Any) -> str:
    dialect = _dialect(conn)
    key = (name, dialect)
    text = _statements.get(key)
    if text is None:
        text = build(dialect)
        if dialect != "sqlite":
            text = _numbered(text)
        _statements[key] = text
    return text


def _arg(conn: BaseDBAsyncClient, value: Any) -> Any:
    """A UUID as SQLite stores it (text); PostgreSQL takes it as it is."""
    if isinstance(value, uuid.UUID) and _dialect(conn) == "sqlite":
        return str(value)
    return value


def _args(conn: BaseDBAsyncClient, values: Iterable[Any]) -> list[Any]:
    sqlite = _dialect(conn) == "sqlite"
    return [str(value) if sqlite and isinstance(value, uuid.UUID) else value for value in values]


def _table(model: type[Model]) -> str:
    return f'"{model._meta.db_table}"'


def _db(model: type[Model], attribute: str, value: Any) -> Any:
    """A value as the ORM writes it (JSON text, a timezone-aware datetime, UUID text)."""
    return model._meta.fields_map[attribute].to_db_value(value, model)


def _sqlite_alone(conn: BaseDBAsyncClient) -> bool:
    """SQLite, outside any caller's transaction: statements go through _sqlite_steps."""
    return _dialect(conn) == "sqlite" and not isinstance(conn, TransactionalDBClient)


async def _changed(conn: BaseDBAsyncClient, text: str, values: list[Any]) -> int:
    if _sqlite_alone(conn):
        async with conn.acquire_connection() as raw:
            return int((await _sqlite_steps(raw, [("count", text, values)], False))[0])
    changed, _ = await conn.execute_query(text, values)
    return int(changed)


async def _rows(conn: BaseDBAsyncClient, text: str, values: list[Any]) -> list[dict[str, Any]]:
    if _sqlite_alone(conn):
        async with conn.acquire_connection() as raw:
            return list((await _sqlite_steps(raw, [("rows", text, values)], False))[0])
    return await conn.execute_query_dict(text, values)


# ---------------------------------------------------------------- several statements in one trip

# A statement to run with others: ("rows", sql, values) answers its rows as dicts, ("count", sql, values)
# the number of rows it changed (or returned).
Step = tuple[Literal["rows", "count"], str, list[Any]]


async def _sqlite_steps(raw: InlineConnection, steps: Sequence[Step], transaction: bool) -> list[Any]:
    """On the SQLite connection (held under its lock): the steps in order, in BEGIN..COMMIT if asked.

    ACME's protocol state, not flushed to disk on its own (core.sqlite_inline `relaxed`): a power loss
    may roll back the last order step, and the client retries; certificates commit durably."""
    with raw.relaxed():
        return await _sqlite_steps_relaxed(raw, steps, transaction)


async def _sqlite_steps_relaxed(raw: InlineConnection, steps: Sequence[Step], transaction: bool) -> list[Any]:
    results: list[Any] = []
    try:
        if transaction:
            await raw.execute(BEGIN)
        try:
            for kind, text, values in steps:
                if kind == "rows":
                    results.append(await raw.execute_dicts(text, values))
                    continue
                before = raw.total_changes
                fetched = await raw.execute_fetchall(text, values)
                results.append((raw.total_changes - before) or len(fetched))
            if transaction:
                await raw.execute("COMMIT")
        except BaseException:
            if transaction and raw._conn.in_transaction:
                await raw.execute("ROLLBACK")
            raise
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(exc) from exc
    except sqlite3.OperationalError as exc:
        raise OperationalError(exc) from exc
    return results


async def run_steps(steps: Sequence[Step], *, transaction: bool = False) -> list[Any]:
    """Run statements one after the other, all or nothing with `transaction`; a result per step.

    On SQLite, outside a transaction, they run under one take of the connection's lock (core.sqlite_inline
    runs each where it is awaited). On PostgreSQL they share one pooled connection (the transaction's
    with `transaction`); inside the caller's transaction they run on it.
    """
    conn = connection()
    dialect = _dialect(conn)
    if _sqlite_alone(conn):
        async with conn.acquire_connection() as raw:
            return await _sqlite_steps(raw, steps, transaction)
    if dialect == "postgres" and not transaction and len(steps) > 1:
        if not isinstance(conn, TransactionalDBClient):
            # One pooled connection for them all: each statement on its own would take one from the pool
            # and give it back (with asyncpg's reset query, a round trip of its own).
            async with conn.acquire_connection() as raw:
                return await _asyncpg_steps(raw, steps)
    if transaction and not isinstance(conn, TransactionalDBClient):
        async with in_transaction() as tx:
            return await _one_by_one(tx, steps)
    return await _one_by_one(conn, steps)


async def _asyncpg_steps(raw: Any, steps: Sequence[Step]) -> list[Any]:
    import asyncpg  # noqa: PLC0415 - PostgreSQL only

    results: list[Any] = []
    try:
        for kind, text, values in steps:
            if kind == "rows":
                results.append([dict(record) for record in await raw.fetch(text, *values)])
            else:
                status = await raw.execute(text, *values)  # "UPDATE 1", "INSERT 0 1", ...
                results.append(int(status.rsplit(" ", 1)[-1]) if status else 0)
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(exc) from exc
    except (asyncpg.SyntaxOrAccessError, asyncpg.exceptions.DataError) as exc:
        raise OperationalError(exc) from exc
    return results


async def _one_by_one(conn: BaseDBAsyncClient, steps: Sequence[Step]) -> list[Any]:
    results: list[Any] = []
    for kind, text, values in steps:
        if kind == "rows":
            results.append(await conn.execute_query_dict(text, values))
        else:
            results.append(await _changed(conn, text, values))
    return results


# ---------------------------------------------------------------- inserts


def _insert_columns(model: type[Model]) -> list[str]:
    return list(model._meta.fields_db_projection)


def insert_step(instances: Sequence[Model]) -> Step:
    """One INSERT of new instances of one model, with the values `save(force_create=True)` would write.

    Call saved() on the instances once it ran."""
    conn = connection()
    model = type(instances[0])
    meta = model._meta
    attributes = _insert_columns(model)
    values: list[Any] = []
    for instance in instances:
        for attribute in attributes:
            # With the instance, auto_now(_add) datetimes are set on it exactly as the ORM sets them.
            values.append(meta.fields_map[attribute].to_db_value(getattr(instance, attribute), instance))
    names = ", ".join(f'"{meta.fields_db_projection[attribute]}"' for attribute in attributes)
    row = "(" + ", ".join("?" * len(attributes)) + ")"
    text = f"INSERT INTO {_table(model)} ({names}) VALUES " + ", ".join([row] * len(instances))
    if _dialect(conn) != "sqlite":
        text = _numbered(text)
    return "count", text, _args(conn, values)


def saved(instances: Iterable[Model]) -> None:
    for instance in instances:
        instance._saved_in_db = True


# ---------------------------------------------------------------- orders


def _order_sql(dialect: str) -> str:
    # One row per authorization id, each found by primary key (a join condition holding a subquery of the
    # ids made PostgreSQL scan every authorization).
    if dialect == "sqlite":
        ids = 'LEFT JOIN json_each(o."authorization_ids") j ON 1 LEFT JOIN {a} a ON a."id" = j."value"'
    else:
        ids = (
            'LEFT JOIN LATERAL jsonb_array_elements_text(o."authorization_ids") j(v) ON true '
            'LEFT JOIN {a} a ON a."id" = j.v::uuid'
        )
    return (
        f"SELECT {aliased_columns(AcmeOrder, 'o')}, {aliased_columns(AcmeAuthorization, 'a')} "
        f"FROM {_table(AcmeOrder)} o {ids.format(a=_table(AcmeAuthorization))} "
        'WHERE o."id" = ?'
    )


def order_step(order_id: uuid.UUID) -> Step:
    conn = connection()
    return "rows", _sql(conn, "order", _order_sql), [_arg(conn, order_id)]


def order_from_rows(rows: list[dict[str, Any]]) -> tuple[AcmeOrder | None, list[AcmeAuthorization]]:
    if not rows:
        return None, []
    order = from_row(AcmeOrder, rows[0], "o__")
    loaded = [from_row(AcmeAuthorization, row, "a__") for row in rows if row["a__id"] is not None]
    by_id = {authorization.id: authorization for authorization in loaded}
    ids = [uuid.UUID(value) for value in order.authorization_ids]
    return order, [by_id[value] for value in ids if value in by_id]


async def order_with_authorizations(
    order_id: uuid.UUID,
) -> tuple[AcmeOrder | None, list[AcmeAuthorization]]:
    """The order and its authorizations (in the order's own order) in one query."""
    kind, text, values = order_step(order_id)
    return order_from_rows(await _rows(connection(), text, values))


def _status_update_sql(model: type[Model], fields: tuple[str, ...]) -> Any:
    def build(dialect: str) -> str:
        assignments = ", ".join(f'"{field}" = ?' for field in fields)
        return f'UPDATE {_table(model)} SET {assignments} WHERE "id" = ? AND "status" = ?'

    return build


def _status_update_step(
    model: type[Model], row_id: uuid.UUID, expected_status: str, changes: dict[str, Any]
) -> Step:
    """`model.filter(id=..., status=expected).update(**changes)` as a step (it counts 0 or 1)."""
    conn = connection()
    fields = tuple(changes)
    name = f"{model._meta.db_table}-update:" + ",".join(fields)
    text = _sql(conn, name, _status_update_sql(model, fields))
    values = [_db(model, field, value) for field, value in changes.items()]
    return "count", text, _args(conn, [*values, row_id, expected_status])


def update_order_step(order_id: uuid.UUID, *, expected_status: str, **changes: Any) -> Step:
    """`AcmeOrder.filter(id=..., status=expected).update(**changes)` as a step (it counts 0 or 1)."""
    return _status_update_step(AcmeOrder, order_id, expected_status, changes)


async def update_order(
    order_id: uuid.UUID,
    *,
    expected_status: str,
    using: BaseDBAsyncClient | None = None,
    **changes: Any,
) -> int:
    """`AcmeOrder.filter(id=..., status=expected).update(**changes)`: the rows changed (0 or 1)."""
    _, text, values = update_order_step(order_id, expected_status=expected_status, **changes)
    return await _changed(connection(using), text, values)


# ---------------------------------------------------------------- authorizations


def _reusable_sql(count: int) -> Any:
    def build(dialect: str) -> str:
        marks = ", ".join("?" * count)
        return (
            f'SELECT * FROM {_table(AcmeAuthorization)} WHERE "account_id" = ? AND "identifier_value" '
            f'IN ({marks}) AND "status" = ? AND "expires_at" > ? ORDER BY "expires_at"'
        )

    return build


def reusable_step(account_id: uuid.UUID, values: Sequence[str], after: datetime) -> Step:
    conn = connection()
    text = _sql(conn, f"reusable:{len(values)}", _reusable_sql(len(values)))
    expiry = _db(AcmeAuthorization, "expires_at", after)
    return "rows", text, _args(conn, [account_id, *values, "valid", expiry])


def reusable_from_rows(rows: list[dict[str, Any]]) -> list[AcmeAuthorization]:
    return [from_row(AcmeAuthorization, row) for row in rows]


async def reusable_authorizations(
    account_id: uuid.UUID, values: Sequence[str], after: datetime
) -> list[AcmeAuthorization]:
    """The account's valid authorizations for these identifier values expiring after `after`, by expiry."""
    kind, text, step_values = reusable_step(account_id, values, after)
    return reusable_from_rows(await _rows(connection(), text, step_values))


def _authorization_sql(dialect: str) -> str:
    return (
        f"SELECT {aliased_columns(AcmeAuthorization, 'a')}, {aliased_columns(AcmeChallenge, 'c')} "
        f"FROM {_table(AcmeAuthorization)} a "
        f'LEFT JOIN {_table(AcmeChallenge)} c ON c."authorization_id" = a."id" '
        'WHERE a."id" = ?'
    )


def authorization_step(authorization_id: uuid.UUID) -> Step:
    conn = connection()
    return "rows", _sql(conn, "authorization", _authorization_sql), [_arg(conn, authorization_id)]


def authorization_from_rows(
    rows: list[dict[str, Any]],
) -> tuple[AcmeAuthorization | None, list[AcmeChallenge]]:
    if not rows:
        return None, []
    authorization = from_row(AcmeAuthorization, rows[0], "a__")
    challenges = [from_row(AcmeChallenge, row, "c__") for row in rows if row["c__id"] is not None]
    return authorization, challenges


async def authorization_with_challenges(
    authorization_id: uuid.UUID,
) -> tuple[AcmeAuthorization | None, list[AcmeChallenge]]:
    """The authorization and its challenges in one query."""
    kind, text, values = authorization_step(authorization_id)
    return authorization_from_rows(await _rows(connection(), text, values))


def update_authorization_step(authorization_id: uuid.UUID, *, expected_status: str, **changes: Any) -> Step:
    """`AcmeAuthorization.filter(id=..., status=expected).update(**changes)` as a step."""
    return _status_update_step(AcmeAuthorization, authorization_id, expected_status, changes)


# ---------------------------------------------------------------- challenges


def _challenge_sql(dialect: str) -> str:
    return (
        f"SELECT {aliased_columns(AcmeChallenge, 'c')}, {aliased_columns(AcmeAuthorization, 'a')}, "
        f"{aliased_columns(AcmeAccount, 'acc')} FROM {_table(AcmeChallenge)} c "
        f'JOIN {_table(AcmeAuthorization)} a ON a."id" = c."authorization_id" '
        f'JOIN {_table(AcmeAccount)} acc ON acc."id" = a."account_id" WHERE c."id" = ?'
    )


def challenge_step(challenge_id: uuid.UUID) -> Step:
    conn = connection()
    return "rows", _sql(conn, "challenge", _challenge_sql), [_arg(conn, challenge_id)]


async def challenge_with_authorization(
    challenge_id: uuid.UUID,
) -> tuple[AcmeChallenge, AcmeAuthorization, AcmeAccount] | None:
    """The challenge, its authorization and that authorization's account, in one query."""
    kind, text, values = challenge_step(challenge_id)
    return challenge_from_rows(await _rows(connection(), text, values))


def challenge_from_rows(
    rows: list[dict[str, Any]],
) -> tuple[AcmeChallenge, AcmeAuthorization, AcmeAccount] | None:
    if not rows:
        return None
    row = rows[0]
    challenge = from_row(AcmeChallenge, row, "c__")
    authorization = from_row(AcmeAuthorization, row, "a__")
    account = from_row(AcmeAccount, row, "acc__")
    authorization.account = account
    challenge.authorization = authorization
    return challenge, authorization, account


def _challenge_update_sql(fields: tuple[str, ...], conditions: tuple[str, ...]) -> Any:
    def build(dialect: str) -> str:
        assignments = ", ".join(f'"{field}" = ?' for field in fields)
        where = " AND ".join(
            f'"{name[:-5]}" <= ?' if name.endswith("__lte") else f'"{name}" = ?' for name in conditions
        )
        return f'UPDATE {_table(AcmeChallenge)} SET {assignments} WHERE "id" = ? AND {where}'

    return build


def update_challenge_step(challenge_id: uuid.UUID, *, where: dict[str, Any], **changes: Any) -> Step:
    """`AcmeChallenge.filter(id=..., **where).update(**changes)` as a step (`where`: fields, `field__lte`)."""
    conn = connection()
    fields, conditions = tuple(changes), tuple(where)
    name = "challenge-update:" + ",".join(fields) + ":" + ",".join(conditions)
    text = _sql(conn, name, _challenge_update_sql(fields, conditions))
    values = [_db(AcmeChallenge, field, value) for field, value in changes.items()]
    tests = [_db(AcmeChallenge, key.removesuffix("__lte"), value) for key, value in where.items()]
    return "count", text, _args(conn, [*values, challenge_id, *tests])


async def update_challenge(challenge_id: uuid.UUID, *, where: dict[str, Any], **changes: Any) -> int:
    """`AcmeChallenge.filter(id=..., **where).update(**changes)`: the rows changed (0 or 1)."""
    _, text, values = update_challenge_step(challenge_id, where=where, **changes)
    return await _changed(connection(), text, values)


# ---------------------------------------------------------------- certificates


def _certificate_sql(dialect: str) -> str:
    return (
        f'SELECT c.* FROM {_table(Certificate)} c WHERE c."id" = ? AND EXISTS (SELECT 1 FROM '
        f'{_table(AcmeOrder)} o WHERE o."certificate_id" = c."id" AND o."account_id" = ?)'
    )


def certificate_step(certificate_id: uuid.UUID, account_id: uuid.UUID) -> Step:
    conn = connection()
    return "rows", _sql(conn, "certificate", _certificate_sql), _args(conn, [certificate_id, account_id])


def certificate_from_rows(rows: list[dict[str, Any]]) -> Certificate | None:
    return from_row(Certificate, rows[0]) if rows else None


async def ordered_certificate(certificate_id: uuid.UUID, account_id: uuid.UUID) -> Certificate | None:
    """The certificate when one of this account's orders has it, else None."""
    kind, text, values = certificate_step(certificate_id, account_id)
    return certificate_from_rows(await _rows(connection(), text, values))


# ---------------------------------------------------------------- reads that ride along with a request


@dataclass
class Prefetch:
    """A handler's first reads, run in the same trip as its request's nonce and attachment (before the
    request is verified; the handler checks ownership on what was read, as it would on its own reads).

    `kind` and `key` name what was read (say "order" and its id), so a handler uses it only for the very
    resource it serves; `result` is what `parse` made of the steps' results, once the trip ran (`done`)."""

    kind: str
    key: Any
    steps: list[Step]
    parse: Callable[[list[Any]], Any]
    result: Any = None
    done: bool = False

    def settle(self, results: list[Any]) -> None:
        self.result = self.parse(results)
        self.done = True


def take(prefetched: Prefetch | None, kind: str, key: Any) -> tuple[bool, Any]:
    """(True, the prefetched result) when `prefetched` read `kind`/`key`, else (False, None)."""
    if prefetched is not None and prefetched.done and prefetched.kind == kind and prefetched.key == key:
        return True, prefetched.result
    return False, None
