"""Typed access to the resolver context from a Strawberry `Info`."""

from __future__ import annotations

from typing import Any

from strawberry.types import Info

from resolvers.context import Context


def ctx(info: Info[Any, Any]) -> Context:
    context = info.context
    assert isinstance(context, Context)
    return context
