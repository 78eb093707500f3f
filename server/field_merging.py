"""The "fields can be merged" rule, without its quadratic cost on repeated fields.

graphql-core compares every pair of fields that share a response name: 495 copies of
`me{id}` are 122,000 comparisons (about a second of a blocked event loop, then "Validation
aborted"). Copies that are *syntactically identical* in the same selection set cannot
conflict with each other, and conflict with any third field exactly when the first copy
does; so the rule runs on the document with such copies removed (hash-consed bottom up,
linear in the document), and reports the same errors, with the original positions.
"""

from __future__ import annotations

from dataclasses import replace

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    print_ast,
    validate,
)
from graphql.language import VisitorAction
from graphql.validation import OverlappingFieldsCanBeMergedRule


class _Dedup:
    """Each selection set with identical sibling selections dropped; ids by structure."""

    def __init__(self) -> None:
        self.ids: dict[tuple[object, ...], int] = {}

    def _id(self, key: tuple[object, ...]) -> int:
        return self.ids.setdefault(key, len(self.ids))

    def selection_set(self, node: SelectionSetNode | None) -> tuple[SelectionSetNode | None, int]:
        if node is None:
            return None, -1
        kept: list[SelectionNode] = []
        seen: set[int] = set()
        for selection in node.selections:
            new, key = self.selection(selection)
            if key in seen:
                continue
            seen.add(key)
            kept.append(new)
        if len(kept) == len(node.selections) and all(
            a is b for a, b in zip(kept, node.selections, strict=True)
        ):
            rebuilt = node
        else:
            rebuilt = replace(node, selections=tuple(kept))
        return rebuilt, self._id(("set", *sorted(seen)))

    def selection(self, node: SelectionNode) -> tuple[SelectionNode, int]:
        if isinstance(node, FieldNode):
            inner, inner_id = self.selection_set(node.selection_set)
            key: tuple[object, ...] = (
                "field",
                node.alias.value if node.alias else None,
                node.name.value,
                tuple(print_ast(a) for a in node.arguments or ()),
                tuple(print_ast(d) for d in node.directives or ()),
                inner_id,
            )
            if inner is not node.selection_set:
                node = replace(node, selection_set=inner)
            return node, self._id(key)
        if isinstance(node, InlineFragmentNode):
            inner, inner_id = self.selection_set(node.selection_set)
            condition = node.type_condition.name.value if node.type_condition else None
            directives = tuple(print_ast(d) for d in node.directives or ())
            inline_key: tuple[object, ...] = ("inline", condition, directives, inner_id)
            if inner is not node.selection_set and inner is not None:
                node = replace(node, selection_set=inner)
            return node, self._id(inline_key)
        # A fragment spread: its name and directives identify it.
        return node, self._id(("spread", print_ast(node)))

    def document(self, document: DocumentNode) -> DocumentNode:
        definitions = []
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
                inner, _ = self.selection_set(definition.selection_set)
                if inner is not None and inner is not definition.selection_set:
                    definition = replace(definition, selection_set=inner)
            definitions.append(definition)
        return replace(document, definitions=tuple(definitions))


def deduplicated(document: DocumentNode) -> DocumentNode:
    """The document without syntactically identical sibling selections."""
    return _Dedup().document(document)


class LinearFieldMergingRule(ValidationRule):
    """graphql-core's OverlappingFieldsCanBeMergedRule on the deduplicated document."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)

    def enter_document(self, node: DocumentNode, *_: object) -> VisitorAction:
        errors = validate(
            self.context.schema, deduplicated(node), [OverlappingFieldsCanBeMergedRule]
        )
        for error in errors:
            self.report_error(error)
        return self.SKIP
