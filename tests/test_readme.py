"""The README's GraphiQL walkthrough, run word by word against a served Concord.

The documents are taken from the README itself, placeholders filled in as a reader would,
so a walkthrough that stops working (or a step that is missing) fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.api import Api, settings_for
from tests.live import live_server, socket
from tests.services import unavailable

ROOT = Path(__file__).resolve().parent.parent
OPERATION_START = re.compile(r"^(mutation|query|subscription)\b")


def walkthrough_documents() -> list[str]:
    """Each GraphQL document of the README's walkthrough, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A first session in GraphiQL", 1)[1].split("\n## ", 1)[0]
    documents: list[str] = []
    for block in re.findall(r"```graphql\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.strip()
            if OPERATION_START.match(line):
                documents.append(line)
            elif line:
                documents[-1] += "\n" + line
    return documents


def fill(document: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        document = document.replace(f"<{placeholder}>", value)
    assert "<" not in document, f"unfilled placeholder in {document}"
    return document


async def run(api: Api, document: str, token: str | None = None) -> dict[str, Any]:
    return await api.ok(document, token=token)


async def test_the_graphiql_walkthrough_works_as_written(tmp_path: Path) -> None:
    docs = walkthrough_documents()
    assert len(docs) == 9, docs
    register_ada, register_bob, create_ws, add_bob, create_board, create_card = docs[:6]
    subscribe, update, merge = docs[6:]
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"  # the embedded default
    async with live_server(settings_for(url, tmp_path)) as server:
        api = server.api
        # 1. Two people.
        ada = (await run(api, register_ada))["register"]
        bob = (await run(api, register_bob))["register"]
        assert ada["__typename"] == bob["__typename"] == "AuthPayload"
        # 2. As Ada: a workspace, Bob in it, a board, a card.
        values = {
            "id": (await run(api, create_ws, ada["accessToken"]))["createWorkspace"]["workspace"][
                "id"
            ]
        }
        added = await run(api, fill(add_bob, values), ada["accessToken"])
        assert added["addMember"]["__typename"] == "MembershipPayload"
        values["board id"] = (await run(api, fill(create_board, values), ada["accessToken"]))[
            "createBoard"
        ]["board"]["id"]
        card = (await run(api, fill(create_card, values), ada["accessToken"]))["createCard"]["card"]
        values |= {"card id": card["id"], "the version you got": card["version"]}

        async with socket(server.ws_url) as tab:
            # 3. The second tab watches the workspace.
            assert (await tab.init(ada["accessToken"]))["type"] == "connection_ack"
            await tab.send(
                {"id": "1", "type": "subscribe", "payload": {"query": fill(subscribe, values)}}
            )
            # 4. The same edit as Ada, then as Bob.
            first = (await run(api, fill(update, values), ada["accessToken"]))["updateCard"]
            assert first["__typename"] == "CardPayload"
            assert first["card"]["title"] == "Write the docs"
            second = (await run(api, fill(update, values), bob["accessToken"]))["updateCard"]
            assert second["__typename"] == "VersionConflict"
            assert second["changedFields"] == ["title"]
            assert second["currentVersion"] == first["card"]["version"]
            assert second["current"] == {
                "version": first["card"]["version"],
                "title": "Write the docs",
            }
            # 5. Bob's edit of another field, merged.
            merged = (await run(api, fill(merge, values), bob["accessToken"]))["updateCard"]
            assert merged["__typename"] == "CardPayload", merged
            assert merged["card"]["title"] == "Write the docs"
            assert merged["card"]["description"] == "Start with the README"
            # The tab saw both edits, in order, each with its author.
            seen = [(await tab.next_data("1"))["workspaceEvents"] for _ in range(2)]
            assert [e["type"] for e in seen] == ["card.updated", "card.updated"]
            assert [e["actor"]["displayName"] for e in seen] == ["Ada", "Bob"]
            assert seen[0]["seq"] + 1 == seen[1]["seq"]


def test_every_make_target_listed_does_something() -> None:
    make = shutil.which("make")
    if make is None:
        unavailable("make is not installed")
    assert make is not None
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M)
    assert phony is not None
    targets = phony.group(1).split()
    assert {"serve", "test"} <= set(targets)  # the README's two commands
    for target in targets:
        # -n prints what the target would run without running it; -B as if out of date.
        dry = subprocess.run(
            [make, "-n", "-B", target],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert dry.returncode == 0, f"make {target}: {dry.stderr.strip()}"
        assert dry.stdout.strip(), f"make {target} does nothing"
        assert "Nothing to be done" not in dry.stdout, f"make {target} has no rule"
