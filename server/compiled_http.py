"""Queries on the compiled read path, with the response cache, over HTTP.

`CompiledAnswers.answer` is the one place that decides how a query the compiled path
knows is answered: from the response cache when its scope is unchanged, else by the plan
(and then cached), else not at all (the general path answers). Strawberry's view calls it
for every operation it executes (`execute_single`); `respond` also takes a plain JSON
POST before the view does, which saves the view's own per-request work (request adapter,
context, parsing, result processing) on the hottest requests. Both produce the bytes the
general path would: `{"data": …}` encoded by the same encoder, with the same media type
and status (tests/schema/test_compiled.py compares them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from graphql.execution.values import VariableValues
from starlette.requests import Request
from starlette.responses import Response

from resolvers.context import Context
from resolvers.read_scope import ReadScopes
from schema.compiled import CompiledReads, confined_root
from schema.compiled.plan import Selection
from server.observe import operation_finished
from server.response_cache import ResponseCache
from telemetry import tracing

REQUEST_KEYS = frozenset({"query", "variables", "operationName"})
# Whether a known document stays within the query limits with these variables.
LimitsCheck = Callable[[str, str | None, object], bool]


class CompiledAnswers:
    """The compiled read path and the response cache in front of it."""

    def __init__(
        self,
        compiled: CompiledReads,
        cache: ResponseCache | None,
        within_limits: LimitsCheck | None = None,
    ) -> None:
        self.compiled = compiled
        self.cache = cache
        self.within_limits = within_limits
        self.scopes = ReadScopes()

    def _prepare(
        self, query: str, operation_name: str | None, variables: object
    ) -> tuple[Selection, VariableValues] | None:
        """The plan, if the document is known and its cost with these variables allowed."""
        prepared = self.compiled.prepare(query, operation_name, variables)
        if prepared is None:
            return None
        if self.within_limits is not None and not self.within_limits(
            query, operation_name, variables
        ):
            return None  # the general path reports the limit
        return prepared

    async def answer(
        self, context: Context, query: str, operation_name: str | None, variables: object
    ) -> Any:
        """The response's `data` (a cached answer as an `orjson.Fragment`), or None.

        An answer is logged, counted and traced like any operation (`server.observe`);
        an attempt given up is not: the general path then answers, and records it.
        """
        prepared = self._prepare(query, operation_name, variables)
        if prepared is None:
            return None
        started = time.perf_counter()
        tracer = tracing.tracer
        name = self.compiled.name(query, operation_name)
        if tracer is None:
            data = await self._answer(context, query, operation_name, variables, prepared)
        else:
            span_name = f"query {name or 'anonymous'}"
            with tracer.start_as_current_span(span_name, end_on_exit=True) as span:
                span.set_attribute("graphql.operation.type", "query")
                span.set_attribute("concord.compiled", True)
                data = await self._answer(context, query, operation_name, variables, prepared)
                span.set_attribute("concord.outcome", "ok" if data is not None else "general")
        if data is not None:
            viewer = context.viewer
            operation_finished(
                context.request.scope if context.request is not None else None,
                viewer.user_id if viewer is not None else None,
                name,
                "query",
                "http",
                started,
                "ok",
            )
        return data

    async def _answer(
        self,
        context: Context,
        query: str,
        operation_name: str | None,
        variables: object,
        prepared: tuple[Selection, VariableValues],
    ) -> Any:
        plan, coerced = prepared
        key = None
        root = confined_root(plan, coerced)
        if self.cache is not None and root is not None:
            scope = await self.scopes.scope(context, *root)
            if scope is not None:
                key = self.cache.key(query, operation_name, variables, scope)
        if key is not None and self.cache is not None:
            hit = await self.cache.get(key)
            if hit is not None:
                # Spliced into the response as it is, without decoding.
                return orjson.Fragment(hit)
        data = await self.compiled.execute(context, plan, coerced)
        if data is not None and key is not None and self.cache is not None:
            await self.cache.set(key, data)
        return data

    def learn(self, query: str, operation_name: str | None, answered_with_data: bool) -> None:
        self.compiled.learn(query, operation_name, answered_with_data)

    async def respond(
        self,
        request: Request,
        context_of: Callable[[Request], Awaitable[Context]],
        encode: Callable[[object], str],
        media_type: str,
    ) -> Response | None:
        """The whole response to a plain JSON POST of a known query, or None."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return None
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict) or not body.keys() <= REQUEST_KEYS:
            return None
        query, operation_name = body.get("query"), body.get("operationName")
        variables = body.get("variables")
        if (
            not isinstance(query, str)
            or not isinstance(operation_name, str | None)
            or not isinstance(variables, dict | None)
        ):
            return None
        if not self.compiled.knows(query, operation_name):
            return None  # no context built for what the view answers anyway
        data = await self.answer(await context_of(request), query, operation_name, variables)
        if data is None:
            return None
        return Response(encode({"data": data}), status_code=200, media_type=media_type)
