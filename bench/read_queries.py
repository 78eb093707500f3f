"""The read benchmark's data set, its three queries on both servers, and the equality check.

The data set is built with bulk SQL after Concord's own migrations: 200 users,
10 workspaces x 10 boards x 50 cards x 5 comments, every card assigned. Ids are md5-derived
UUIDs, so every run has the same rows. Some sort keys tie on purpose (two boards share a
`created_at`, two cards a `position`, two comments a `created_at`): the tie-breaker `id`
must then decide the order on both servers.

The PostGraphile documents use its default inflection and alias each field to Concord's
name, with `orderBy` matching Concord's keyset order (boards by (created_at, id), cards by
(position, id), comments by (created_at, id)), so both servers must return the very same
`data`, which `check_equal` insists on before anything is measured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

USERS, WORKSPACES, BOARDS, CARDS, COMMENTS = 200, 10, 10, 50, 5
MEMBERS_PER_WORKSPACE = 20  # the bench user (OWNER) and 19 editors

DATASET_SQL = f"""
BEGIN;
INSERT INTO users (id, email, display_name, password_hash, created_at)
SELECT md5('user' || u)::uuid, 'user' || u || '@bench.example', 'User ' || u,
       'not-a-password-hash', timestamp '2026-01-01' + u * interval '1 second'
FROM generate_series(0, {USERS - 1}) AS u;

INSERT INTO workspaces (id, name, created_at, version)
SELECT md5('workspace' || w)::uuid, 'Workspace ' || w,
       timestamp '2026-01-02' + w * interval '1 minute', 1
FROM generate_series(0, {WORKSPACES - 1}) AS w;

INSERT INTO event_streams (workspace_id, last_seq)
SELECT md5('workspace' || w)::uuid, 0 FROM generate_series(0, {WORKSPACES - 1}) AS w;

INSERT INTO memberships (id, workspace_id, user_id, role, created_at)
SELECT md5('member' || w || '-' || m)::uuid, md5('workspace' || w)::uuid,
       md5('user' || CASE WHEN m = 0 THEN 0 ELSE 1 + (w * 20 + m) % {USERS - 1} END)::uuid,
       CASE WHEN m = 0 THEN 'OWNER' ELSE 'EDITOR' END,
       timestamp '2026-01-03' + m * interval '1 second'
FROM generate_series(0, {WORKSPACES - 1}) AS w,
     generate_series(0, {MEMBERS_PER_WORKSPACE - 1}) AS m;

INSERT INTO boards (id, workspace_id, name, created_at, version)
SELECT md5('board' || w || '-' || b)::uuid, md5('workspace' || w)::uuid,
       'Board ' || w || '-' || b, timestamp '2026-01-04' + (b / 2) * interval '1 minute', 1
FROM generate_series(0, {WORKSPACES - 1}) AS w, generate_series(0, {BOARDS - 1}) AS b;

INSERT INTO cards (id, workspace_id, board_id, title, description, status, position,
                   assignee_id, due_date, created_at, version)
SELECT md5('card' || w || '-' || b || '-' || c)::uuid, md5('workspace' || w)::uuid,
       md5('board' || w || '-' || b)::uuid, 'Card ' || w || '-' || b || '-' || c,
       repeat('Some words describing the work. ', 4),
       (ARRAY['TODO', 'DOING', 'DONE'])[1 + c % 3], ((c * 37) % 25) * 1.5,
       md5('user' || (1 + (w * 500 + b * 50 + c) % {USERS - 1}))::uuid, NULL,
       timestamp '2026-01-05' + c * interval '1 second', 1
FROM generate_series(0, {WORKSPACES - 1}) AS w, generate_series(0, {BOARDS - 1}) AS b,
     generate_series(0, {CARDS - 1}) AS c;

INSERT INTO comments (id, workspace_id, card_id, author_id, body, created_at, version)
SELECT md5('comment' || w || '-' || b || '-' || c || '-' || k)::uuid,
       md5('workspace' || w)::uuid, md5('card' || w || '-' || b || '-' || c)::uuid,
       md5('user' || (1 + (w * 7 + b * 3 + c + k) % {USERS - 1}))::uuid,
       'Comment ' || k || ' on card ' || w || '-' || b || '-' || c || ': looks good to me.',
       timestamp '2026-01-06' + (k / 2) * interval '1 second', 1
FROM generate_series(0, {WORKSPACES - 1}) AS w, generate_series(0, {BOARDS - 1}) AS b,
     generate_series(0, {CARDS - 1}) AS c, generate_series(0, {COMMENTS - 1}) AS k;
COMMIT;
ANALYZE;
"""

IDS_SQL = """
SELECT json_build_object(
  'user', md5('user0')::uuid,
  'workspaces', (SELECT json_agg(id ORDER BY created_at, id) FROM workspaces),
  'boards', (SELECT json_agg(id ORDER BY workspace_id, created_at, id) FROM boards))
"""

COUNTS_SQL = """
SELECT json_build_object('users', (SELECT count(*) FROM users),
  'workspaces', (SELECT count(*) FROM workspaces), 'boards', (SELECT count(*) FROM boards),
  'cards', (SELECT count(*) FROM cards), 'assigned', (SELECT count(assignee_id) FROM cards),
  'comments', (SELECT count(*) FROM comments))
"""

CONCORD = {
    "nested": """query Nested($id: ID!) {
  workspace(id: $id) { id name
    boards(first: 10) { nodes { id name
      cards(first: 10) { nodes { id title status position version
        assignee { id displayName }
        comments(first: 5) { nodes { id body author { id displayName } } } } } } } } }""",
    "mid": """query Mid($id: ID!) {
  board(id: $id) { id name
    cards(first: 50) { nodes { id title status position assignee { id displayName } } } } }""",
    "trivial": "query Me { me { id displayName } }",
}

POSTGRAPHILE = {
    "nested": """query Nested($id: UUID!) {
  workspace: workspaceById(id: $id) { id name
    boards: boardsByWorkspaceId(first: 10, orderBy: [CREATED_AT_ASC, ID_ASC]) { nodes { id name
      cards: cardsByBoardId(first: 10, orderBy: [POSITION_ASC, ID_ASC]) { nodes {
        id title status position version
        assignee: userByAssigneeId { id displayName }
        comments: commentsByCardId(first: 5, orderBy: [CREATED_AT_ASC, ID_ASC]) {
          nodes { id body author: userByAuthorId { id displayName } } } } } } } } }""",
    "mid": """query Mid($id: UUID!) {
  board: boardById(id: $id) { id name
    cards: cardsByBoardId(first: 50, orderBy: [POSITION_ASC, ID_ASC]) {
      nodes { id title status position assignee: userByAssigneeId { id displayName } } } } }""",
    # PostGraphile has no notion of "me": the same row, looked up by the caller's id.
    "trivial": "query Me($id: UUID!) { me: userById(id: $id) { id displayName } }",
}

QUERIES = ("nested", "mid", "trivial")
SERVERS = ("concord", "postgraphile")


@dataclass(frozen=True)
class Ids:
    user: str
    workspaces: list[str]
    boards: list[str]

    @classmethod
    def parse(cls, text: str) -> Ids:
        data = json.loads(text)
        return cls(user=data["user"], workspaces=data["workspaces"], boards=data["boards"])


def variables(query: str, ids: Ids, vary: bool) -> list[dict[str, Any]]:
    """The variables of each request: one target, or every workspace / board in turn."""
    if query == "nested":
        return [{"id": w} for w in (ids.workspaces if vary else ids.workspaces[:1])]
    if query == "mid":
        return [{"id": b} for b in (ids.boards if vary else ids.boards[:1])]
    return [{}]


def body(server: str, query: str, ids: Ids, values: dict[str, Any]) -> dict[str, Any]:
    """The POST body; PostGraphile's `trivial` gets the bench user's id as a variable."""
    if server == "concord":
        return {"query": CONCORD[query], "variables": values}
    if query == "trivial":
        values = {"id": ids.user}
    return {"query": POSTGRAPHILE[query], "variables": values}


def expect_shape(query: str, data: Any) -> str | None:
    """What is wrong with a result that cannot be right, whatever the other server says."""
    if query == "trivial":
        return None if data.get("me") and data["me"].get("id") else "no user"
    if query == "mid":
        board = data.get("board")
        if not board or len(board["cards"]["nodes"]) != CARDS:
            return f"expected a board with {CARDS} cards"
        if any(card["assignee"] is None for card in board["cards"]["nodes"]):
            return "a card without its assignee"
        return None
    workspace = data.get("workspace")
    if not workspace or len(workspace["boards"]["nodes"]) != BOARDS:
        return f"expected a workspace with {BOARDS} boards"
    for board in workspace["boards"]["nodes"]:
        cards = board["cards"]["nodes"]
        if len(cards) != 10 or any(len(c["comments"]["nodes"]) != COMMENTS for c in cards):
            return "expected 10 cards per board and 5 comments per card"
        if any(c["assignee"] is None for c in cards):
            return "a card without its assignee"
    return None


def first_difference(a: Any, b: Any, path: str = "data") -> str | None:
    """Where two JSON values differ (1 and 1.0 are equal: JSON has one number type)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def check_equal(query: str, answers: Mapping[str, Any]) -> str | None:
    """None when both servers answered `query` with the same, plausible data."""
    for server, reply in answers.items():
        if reply.get("errors") or not reply.get("data"):
            return f"{server}: {json.dumps(reply)[:800]}"
        wrong = expect_shape(query, reply["data"])
        if wrong:
            return f"{server}: {wrong}"
    replies = list(answers.values())
    for other in replies[1:]:
        found = first_difference(replies[0]["data"], other["data"])
        if found:
            return found
    return None


def count_rows(data: Any) -> int:
    """Objects in a result (rows the server had to produce), for the report."""
    if isinstance(data, dict):
        return (1 if "id" in data else 0) + sum(count_rows(v) for v in data.values())
    if isinstance(data, list):
        return sum(count_rows(v) for v in data)
    return 0


def _lua_string(text: str) -> str:
    level = "=" * 4
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def wrk_script(path: str, bodies: list[dict[str, Any]], headers: Mapping[str, str]) -> str:
    """A wrk Lua script that POSTs the bodies in turn and prints a JSON summary line."""
    lines = ["local bodies = {"]
    lines += [f"  {_lua_string(json.dumps(b, separators=(',', ':')))}," for b in bodies]
    lines.append("}")
    lines.append("local headers = {")
    lines += [f"  [ {_lua_string(k)} ] = {_lua_string(v)}," for k, v in headers.items()]
    lines.append("}")
    lines.append(
        f"""local prepared, n = {{}}, 0
init = function(args)
  for i, b in ipairs(bodies) do prepared[i] = wrk.format("POST", "{path}", headers, b) end
end
request = function()
  n = n % #prepared + 1
  return prepared[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""
    )
    return "\n".join(lines)


def combos(queries: list[str], connections: list[int]) -> Iterator[tuple[str, int]]:
    for query in queries:
        for c in connections:
            yield query, c
