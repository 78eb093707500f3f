"""The served schema: committed as schema.graphql, and compatible with the client contract."""

from __future__ import annotations

import os
from pathlib import Path

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    find_breaking_changes,
)
from graphql import build_schema as parse_sdl

from schema import build_schema

ROOT = Path(__file__).resolve().parent.parent
# The contract clients rely on, kept in the repo as the project's own file.
CONTRACT = ROOT / "contract.graphql"
COMMITTED = ROOT / "schema.graphql"


def served_sdl() -> str:
    return build_schema().as_str() + "\n"


def test_committed_schema_is_up_to_date() -> None:
    """Regenerate with `concord export-schema > schema.graphql` (or UPDATE_SCHEMA=1)."""
    if os.environ.get("UPDATE_SCHEMA") == "1":
        COMMITTED.write_text(served_sdl())
    assert COMMITTED.read_text() == served_sdl(), (
        "schema.graphql is out of date: run `concord export-schema > schema.graphql`"
    )


def test_no_breaking_change_against_the_contract() -> None:
    contract = parse_sdl(CONTRACT.read_text())
    changes = find_breaking_changes(contract, build_schema()._schema)
    assert [c.description for c in changes] == []


def undescribed(schema: GraphQLSchema) -> list[str]:
    """Every type, field, argument, input field and enum value without a description."""
    missing: list[str] = []
    for name, kind in schema.type_map.items():
        if name.startswith("__"):
            continue  # introspection types belong to graphql-core
        if not kind.description:
            missing.append(name)
        if isinstance(kind, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in kind.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                for arg_name, arg in getattr(field, "args", {}).items():
                    if not arg.description:
                        missing.append(f"{name}.{field_name}({arg_name})")
        if isinstance(kind, GraphQLEnumType):
            missing += [f"{name}.{v}" for v, value in kind.values.items() if not value.description]
    return missing


def test_every_type_field_argument_and_enum_value_is_described() -> None:
    """What GraphiQL's documentation explorer shows: nothing may be left blank."""
    assert undescribed(build_schema()._schema) == []
