"""What the fuzz sends: requests built from the served schema, valid and invalid.

Valid documents come from hypothesis-graphql (`from_schema`), with the seed's ids,
cursors, versions and emails sampled into the arguments that take them, so queries reach
data and mutations reach their resolvers. Invalid ones are hypothesis-graphql's negative
mode (one schema violation each: a wrong argument type, a missing required argument, an
unknown enum value...) and mutations of documents that no schema-driven generator makes:
broken syntax, unknown fields, deep or huge nesting, odd unicode and NUL bytes, fragment
cycles, and bad variables or request bodies.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import graphql
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from tests.fuzz.served import JWT_SECRET, World

# Arguments and input fields whose values the seed can supply.
CURSOR_NAMES = {"after"}
VERSION_NAMES = {"expectedVersion"}
EMAIL_NAMES = {"email"}
VERSIONS = ["1", "2", "3", "0", "-1", "99999999999999999999", "00000000000000ff"]
ODD_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\U0010ffff",
    "\u202e\u0301",
    "\ufeff",
    "' OR 1=1 --",
    '"; DROP TABLE cards; --',
    "%s%s%n",
    "${jndi:ldap://x}",
    "\\",
    "x" * 10_000,
    "🙂" * 1000,
]


# Escapes in GraphQL string literals: lone surrogates and out-of-range code points are
# syntax errors, NUL and the rest must reach the resolvers' validation.
GRAPHQL_ESCAPES = [
    r'"\uD800"',
    r'"a\uDFFFb"',
    r'"\u{D800}"',
    r'"\u{110000}"',
    r'"\u0000"',
    r'"\u{0}"',
    '"""\u0000"""',
    r'"\uD83D\uDE00"',
    r'"\u{10FFFF}"',
    r'"\uFFFF"',
]


@dataclass(frozen=True)
class Request:
    """One HTTP request to /graphql: a JSON body (or a raw one), who sends it, and how."""

    body: Any
    caller: str
    method: str = "POST"
    raw: bytes | None = None
    content_type: str = "application/json"
    accept: str = "application/json"
    note: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        body = self.raw.decode("utf-8", "replace") if self.raw is not None else self.body
        return f"{self.method} as {self.caller} ({self.note}): {body!r:.3000}"


TEXT = st.one_of(st.text(max_size=40), st.sampled_from(ODD_TEXT))


def _scalars(world: World) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    ids = st.sampled_from(world.ids)
    datetimes = st.one_of(
        st.sampled_from(
            [
                "2030-01-02T03:04:05+00:00",
                "2030-01-02T03:04:05Z",
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-12:00",
                "2030-01-02T03:04:05",
            ]
        ),
        st.datetimes().map(lambda d: d.isoformat()),
    )
    return {
        "ID": st.one_of(
            ids.map(nodes.String),
            ids.map(nodes.String),
            ids.map(nodes.String),
            st.text(max_size=40).map(nodes.String),
            st.integers(-(2**31), 2**31 - 1).map(nodes.Int),
        ),
        "DateTime": datetimes.map(nodes.String),
        "JSON": st.just(nodes.String("{}")),
    }


@st.composite
def _seeded(draw: st.DrawFn, documents: st.SearchStrategy[object], world: World) -> str:
    """A document with some cursor, version and email arguments set to the seed's values."""
    document = draw(documents)
    assert isinstance(document, graphql.DocumentNode)
    pools = (
        (CURSOR_NAMES, world.cursors),
        (VERSION_NAMES, VERSIONS),
        (EMAIL_NAMES, world.emails),
    )

    class Seeder(graphql.Visitor):
        def _swap(self, node: Any) -> Any:
            for names, pool in pools:
                if node.name.value in names and pool and draw(st.booleans()):
                    value = graphql.StringValueNode(value=draw(st.sampled_from(pool)))
                    return type(node)(name=node.name, value=value)
            return None

        def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> Any:
            return self._swap(node)

        def enter_object_field(self, node: graphql.ObjectFieldNode, *_: Any) -> Any:
            return self._swap(node)

    seeded = graphql.visit(document, Seeder())
    (operation,) = seeded.definitions
    assert isinstance(operation, graphql.OperationDefinitionNode)
    roots = operation.selection_set.selections
    if operation.operation is graphql.OperationType.MUTATION and len(roots) > MUTATION_ROOTS:
        # Each root field of a mutation is a transaction of its own: a few per document
        # keep the minute for more documents rather than longer ones.
        start = draw(st.integers(0, len(roots) - MUTATION_ROOTS))
        operation = graphql.OperationDefinitionNode(
            operation=operation.operation,
            name=operation.name,
            variable_definitions=operation.variable_definitions,
            directives=operation.directives,
            selection_set=graphql.SelectionSetNode(
                selections=tuple(roots[start : start + MUTATION_ROOTS])
            ),
        )
    return graphql.print_ast(operation)


def _identity(document: graphql.DocumentNode) -> graphql.DocumentNode:
    return document


# Each login or register runs argon2 (tens of milliseconds of CPU, on purpose): they are
# fuzzed in a small share of the documents, so the minute goes to the rest of the API.
PASSWORD_FIELDS = ["login", "register"]
PASSWORD_SHARE = 50
MUTATION_ROOTS = 3


def valid_documents(schema: graphql.GraphQLSchema, world: World) -> st.SearchStrategy[str]:
    """Queries and mutations that pass validation against the served schema."""
    assert schema.query_type is not None
    assert schema.mutation_type is not None
    roots = [*schema.query_type.fields, *schema.mutation_type.fields]
    scalars = _scalars(world)
    rest = from_schema(
        schema,
        fields=[name for name in roots if name not in PASSWORD_FIELDS],
        custom_scalars=scalars,
        print_ast=_identity,
    )
    passwords = from_schema(
        schema, fields=PASSWORD_FIELDS, custom_scalars=scalars, print_ast=_identity
    )
    return _seeded(_share(rest, passwords, PASSWORD_SHARE), world)


@st.composite
def _share(
    draw: st.DrawFn, most: st.SearchStrategy[object], few: st.SearchStrategy[object], one_in: int
) -> object:
    """A draw from `few` once in `one_in` draws, else from `most`."""
    return draw(few if draw(st.integers(1, one_in)) == 1 else most)


CALLERS = ["owner", "editor", "viewer", "outsider", "anonymous"]
# JSON, the GraphQL media type (4xx for request errors), and GraphQL over SSE.
ACCEPTS = st.sampled_from(
    ["application/json", "application/graphql-response+json", "text/event-stream"]
)


def valid_requests(schema: graphql.GraphQLSchema, world: World) -> st.SearchStrategy[Request]:
    """Valid documents, each from one of the seeded callers, in either response media type."""
    return _valid_requests(valid_documents(schema, world))


@st.composite
def _valid_requests(draw: st.DrawFn, documents: st.SearchStrategy[str]) -> Request:
    document = draw(documents)
    caller = draw(st.sampled_from(CALLERS))
    accept = draw(ACCEPTS)
    return Request({"query": document}, caller, accept=accept, note="valid")


# --- invalid documents -------------------------------------------------------------------

PUNCTUATION = [*'{}()[]:$@!"\\#.,=|&\n\t ', "...", '"""', "\x00", "\ufeff", "on", "fragment"]


@st.composite
def _broken_syntax(draw: st.DrawFn, bases: st.SearchStrategy[str]) -> str:
    """A document with a few characters cut, swapped or inserted."""
    text = draw(bases)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["cut", "insert", "truncate", "duplicate"]))
        if edit == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        elif edit == "insert":
            text = text[:at] + draw(st.sampled_from(PUNCTUATION)) + text[at:]
        elif edit == "truncate":
            text = text[:at]
        else:
            text = text[:at] + text[at : at + 20] + text[at:]
    return text


@st.composite
def _unknown_names(draw: st.DrawFn, bases: st.SearchStrategy[str]) -> str:
    """A document with an unknown field, argument, type or directive spliced in."""
    base = draw(bases)
    splice = draw(
        st.sampled_from(
            [
                "bogusField",
                "__typename bogus { id }",
                "me(bogus: 1) { id }",
                "... on Bogus { id }",
                "id @bogus",
                "id @skip(if: 1)",
                "... on Query { me { password } }",
                "__schema { types { name } }",
                "__type(name: 1) { name }",
            ]
        )
    )
    at = base.find("{")
    if at < 0:
        return base + splice
    return base[: at + 1] + " " + splice + " " + base[at + 1 :]


def _nested(depth: int, kind: str) -> str:
    if kind == "selections":
        return "{ " + "me { " * depth + "id" + " }" * depth + " }"
    if kind == "schema-depth":
        chain = "workspaces { nodes { boards { nodes { cards { nodes { board { workspace { "
        return "{ " + chain * depth + "id" + " } } } } } } } }" * depth + " }"
    if kind == "list-value":
        return "{ workspace(id: " + "[" * depth + '"x"' + "]" * depth + ") { id } }"
    if kind == "object-value":
        return (
            "mutation { createWorkspace(input: "
            + "{ name: " * depth
            + '"x"'
            + " }" * depth
            + ") { __typename } }"
        )
    if kind == "aliases":
        return "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(depth)) + " }"
    if kind == "fragments":
        fragments = " ".join(
            f"fragment F{i} on Query {{ ...F{i + 1} me {{ id }} }}" for i in range(depth)
        )
        return f"query {{ ...F0 }} {fragments} fragment F{depth} on Query {{ me {{ id }} }}"
    if kind == "fragment-cycle":
        return "query { ...A } fragment A on Query { ...B me { id } } fragment B on Query { ...A }"
    if kind == "fragment-spread-bomb":
        spreads = " ".join(["...F"] * depth)
        return f"query {{ {spreads} }} fragment F on Query {{ workspaces {{ nodes {{ id }} }} }}"
    if kind == "variables":
        defs = " ".join(f"$v{i}: Int" for i in range(depth))
        return f"query({defs}) {{ me {{ id }} }}"
    if kind == "directives":
        return "{ me " + "@include(if: true) " * depth + "{ id } }"
    return (
        "{ "
        + "workspaces(first: 100) { nodes { boards(first: 100) { nodes { id } } } } " * depth
        + "}"
    )


@st.composite
def _huge(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(
            [
                "selections",
                "schema-depth",
                "list-value",
                "object-value",
                "aliases",
                "fragments",
                "fragment-cycle",
                "fragment-spread-bomb",
                "variables",
                "directives",
                "cost",
            ]
        )
    )
    depth = draw(st.sampled_from([2, 13, 50, 300, 700, 999, 1000, 1500, 5000]))
    return _nested(depth, kind)


@st.composite
def _odd_strings(draw: st.DrawFn, world: World) -> str:
    """Valid shapes with odd text in string literals (escaped, as GraphQL allows)."""
    text = draw(TEXT)
    literal = draw(
        st.just(graphql.print_ast(graphql.StringValueNode(value=text)))
        | st.sampled_from(GRAPHQL_ESCAPES)
    )
    template = draw(
        st.sampled_from(
            [
                "{ workspace(id: %s) { id } }",
                "{ events(workspaceId: %s, after: %s) { nodes { seq } } }",
                "{ workspaces(after: %s) { nodes { id } } }",
                "{ cardHistory(cardId: %s, after: %s) { nodes { seq } } }",
                "mutation { createWorkspace(input: {name: %s}) { __typename } }",
                "mutation { refreshToken(token: %s) { __typename } }",
                "mutation { logout(refreshToken: %s) { __typename } }",
                "mutation { register(input: {email: %s, password: %s, displayName: %s}) { __typename } }",
            ]
        )
    )
    return template.replace("%s", literal)


VARIABLE_DOCUMENTS = [
    ("query($id: ID!) { workspace(id: $id) { id name } }", "id"),
    ("query($id: ID!) { card(id: $id) { id title dueDate } }", "id"),
    (
        "query($w: ID!, $a: String, $f: Int) { events(workspaceId: $w, after: $a, first: $f) { nodes { seq } } }",
        "a",
    ),
    ("query($f: Int, $a: String) { workspaces(first: $f, after: $a) { nodes { id } } }", "f"),
    ("mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { __typename } }", "i"),
    ("mutation($i: UpdateCardInput!) { updateCard(input: $i) { __typename } }", "i"),
    ("mutation($i: CreateCardInput!) { createCard(input: $i) { __typename } }", "i"),
    ("mutation($i: MoveCardInput!) { moveCard(input: $i) { __typename } }", "i"),
    ("mutation($i: RegisterInput!) { register(input: $i) { __typename } }", "i"),
]

INPUT_KEYS = [
    *("name", "id", "title", "boardId", "cardId", "dueDate", "status", "position"),
    *("expectedVersion", "email", "password", "displayName", "onConflict", "x", ""),
]


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: Hypothesis checks by reading the source that `extend` uses its
    # argument, which fails for a lambda spread over lines.
    return st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(INPUT_KEYS), children, max_size=5
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(ODD_TEXT),
    _containers,
    max_leaves=12,
)


@st.composite
def _bad_variables(draw: st.DrawFn, world: World, caller: str) -> Request:
    query, name = draw(st.sampled_from(VARIABLE_DOCUMENTS))
    variables: Any = {name: draw(JSON_VALUES | st.sampled_from(world.ids))}
    shape = draw(st.sampled_from(["value", "extra", "missing", "not-object", "deep", "ids"]))
    if shape == "extra":
        variables["unexpected"] = draw(JSON_VALUES)
    elif shape == "missing":
        variables = {}
    elif shape == "not-object":
        variables = draw(st.sampled_from([[], "x", 7, True, [1, 2]]))
    elif shape == "deep":
        # Written out by hand: too deep for the json module to encode.
        depth = draw(st.sampled_from([50, 500, 5000]))
        value = '{"name": ' * depth + '"x"' + "}" * depth
        raw = f'{{"query": {json.dumps(query)}, "variables": {{"{name}": {value}}}}}'
        return Request(None, caller, raw=raw.encode(), note="deep variables")
    elif shape == "ids":
        variables = {
            "id": draw(st.sampled_from(world.ids)),
            "w": draw(st.sampled_from(world.ids)),
            "a": draw(st.sampled_from([*world.cursors, *ODD_TEXT])),
            "f": draw(st.sampled_from([0, -1, 101, 2**31, 2**63, 1.5, "1"])),
        }
    body: dict[str, Any] = {"query": query, "variables": variables}
    if draw(st.booleans()):
        body["operationName"] = draw(st.sampled_from([None, "", "Nope", 7, ["x"]]))
    return Request(body, caller, note="bad variables")


@st.composite
def _bad_bodies(draw: st.DrawFn) -> Request:
    """Bodies that are not a GraphQL request, and requests in the wrong shape."""
    caller = draw(st.sampled_from(CALLERS))
    kind = draw(
        st.sampled_from(
            ["json", "raw", "get", "graphql-media", "two-operations", "subscription-over-post"]
        )
    )
    if kind == "json":
        body = draw(
            st.sampled_from(
                [
                    {},
                    {"query": None},
                    {"query": 7},
                    {"query": ["{ me { id } }"]},
                    {"query": {"q": 1}},
                    {"query": "{ me { id } }", "variables": "nope"},
                    {"query": "{ me { id } }", "extensions": "x"},
                    {"query": "{ me { id } }", "extensions": {"persistedQuery": {"sha256Hash": 1}}},
                    {"query": "", "operationName": ""},
                    {"queries": "{ me { id } }"},
                    [{"query": "{ me { id } }"}],
                    "{ me { id } }",
                    None,
                    7,
                ]
            )
        )
        return Request(body, caller, note="bad body")
    if kind == "raw":
        raw = draw(
            st.sampled_from(
                [
                    b"",
                    b"{",
                    b'{"query": "{ me { id } }"',
                    b'{"query": "\\ud800"}',
                    b'{"query": "{ me { id } }", "variables": {"a": NaN}}',
                    b"\xff\xfe\x00",
                    b'{"query": "{ me { id } }"}\x00',
                    b"[" * 10_000,
                    b'{"query": "' + b"{ me " * 300 + b'"}',
                ]
            )
            | st.binary(max_size=200)
        )
        content_type = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=latin-1",
                    "text/plain",
                    "application/graphql",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "multipart/form-data; boundary=x",
                    "",
                ]
            )
        )
        return Request(None, caller, raw=raw, content_type=content_type, note="raw body")
    if kind == "get":
        query = draw(
            st.sampled_from(
                [
                    "{ me { id } }",
                    'mutation { logout(refreshToken: "x") { __typename } }',
                    "{ me { id ",
                    'subscription { presence(boardId: "x") { __typename } }',
                ]
            )
        )
        params = {"query": query}
        if draw(st.booleans()):
            params["variables"] = draw(
                st.sampled_from(['{"id": "x"}', "[", "null", '"\\ud800"', "[" * 2000, "NaN", "{}"])
            )
        return Request(params, caller, method="GET", note="GET")
    if kind == "graphql-media":
        query = draw(st.sampled_from(["{ me { id } }", "{ me { ", "{ nope }", ""]))
        return Request(
            {"query": query}, caller, accept="application/graphql-response+json", note="media"
        )
    if kind == "two-operations":
        body = {"query": "query A { me { id } } query B { me { email } }"}
        if draw(st.booleans()):
            body["operationName"] = draw(st.sampled_from(["A", "C", ""]))
        return Request(body, caller, note="two operations")
    return Request(
        {"query": 'subscription { workspaceEvents(workspaceId: "x") { __typename } }'},
        caller,
        note="subscription over POST",
    )


def invalid_requests(schema: graphql.GraphQLSchema, world: World) -> st.SearchStrategy[Request]:
    """Requests the server must refuse (or answer with a user error), never with a 5xx."""
    negative = from_schema(schema, custom_scalars=_scalars(world), mode=Mode.NEGATIVE)
    return _invalid_requests(negative, world)


CLAIM_VALUES = st.sampled_from(
    [None, "", "x", 5, -1, 2**70, 1e300, "soon", [], {}, "00000000-0000-0000-0000-000000000000"]
)

# Times beyond what a datetime holds, before the epoch, or not numbers at all.
TIME_VALUES = st.sampled_from([2**70, 1e300, -(2**70), -1, 0, "soon", None, 1.5])


@st.composite
def _authorization(draw: st.DrawFn, world: World) -> str:
    """An Authorization header: malformed, or a token signed with the server's secret whose
    claims are odd (what only a holder of the secret could send, and still no 5xx)."""
    if draw(st.booleans()):
        return draw(
            st.sampled_from(
                ["Bearer", "Basic YTpi", "Bearer a.b.c", "Bearer ....", "Bearer " + "a" * 8000]
            )
        )
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": draw(st.sampled_from(world.ids)),
        "iss": "concord",
        "aud": "concord",
        "iat": now,
        "exp": now + 600,
        "typ": "access",
    }
    # One or two claims odd or missing, the rest as the server issues them.
    for name in draw(st.lists(st.sampled_from(sorted(claims)), min_size=1, max_size=2)):
        if draw(st.integers(0, 4)) == 0:
            claims.pop(name, None)
        else:
            claims[name] = draw(TIME_VALUES if name in {"exp", "iat"} else CLAIM_VALUES)
    return "Bearer " + _signed(claims)


def _signed(claims: dict[str, Any]) -> str:
    """An HS256 JWT of any claims (PyJWT's encoder refuses some of the odd ones)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = part(json.dumps(claims).encode())
    signature = hmac.digest(JWT_SECRET.encode(), f"{header}.{payload}".encode(), "sha256")
    return f"{header}.{payload}.{part(signature)}"


@st.composite
def _invalid_requests(draw: st.DrawFn, negative: st.SearchStrategy[str], world: World) -> Request:
    caller = draw(st.sampled_from(CALLERS))
    kind = draw(
        st.sampled_from(
            [
                "negative",
                "negative",
                "negative",
                "syntax",
                "unknown",
                "huge",
                "odd",
                "variables",
                "body",
                "authorization",
            ]
        )
    )
    if kind == "negative":
        document = draw(negative)
    elif kind == "syntax":
        document = draw(_broken_syntax(negative))
    elif kind == "unknown":
        document = draw(_unknown_names(negative))
    elif kind == "huge":
        document = draw(_huge())
    elif kind == "odd":
        document = draw(_odd_strings(world))
    elif kind == "variables":
        return draw(_bad_variables(world, caller))
    elif kind == "authorization":
        authorization = draw(_authorization(world))
        query = draw(st.sampled_from(["{ me { id } }", "{ workspaces { nodes { id } } }"]))
        return Request(
            {"query": query}, caller, headers={"authorization": authorization}, note=kind
        )
    else:
        return draw(_bad_bodies())
    assert isinstance(document, str)
    return Request({"query": document}, caller, accept=draw(ACCEPTS), note=kind)
