"""The compiled read path: the contract's queries without per-field resolver machinery.

Strawberry and graphql-core resolve every field of every object through the same generic
machinery (an awaitable, extension hooks and type checks per field), about 20 µs per field:
a board of 10 cards with their comments costs tens of milliseconds of CPU. The compiled
path answers the same queries from a plan made once per document (schema/compiled/plan.py)
with one batched statement per planned field (schema/compiled/execute.py).

It never decides anything the general path decides:
* a document is planned only after the general executor has answered it once with data,
  so parsing, validation and the depth, alias and token limits stay the general path's;
* variables are coerced by graphql-core, arguments by graphql-core, root fields by the
  resolvers the schema calls, pages and cursors by `resolvers.lists`;
* any error, or a null a non-null field would have to report, abandons the attempt, and
  the general executor answers the request from scratch. Reads are side-effect free, so
  the abandoned attempt changes nothing.
The fast path's answers are byte-equal to the general path's (tests/schema/test_compiled.py).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
)
from graphql.execution.values import VariableValues, get_variable_values
from prometheus_client import Counter

from resolvers.context import Context
from schema.compiled.execute import Run
from schema.compiled.plan import NotCompilable, Planner, Selection, inclusion_variables
from schema.compiled.single import SINGLE_STATEMENT, SingleRun, build

log = logging.getLogger(__name__)

COMPILED_READS = Counter(
    "concord_compiled_reads_total",
    "Requests the compiled read path answered, or abandoned to the general path.",
    ["outcome"],
)

MAX_DOCUMENTS = 1000
# Distinct @skip/@include outcomes kept per document.
MAX_PLANS_PER_DOCUMENT = 16


@dataclass
class Compiled:
    """A query document the general path accepted, with its plans by @skip/@include outcome."""

    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    switches: tuple[str, ...]
    plans: dict[tuple[object, ...], Selection | None] = field(default_factory=dict)

    def plan(self, schema: GraphQLSchema, variables: VariableValues) -> Selection | None:
        # The values themselves, not their truth: null must not pass for false (the
        # general path refuses `@include(if: null)`, and so does the Planner).
        outcome = tuple(variables.coerced.get(name) for name in self.switches)
        if outcome not in self.plans:
            if len(self.plans) >= MAX_PLANS_PER_DOCUMENT:
                return None
            try:
                planned: Selection | None = Planner(schema, self.fragments, variables).operation(
                    self.operation
                )
            except (NotCompilable, GraphQLError) as exc:
                log.debug("not compiled", extra={"reason": str(exc)})
                planned = None
            self.plans[outcome] = planned
        return self.plans[outcome]


def _compile(document: DocumentNode, operation_name: str | None) -> Compiled | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation != OperationType.QUERY:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    try:
        switches = inclusion_variables([operations[0], *fragments.values()])
    except NotCompilable:
        return None
    return Compiled(operations[0], fragments, switches)


# Query fields whose answer is confined to one workspace (see resolvers.read_scope).
CONFINED = frozenset({"workspace", "board", "card", "events", "cardHistory"})


def confined_root(plan: Selection, variables: VariableValues) -> tuple[str, dict[str, Any]] | None:
    """The plan's one root field and its arguments, when that field reads one workspace."""
    fields = [f for f in plan.fields if f.name != "__typename"]
    if len(fields) != 1 or fields[0].name not in CONFINED:
        return None
    return fields[0].name, fields[0].arguments(variables)


class CompiledReads:
    """The documents the general path accepted, and their execution on the compiled path."""

    def __init__(
        self,
        schema: GraphQLSchema,
        max_documents: int = MAX_DOCUMENTS,
        single_statement: bool = True,
    ) -> None:
        self.schema = schema
        self.max_documents = max_documents
        # On PostgreSQL, fetch a plan's rows with one statement where it can (single.py).
        self.single_statement = single_statement
        self._documents: OrderedDict[tuple[str, str | None], Compiled | None] = OrderedDict()

    def learn(self, query: str, operation_name: str | None, answered_with_data: bool) -> None:
        """Remember a document the general path answered with data (so it is valid)."""
        key = (query, operation_name)
        if not answered_with_data or key in self._documents:
            return
        try:
            compiled = _compile(parse(query), operation_name)
        except Exception:  # a document the general path parsed; keep the general path
            compiled = None
        self._documents[key] = compiled
        if len(self._documents) > self.max_documents:
            self._documents.popitem(last=False)

    def knows(self, query: str, operation_name: str | None) -> bool:
        """Whether the document was planned (`prepare` may still decline its variables)."""
        return self._documents.get((query, operation_name)) is not None

    def name(self, query: str, operation_name: str | None) -> str | None:
        """The operation's name in the known document (for logs: a named operation sent
        without `operationName` is still named)."""
        compiled = self._documents.get((query, operation_name))
        node = compiled.operation.name if compiled is not None else None
        return node.value if node is not None else operation_name

    def prepare(
        self, query: str, operation_name: str | None, variables: object
    ) -> tuple[Selection, VariableValues] | None:
        """The plan and coerced variables for a request, or None for the general path."""
        key = (query, operation_name)
        compiled = self._documents.get(key)
        if compiled is None:
            return None
        self._documents.move_to_end(key)
        if variables is None:
            variables = {}
        if not isinstance(variables, dict):
            return None
        coerced = get_variable_values(
            self.schema, compiled.operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):  # invalid variables: the general path reports them
            return None
        plan = compiled.plan(self.schema, coerced)
        return None if plan is None else (plan, coerced)

    async def execute(
        self, ctx: Context, plan: Selection, variables: VariableValues
    ) -> dict[str, Any] | None:
        """The `data` of the response, or None when the general path must answer."""
        try:
            answer: str | None = None
            async with ctx.reads() as session:
                # One connection for the whole answer, root resolvers included: the plan
                # runs its reads one after another.
                shared = ctx.sharing(session)
                statement = None
                if self.single_statement and ctx.services.db.dialect == "postgresql":
                    statement = build(plan, shared, variables)
                if statement is not None:
                    answer = await statement.fetch(session)
                else:
                    data = await Run(shared, session, variables).answer(plan)
            if statement is not None and answer is not None:
                # Everything is read: the connection goes back to the pool before the
                # answer is built, so concurrent requests need fewer connections.
                fetched = statement.place(answer)
                data = await SingleRun(shared, session, variables, fetched).answer(plan)
            single = statement is not None
        except Exception as exc:
            log.debug("compiled read abandoned", extra={"reason": repr(exc)})
            COMPILED_READS.labels("abandoned").inc()
            return None
        COMPILED_READS.labels("answered").inc()
        SINGLE_STATEMENT.labels("single" if single else "multi").inc()
        return data
