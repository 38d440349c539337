"""Model instances from raw rows, as Tortoise's `_init_from_db` builds them, only cheaper on hot paths.

Hot protocol paths (ACME, the attachment join of core.issuance) read with hand-written SQL; building the
instances was then most of their cost, mostly parsing datetime text (SQLite stores it as text, and
Tortoise parses it with a regular expression). Here the same conversions run, except that datetime text
goes through `datetime.fromisoformat` and is memoized (a datetime is immutable; the same created_at comes
back on every read of a row). The instances are exactly what `Model._init_from_db` would make.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from tortoise.fields import DatetimeField, JSONField
from tortoise.models import Model

M = TypeVar("M", bound=Model)

_MEMO_LIMIT = 8192
_datetimes: dict[str, Any] = {}
# Per model: its native, default-converted and complex columns, as Tortoise sorts them for _init_from_db.
_Plan = tuple[list[tuple[str, str]], list[tuple[str, str, Any]], list[tuple[str, str, Any, bool]]]
_plans: dict[type[Model], _Plan] = {}


def _plan(model: type[Model]) -> _Plan:
    plan = _plans.get(model)
    if plan is None:
        meta = model._meta
        plan = (
            [(key, attribute) for key, attribute, _ in meta.db_native_fields],
            [(key, attribute, field) for key, attribute, field in meta.db_default_fields],
            [
                (key, attribute, field, isinstance(field, DatetimeField))
                for key, attribute, field in meta.db_complex_fields
            ],
        )
        _plans[model] = plan
    return plan


def _datetime(field: Any, text: str) -> Any:
    value = _datetimes.get(text)
    if value is None:
        try:
            parsed: Any = datetime.fromisoformat(text)
        except ValueError:
            parsed = text  # whatever Tortoise's parser makes of it
        value = field.to_python_value(parsed)
        if len(_datetimes) >= _MEMO_LIMIT:
            _datetimes.clear()
        _datetimes[text] = value
    return value


def aliased_columns(model: type[Model], alias: str) -> str:
    """Every column of `model` under the table alias `alias`, named as from_row(prefix=f"{alias}__") reads
    them: what a hand-written join selects to build several models from one row."""
    return ", ".join(f'{alias}."{column}" AS "{alias}__{column}"' for column in model._meta.db_fields)


def from_row(model: type[M], row: Mapping[str, Any], prefix: str = "") -> M:
    """An instance of `model` from a full row (every column, named `prefix` + column)."""
    native, default, complex_ = _plan(model)
    instance = model.__new__(model)
    put = object.__setattr__
    put(instance, "_partial", False)
    put(instance, "_saved_in_db", True)
    put(instance, "_custom_generated_pk", model._meta.db_pk_column not in model._meta.generated_db_fields)
    put(instance, "_await_when_save", {})
    for key, attribute in native:
        put(instance, attribute, row[prefix + key])
    for key, attribute, field in default:
        value = row[prefix + key]
        put(instance, attribute, None if value is None else field.field_type(value))
    for key, attribute, field, is_datetime in complex_:
        value = row[prefix + key]
        if is_datetime and type(value) is str:
            put(instance, attribute, _datetime(field, value))
        else:
            put(instance, attribute, field.to_python_value(value))
    return instance


# Instances already built from identical rows, by model and the row's values: the attachment, profile,
# policy, CA and application of a directory come back unchanged on nearly every request.
_templates: dict[tuple[type[Model], tuple[Any, ...]], Model] = {}
_TEMPLATE_LIMIT = 256
_keys: dict[tuple[type[Model], str], tuple[list[str], list[tuple[str, str, Any]]]] = {}


def _keys_of(model: type[Model], prefix: str) -> tuple[list[str], list[tuple[str, str, Any]]]:
    """Every column's key in the row; the JSON columns (mutable values) as (key, attribute, field)."""
    found = _keys.get((model, prefix))
    if found is None:
        native, default, complex_ = _plan(model)
        columns = [key for key, _ in native] + [key for key, _, _ in default] + [key for key, *_ in complex_]
        mutable = [
            (prefix + key, attribute, field)
            for key, attribute, field, _ in complex_
            if isinstance(field, JSONField)
        ]
        found = ([prefix + column for column in columns], mutable)
        _keys[(model, prefix)] = found
    return found


def from_row_cached(model: type[M], row: Mapping[str, Any], prefix: str = "") -> M:
    """As from_row, for rows that seldom change: a row equal to one seen before gives a copy of the instance
    built then (its JSON values decoded afresh, so no two instances share a mutable value)."""
    columns, mutable = _keys_of(model, prefix)
    values = tuple(row[column] for column in columns)
    template = _templates.get((model, values))
    if template is None:
        template = from_row(model, row, prefix)
        if len(_templates) >= _TEMPLATE_LIMIT:
            _templates.clear()
        _templates[(model, values)] = template
    instance = model.__new__(model)
    state = instance.__dict__
    state.update(template.__dict__)
    state["_await_when_save"] = {}
    for key, attribute, field in mutable:
        state[attribute] = field.to_python_value(row[key])
    return instance
