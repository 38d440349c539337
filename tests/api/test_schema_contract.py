"""The GraphQL contract: every field guarded (deny by default) and schema.graphql equal to the live schema."""

from __future__ import annotations

from pathlib import Path

from graphql import ObjectTypeDefinitionNode, parse

from api.graphql.schema import schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_every_field_declares_a_permission_or_is_marked_public() -> None:
    document = parse(schema.as_str())
    unguarded = []
    checked = 0
    for definition in document.definitions:
        if not isinstance(definition, ObjectTypeDefinitionNode):
            continue
        for field in definition.fields or ():
            checked += 1
            names = {directive.name.value for directive in field.directives or ()}
            if not names & {"requires", "public"}:
                unguarded.append(f"{definition.name.value}.{field.name.value}")
    assert checked > 10
    assert unguarded == [], f"fields without @requires or @public: {unguarded}"


def test_schema_file_is_the_export_of_the_live_schema() -> None:
    live = schema.as_str() + "\n"
    assert SCHEMA_FILE.exists(), "schema.graphql is missing: run `make schema`"
    assert SCHEMA_FILE.read_text() == live, "schema.graphql is stale: run `make schema` and commit it"
