"""From a validated query document to a plan: which fields to produce, in which order.

Field collection follows the GraphQL specification's CollectFields exactly (the algorithm
graphql-core's executor runs): fields grouped by response key in order of first
appearance, inline fragments and fragment spreads whose type condition matches, each named
fragment at most once per selection set, `@skip` and `@include` applied. A document that
uses anything else the plan cannot mirror (another directive, an abstract type, a field
the compiled path does not know) gets no plan, and the general executor answers it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    GraphQLString,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    is_abstract_type,
)
from graphql.execution.values import VariableValues, get_argument_values

from schema.compiled.sources import Source, source_for

INCLUSION = frozenset({"include", "skip"})


class NotCompilable(Exception):
    """The document uses something the compiled path does not mirror."""


@dataclass
class PlannedField:
    """One response key of a selection: how to produce its value for a batch of rows."""

    key: str
    name: str
    nodes: list[FieldNode]
    definition: GraphQLField
    source: Source
    non_null: bool
    child: Selection | None = None

    def arguments(self, variables: VariableValues) -> dict[str, Any]:
        """The field's arguments, coerced as the general executor coerces them."""
        return get_argument_values(self.definition, self.nodes[0], variables)


@dataclass
class Selection:
    """The fields to produce for objects of one GraphQL type."""

    type_name: str
    fields: list[PlannedField] = field(default_factory=list)
    _build: Callable[..., dict[str, Any]] | None = None

    @property
    def build(self) -> Callable[..., dict[str, Any]]:
        """A function of one value per field that returns the object, keys in plan order.

        Generated once per selection: a dict display is about three times faster than
        `dict(zip(keys, values))`, and a nested answer builds thousands of objects. Keys
        are GraphQL names (`[_A-Za-z][_0-9A-Za-z]*`), so `repr` spells them safely.
        """
        if self._build is None:
            names = [f"v{i}" for i in range(len(self.fields))]
            items = ", ".join(f"{f.key!r}: {n}" for f, n in zip(self.fields, names, strict=True))
            self._build = eval(f"lambda {', '.join(names)}: {{{items}}}")
        return self._build


def inclusion_variables(document_nodes: Iterable[Any]) -> tuple[str, ...]:
    """Names of the variables that `@skip`/`@include` read: they decide the plan's shape."""
    names: list[str] = []

    def visit(node: Any) -> None:
        for directive in getattr(node, "directives", None) or ():
            if directive.name.value not in INCLUSION:
                raise NotCompilable(f"directive @{directive.name.value}")
            for argument in directive.arguments:
                if isinstance(argument.value, VariableNode):
                    names.append(argument.value.name.value)
        selection_set = getattr(node, "selection_set", None)
        for child in selection_set.selections if selection_set else ():
            visit(child)

    for node in document_nodes:
        visit(node)
    return tuple(dict.fromkeys(names))


class Planner:
    """Builds the plan of one operation for given `@skip`/`@include` outcomes."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: VariableValues,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def operation(self, operation: OperationDefinitionNode) -> Selection:
        root = self.schema.query_type
        assert root is not None
        return self.selection(root, [operation.selection_set])

    def selection(
        self, parent: GraphQLObjectType, selection_sets: list[SelectionSetNode]
    ) -> Selection:
        grouped: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        for selection_set in selection_sets:
            self._collect(parent, selection_set, grouped, visited)
        result = Selection(parent.name)
        for key, nodes in grouped.items():
            result.fields.append(self._field(parent, key, nodes))
        return result

    def _field(self, parent: GraphQLObjectType, key: str, nodes: list[FieldNode]) -> PlannedField:
        name = nodes[0].name.value
        if name == "__typename":
            definition = GraphQLField(GraphQLNonNull(GraphQLString))
            return PlannedField(key, name, nodes, definition, source_for(parent.name, name), True)
        if name.startswith("__") or name not in parent.fields:
            raise NotCompilable(f"{parent.name}.{name}")
        definition = parent.fields[name]
        output = definition.type
        non_null = isinstance(output, GraphQLNonNull)
        named = output.of_type if isinstance(output, GraphQLNonNull) else output
        while isinstance(named, GraphQLList | GraphQLNonNull):
            named = named.of_type
        planned = PlannedField(
            key, name, nodes, definition, source_for(parent.name, name), non_null
        )
        sets = [node.selection_set for node in nodes if node.selection_set is not None]
        if sets:
            if not isinstance(named, GraphQLObjectType):
                raise NotCompilable(f"abstract type {named}")
            planned.child = self.selection(named, sets)
        return planned

    def _collect(
        self,
        parent: GraphQLObjectType,
        selection_set: SelectionSetNode,
        grouped: dict[str, list[FieldNode]],
        visited: set[str],
    ) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if not self._included(selection):
                    continue
                key = selection.alias.value if selection.alias else selection.name.value
                grouped.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if not self._included(selection) or not self._matches(
                    selection.type_condition.name.value if selection.type_condition else None,
                    parent,
                ):
                    continue
                self._collect(parent, selection.selection_set, grouped, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if getattr(selection, "arguments", None):
                    raise NotCompilable("fragment arguments")
                if name in visited or not self._included(selection):
                    continue
                visited.add(name)
                fragment = self.fragments.get(name)
                if fragment is None or not self._matches(
                    fragment.type_condition.name.value, parent
                ):
                    continue
                self._collect(parent, fragment.selection_set, grouped, visited)

    def _included(self, node: FieldNode | InlineFragmentNode | FragmentSpreadNode) -> bool:
        for directive in node.directives or ():
            name = directive.name.value
            if name not in INCLUSION:
                raise NotCompilable(f"directive @{name}")
            definition = GraphQLSkipDirective if name == "skip" else GraphQLIncludeDirective
            condition = get_argument_values(definition, directive, self.variables)["if"]
            if (name == "skip") == bool(condition):
                return False
        return True

    def _matches(self, condition: str | None, parent: GraphQLObjectType) -> bool:
        if condition is None or condition == parent.name:
            return True
        conditional = self.schema.get_type(condition)
        # Otherwise only an interface or union the object type belongs to matches.
        return is_abstract_type(conditional) and self.schema.is_sub_type(conditional, parent)
