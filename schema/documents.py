"""Rules for the documents clients send, beyond graphql-core's validation.

A document with several operations names the one to run (`operationName`): Strawberry
would otherwise run the first one, which is rarely what the client meant. The
GraphQL-over-HTTP specification makes the ambiguity a request error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension


class OneOperationWithoutName(ASTValidationRule):
    """Without an operation name, the document must hold exactly one operation."""

    def enter_document(self, node: DocumentNode, *_args: Any) -> None:
        operations = [d for d in node.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) > 1:
            self.report_error(
                GraphQLError(
                    "Must provide operation name if query contains multiple operations.",
                    operations,
                )
            )


class OperationNameRequired(SchemaExtension):
    """Adds `OneOperationWithoutName` to the validation of requests without a name."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        # Before parsing, `operation_name` is the name the request provided (afterwards
        # Strawberry falls back to the first operation's name).
        if context.graphql_document is None and context.operation_name is None:
            context.validation_rules = (*context.validation_rules, OneOperationWithoutName)
        yield
