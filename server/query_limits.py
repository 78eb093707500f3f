"""Depth, alias and cost limits of a GraphQL document, measured in one linear pass.

Strawberry's `QueryDepthLimiter` walks every fragment spread anew, so a document whose
fragments each spread the next one twice costs 2^n steps: 832 bytes froze a process.
Here each fragment is measured once and its measure reused wherever it is spread, so the
work is proportional to the document's size whatever its shape.

The measures of a selection set:
* depth: the longest chain of nested fields (introspection fields `__*` do not count,
  as with Strawberry's limiter: GraphiQL's introspection query is deeper than any read);
* aliases: the aliases the executor would see, fragments counted once per spread
  (a fragment spread twice in the same selection set is collected once, as the executor
  does);
* cost: every field costs 1, and a connection (a field with a `first` argument) costs 1
  plus its selection times `first` (the literal, the variable's value, else the
  argument's default, else 50), since that is how many nodes it may return.

`QueryLimits.rule()` is a graphql-core validation rule for the general path; `check()`
measures a document the compiled path is about to answer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    parse,
)
from graphql.language import VisitorAction
from graphql.type import GraphQLInterfaceType
from graphql.validation import OverlappingFieldsCanBeMergedRule
from strawberry.extensions import SchemaExtension

from server.field_merging import LinearFieldMergingRule

DEFAULT_PAGE = 50
MAX_PARSED = 1000
MAX_VERDICTS = 10_000


@dataclass(frozen=True)
class Measure:
    """What a selection set asks of the server."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0


ZERO = Measure()


def _first(field: FieldNode, variables: dict[str, Any], default: Any) -> int | None:
    """The page size a connection field asks for; None when it is not a connection."""
    for argument in field.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return max(int(value.value), 0)
        if isinstance(value, VariableNode):
            given = variables.get(value.name.value)
            if isinstance(given, int) and not isinstance(given, bool):
                return max(given, 0)
        break
    if isinstance(default, int) and not isinstance(default, bool):
        return default
    return DEFAULT_PAGE


class _Measurer:
    """One document's measures, each fragment measured at most once."""

    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, variables: dict[str, Any]
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.memo: dict[str, Measure] = {}
        self.visiting: set[str] = set()

    def operation(self, operation: OperationDefinitionNode) -> Measure:
        # Variables a client left out take their declared defaults.
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if name not in self.variables and isinstance(definition.default_value, IntValueNode):
                self.variables[name] = int(definition.default_value.value)
        root = {
            OperationType.QUERY: self.schema.query_type,
            OperationType.MUTATION: self.schema.mutation_type,
            OperationType.SUBSCRIPTION: self.schema.subscription_type,
        }[operation.operation]
        return self.selections(operation.selection_set, root)

    def fragment(self, name: str) -> Measure:
        if name in self.memo:
            return self.memo[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.visiting:
            # Unknown fragments and cycles are reported by the standard validation rules.
            return ZERO
        self.visiting.add(name)
        parent = self.schema.get_type(definition.type_condition.name.value)
        measure = self.selections(definition.selection_set, parent)
        self.visiting.discard(name)
        self.memo[name] = measure
        return measure

    def selections(self, selection_set: SelectionSetNode | None, parent: Any) -> Measure:
        if selection_set is None:
            return ZERO
        depth = aliases = cost = 0
        spread: set[str] = set()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                measure = self.field(selection, parent)
            elif isinstance(selection, FragmentSpreadNode):
                # The executor collects a fragment spread twice in one selection set once.
                if selection.name.value in spread:
                    continue
                spread.add(selection.name.value)
                measure = self.fragment(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                measure = self.selections(selection.selection_set, inner)
            else:  # pragma: no cover - graphql-core has no other selection kind
                continue
            depth = max(depth, measure.depth)
            aliases += measure.aliases
            cost += measure.cost
        return Measure(depth, aliases, cost)

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Measure:
        name = node.name.value
        alias = 1 if node.alias is not None else 0
        definition = None
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent.fields.get(name)
        child_type = get_named_type(definition.type) if definition is not None else None
        inner = self.selections(node.selection_set, child_type)
        if name.startswith("__"):
            # Introspection: answered from memory, and deeper than any read by nature.
            return Measure(0, alias + inner.aliases, 1 + inner.cost)
        page: int | None = None
        if definition is not None and "first" in definition.args:
            page = _first(node, self.variables, definition.args["first"].default_value)
        multiplier = 1 if page is None else page
        return Measure(1 + inner.depth, alias + inner.aliases, 1 + multiplier * inner.cost)


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: object,
) -> Measure:
    """The largest measures of the operation(s) the request may run."""
    given = dict(variables) if isinstance(variables, dict) else {}
    measurer = _Measurer(schema, document, given)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    result = ZERO
    for operation in operations:
        one = measurer.operation(operation)
        result = Measure(
            max(result.depth, one.depth),
            max(result.aliases, one.aliases),
            max(result.cost, one.cost),
        )
    return result


@dataclass(frozen=True)
class QueryLimits:
    """The limits a document must stay within, and the errors naming them."""

    max_depth: int
    max_aliases: int
    max_cost: int

    def errors(self, found: Measure) -> list[GraphQLError]:
        errors = []
        if found.depth > self.max_depth:
            errors.append(
                _error(
                    f"The query's depth {found.depth} exceeds the maximum depth of "
                    f"{self.max_depth} (MAX_QUERY_DEPTH).",
                    "MAX_QUERY_DEPTH",
                )
            )
        if found.aliases > self.max_aliases:
            errors.append(
                _error(
                    f"The query has {found.aliases} aliases, more than the limit of "
                    f"{self.max_aliases} (MAX_ALIASES).",
                    "MAX_ALIASES",
                )
            )
        if found.cost > self.max_cost:
            errors.append(
                _error(
                    f"The query's cost {found.cost} exceeds the limit of {self.max_cost} "
                    "(MAX_QUERY_COST): each field costs 1 and a list multiplies its "
                    "selection by `first`; ask for fewer or smaller pages.",
                    "MAX_QUERY_COST",
                )
            )
        return errors

    def rule(self, operation_name: str | None, variables: object) -> type[ASTValidationRule]:
        """A validation rule measuring the whole document once, at its start."""
        limits = self

        class QueryLimitsRule(ValidationRule):
            def __init__(self, context: ValidationContext) -> None:
                super().__init__(context)

            def enter_document(self, node: DocumentNode, *_: object) -> VisitorAction:
                found = measure(self.context.schema, node, operation_name, variables)
                for error in limits.errors(found):
                    self.report_error(error)
                return self.SKIP

        return QueryLimitsRule


def _error(message: str, limit: str) -> GraphQLError:
    return GraphQLError(message, extensions={"limit": limit})


class DocumentCheck:
    """`check()` for the compiled path: parses each distinct document once (LRU)."""

    def __init__(self, schema: GraphQLSchema, limits: QueryLimits) -> None:
        self.schema = schema
        self.limits = limits
        self._parsed: OrderedDict[str, DocumentNode] = OrderedDict()
        # (document, operation, variables as canonical JSON) -> the verdict: a measure
        # depends on nothing else, and clients repeat the same requests (LRU).
        self._verdicts: OrderedDict[tuple[str, str | None, bytes], bool] = OrderedDict()

    def check(self, query: str, operation_name: str | None, variables: object) -> bool:
        """Whether a document the general path accepted stays within the limits now.

        Its cost depends on the variables, so it is measured for each distinct set of them.
        """
        try:
            given = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS) if variables else b""
        except TypeError:
            return self._check(query, operation_name, variables)
        key = (query, operation_name, given)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self._check(query, operation_name, variables)
            if len(self._verdicts) > MAX_VERDICTS:
                self._verdicts.popitem(last=False)
        else:
            self._verdicts.move_to_end(key)
        return verdict

    def _check(self, query: str, operation_name: str | None, variables: object) -> bool:
        document = self._parsed.get(query)
        if document is None:
            document = parse(query)
            self._parsed[query] = document
            if len(self._parsed) > MAX_PARSED:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(query)
        return not self.limits.errors(measure(self.schema, document, operation_name, variables))


class QueryLimitsExtension(SchemaExtension):
    """Adds the limits' validation rule, with this operation's variables, to every operation,
    and swaps graphql-core's field-merging rule for its linear equivalent."""

    def __init__(self, *, limits: QueryLimits) -> None:
        self.limits = limits

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        rule = self.limits.rule(context.operation_name, context.variables)
        # graphql-core's field-merging rule is quadratic in repeated fields: see
        # server.field_merging.
        standard = tuple(
            LinearFieldMergingRule if r is OverlappingFieldsCanBeMergedRule else r
            for r in context.validation_rules
        )
        context.validation_rules = (*standard, rule)
        yield
