"""Which `subscribe` messages take the fan-out path, and how their events are rendered.

`SubscriptionPlans` parses and validates a subscription document once per query text,
with the schema's validation rules and its extensions' limits, and accepts only a valid
subscription to the single root field `workspaceEvents` (anything else, or anything
invalid, stays with Strawberry, which answers as it always did).

A `SelectionView` renders an event once for every member with the same selection and
the same values of the variables used below the root field (the permission scope is the
workspace: every member reads every event). It executes the event the way Strawberry
executes a subscription event (graphql-core's per-event executor with Strawberry's
execution context) and applies the extensions' stream-result hooks (error codes), so the
payload's bytes are those of the general path.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    parse,
    print_ast,
    specified_rules,
)
from graphql.execution import Executor, execute_subscription_event
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document

from resolvers.live import SharedEvent
from schema.event import Event
from server.encoding import dumps
from server.observe import OperationObserver

log = logging.getLogger(__name__)

ROOT_FIELD = "workspaceEvents"
PLANS_KEPT = 256
BINDINGS_KEPT = 1024
_VARIABLE = re.compile(r"\$(\w+)")


@dataclass(eq=False)
class Plan:
    """A parsed, validated `workspaceEvents` subscription document."""

    document: DocumentNode
    operation: OperationDefinitionNode
    root: FieldNode
    # Variables used below the root field: their values are part of the view's key.
    selection_variables: frozenset[str]
    text: str
    views: dict[str, SelectionView] = field(default_factory=dict)
    # Recent bindings by their variables: in a reconnect storm the clients of a
    # workspace come back with the same variables (the same last cursor).
    bound: dict[str, tuple[dict[str, Any], SelectionView] | None] = field(default_factory=dict)

    def bind(
        self, plans: SubscriptionPlans, variables: Any, context: Callable[[], Any]
    ) -> tuple[dict[str, Any], SelectionView] | None:
        """The root field's arguments and the member's view; None when the variables
        are not valid (Strawberry then reports it)."""
        if variables is not None and not isinstance(variables, dict):
            return None
        try:
            key = json.dumps(variables, sort_keys=True)
        except (TypeError, ValueError):
            return self._bind(plans, variables, context)
        if key in self.bound:
            return self.bound[key]
        result = self._bind(plans, variables, context)
        if len(self.bound) >= BINDINGS_KEPT:
            self.bound.clear()
        self.bound[key] = result
        return result

    def _bind(
        self, plans: SubscriptionPlans, variables: Any, context: Callable[[], Any]
    ) -> tuple[dict[str, Any], SelectionView] | None:
        schema = plans.schema._schema
        coerced = get_variable_values(
            schema, self.operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):
            return None
        try:
            args = get_argument_values(
                schema.subscription_type.fields[ROOT_FIELD], self.root, coerced
            )
        except GraphQLError:
            return None
        values = coerced.coerced  # graphql-core 3.3: the coerced values, by name
        used = {n: values[n] for n in sorted(self.selection_variables) if n in values}
        key = json.dumps(used, sort_keys=True, default=str)
        view = self.views.get(key)
        if view is None:
            executor = StrawberryGraphQLCoreExecutionContext.build(
                schema,
                self.document,
                None,
                context(),
                variables or {},
                None if self.operation.name is None else self.operation.name.value,
            )
            if isinstance(executor, list):
                return None
            view = SelectionView(f"{self.text}\0{key}", executor, plans.stream_hooks)
            self.views[key] = view
        return args, view


class SubscriptionPlans:
    """Which subscribe payloads take the fast path, parsed and validated once per text."""

    def __init__(self, handler_schema: Any) -> None:
        self.schema = handler_schema
        self._plans: dict[tuple[str, str | None], Plan | None] = {}
        self.max_tokens: int | None = None
        self.rules: list[Any] = list(specified_rules)
        self.stream_hooks: list[SchemaExtension] = []
        self.supported = True
        for extension in handler_schema.extensions:
            instance = extension() if not isinstance(extension, SchemaExtension) else extension
            if isinstance(instance, OperationObserver):
                continue  # the fan-out logs and counts its subscriptions itself (ws_fanout)
            if isinstance(instance, AddValidationRules):
                self.rules.extend(instance.validation_rules)
            elif isinstance(instance, MaxTokensLimiter):
                self.max_tokens = instance.max_token_count
            elif _hooks(instance) <= {"on_operation", "on_stream_result"}:
                # Such as schema.errors.ErrorCodes: it converts each streamed result.
                if "on_stream_result" in _hooks(instance):
                    self.stream_hooks.append(instance)
            else:
                # An extension that hooks into execution: only Strawberry runs it right.
                log.info("WebSocket fan-out off: extension %s", type(instance).__name__)
                self.supported = False

    def plan(self, payload: Any) -> Plan | None:
        if not self.supported or not isinstance(payload, dict):
            return None
        query, name = payload.get("query"), payload.get("operationName")
        if not isinstance(query, str) or not (name is None or isinstance(name, str)):
            return None
        key = (query, name)
        if key in self._plans:
            return self._plans[key]
        plan = self._build(query, name)
        if len(self._plans) >= PLANS_KEPT:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _build(self, query: str, name: str | None) -> Plan | None:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) != 1 or (name is not None and operations[0].name is None):
            return None
        operation = operations[0]
        if name is not None and operation.name is not None and operation.name.value != name:
            return None
        selections = operation.selection_set.selections
        if (
            operation.operation is not OperationType.SUBSCRIPTION
            or len(selections) != 1
            or not isinstance(selections[0], FieldNode)
            or selections[0].name.value != ROOT_FIELD
            or selections[0].directives
        ):
            return None
        if validate_document(self.schema._schema, document, tuple(self.rules)):
            return None
        root = selections[0]
        below = "".join(print_ast(d) for d in document.definitions if d is not operation)
        if root.selection_set is not None:
            below += print_ast(root.selection_set)
        variables = frozenset(_VARIABLE.findall(below))
        return Plan(document, operation, root, variables, f"{name or ''}\0{query}")


def _hooks(extension: SchemaExtension) -> set[str]:
    names = {"on_operation", "on_validate", "on_parse", "on_execute", "on_stream_result"}
    names |= {"resolve", "get_results"}
    return {
        n
        for n in names
        if getattr(type(extension), n, None) is not getattr(SchemaExtension, n, None)
    }


class SelectionView:
    """One selection (and the variables it uses): renders each event once, shared."""

    __slots__ = ("_executor", "key", "stream_hooks")

    def __init__(self, key: str, executor: Executor[Any], stream_hooks: list[Any]) -> None:
        self.key = key
        self._executor = executor
        self.stream_hooks = stream_hooks

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SelectionView) and other.key == self.key

    async def render(self, event: Any) -> bytes:
        assert isinstance(event, SharedEvent)
        cache_key = ("ws-next", self.key)
        cached = event.rendered.get(cache_key)
        if cached is None:
            # Concurrent renderings of one event (the group, a member's backfill) share it.
            cached = event.rendered[cache_key] = asyncio.ensure_future(self._render(event))
        result: bytes = await cached
        return result

    async def _render(self, event: SharedEvent) -> bytes:
        try:
            per_event = self._executor.build_per_event_executor(Event(row=event))
            outcome = execute_subscription_event(per_event)
            result = await outcome if inspect.isawaitable(outcome) else outcome
            data, errors = result.data, result.errors
        except Exception as exc:  # what Strawberry does with an exception while streaming
            data, errors = None, [GraphQLError(str(exc), original_error=exc)]
        return encode_result(self.stream_hooks, data, errors)


class _Result:
    def __init__(self, data: Any, errors: list[GraphQLError] | None) -> None:
        self.data = data
        self.errors = errors


def encode_result(stream_hooks: list[Any], data: Any, errors: list[GraphQLError] | None) -> bytes:
    """The `next` payload Strawberry would send: data, errors (converted by the
    extensions' stream-result hooks), as compact JSON."""
    result = _Result(data, errors)
    for hook in stream_hooks:
        steps = hook.on_stream_result(result)
        for _ in steps:
            break
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [e.formatted for e in result.errors]
    return dumps(payload)
