"""`concord create-user` and `concord seed-demo`, run as an operator would, then checked
through the GraphQL API: the accounts sign in, the demo workspace is there with its roles,
and every change was recorded as an event like any mutation's."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from server.admin import BOARDS, PEOPLE, WORKSPACE, DemoExists, seed_demo
from server.cli import main
from server.settings import Settings
from tests.api import Api, empty_tables, running_app, settings_for

CONCORD = Path(sys.executable).with_name("concord")

LOGIN = """mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) {
  __typename ... on AuthPayload { accessToken user { displayName } } } }"""
WORKSPACES = """{ workspaces(first: 2) { nodes { id name members { role user { email } }
  boards(first: 5) { nodes { name cards(first: 10) { nodes { id version title status
  assignee { email } comments(first: 5) { nodes { body author { email } } } } } } } } } }"""


def concord(
    *args: str, data_dir: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    # The embedded database in data_dir, whatever the machine's environment says.
    env = {**os.environ, "CONCORD_DATA_DIR": str(data_dir), "DATABASE_URL": "", "REDIS_URL": ""}
    return subprocess.run(
        [str(CONCORD), *args],
        cwd=data_dir,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def embedded(data_dir: Path) -> Settings:
    return Settings(CONCORD_DATA_DIR=data_dir)  # the same database and secret as the CLI


async def sign_in(api: Api, email: str, password: str) -> str | None:
    data = await api.ok(LOGIN, {"e": email, "p": password})
    if data["login"]["__typename"] != "AuthPayload":
        return None
    token: str = data["login"]["accessToken"]
    return token


def test_both_commands_explain_themselves(tmp_path: Path) -> None:
    create = concord("create-user", "--help", data_dir=tmp_path)
    assert create.returncode == 0
    for option in ("--email", "--display-name", "--password-stdin"):
        assert option in create.stdout
    seed = concord("seed-demo", "--help", data_dir=tmp_path)
    assert seed.returncode == 0
    assert "--password" in seed.stdout
    assert "demo" in seed.stdout
    listed = concord("--help", data_dir=tmp_path)
    assert "create-user" in listed.stdout
    assert "seed-demo" in listed.stdout


async def test_create_user_makes_an_account_that_signs_in(tmp_path: Path) -> None:
    result = concord(
        "create-user", "--email", "Lin@Example.com", "--display-name", "Lin",
        "--password-stdin", data_dir=tmp_path, stdin="a long enough password\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "<lin@example.com>" in result.stdout
    async with running_app(embedded(tmp_path)) as api:
        assert await sign_in(api, "lin@example.com", "a long enough password")
        assert await sign_in(api, "lin@example.com", "a long enough password!") is None


def in_process(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    data_dir: Path,
    *args: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    """`concord ARGS` through server.cli.main in this process (no interpreter start-up)."""
    monkeypatch.setenv("CONCORD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def signs_in(data_dir: Path, email: str, password: str) -> bool:
    async def attempt() -> bool:
        async with running_app(embedded(data_dir)) as api:
            return await sign_in(api, email, password) is not None

    return asyncio.run(attempt())


def test_create_user_refuses_bad_input_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def create(email: str, stdin: str | None, *extra: str) -> tuple[int, str, str]:
        flags = ["--password-stdin"] if stdin is not None else []
        return in_process(
            monkeypatch, capsys, tmp_path, "create-user", "--email", email,
            "--display-name", "Kim", *flags, *extra, stdin=stdin or "",
        )  # fmt: skip

    code, _, err = create("kim@example.com", "short\n")
    assert code == 1
    assert "password: Passwords need at least 10 characters." in err
    code, _, err = create("kim@example.com", None)  # stdin is no terminal, and no flag
    assert code == 1
    assert "--password-stdin" in err
    code, _, err = create("kim at example", "a long enough password\n")
    assert code == 1
    assert "email: Enter a valid email address." in err
    assert not signs_in(tmp_path, "kim@example.com", "short")
    code, out, _ = create("kim@example.com", "the first password\n")
    assert code == 0
    assert "<kim@example.com>" in out
    code, _, err = create("KIM@example.com", "the second password\n")
    assert code == 1
    assert "already registered" in err
    assert signs_in(tmp_path, "kim@example.com", "the first password")
    assert not signs_in(tmp_path, "kim@example.com", "the second password")


def test_missing_arguments_are_usage_errors(tmp_path: Path) -> None:
    result = concord("create-user", "--email", "a@b.io", data_dir=tmp_path)
    assert result.returncode == 2
    assert "--display-name" in result.stderr


async def check_demo(api: Api, password: str) -> None:
    """What a person signing in to the seeded demo finds."""
    tokens = {p.email: await sign_in(api, p.email, password) for p in PEOPLE}
    assert all(tokens.values()), tokens
    viewer = next(p for p in PEOPLE if p.role == "VIEWER")
    data = await api.ok(WORKSPACES, token=tokens[viewer.email])
    (workspace,) = data["workspaces"]["nodes"]
    assert workspace["name"] == WORKSPACE
    roles = {m["user"]["email"]: m["role"] for m in workspace["members"]}
    assert roles == {p.email: p.role for p in PEOPLE}
    boards = {b["name"]: b["cards"]["nodes"] for b in workspace["boards"]["nodes"]}
    assert {name: [c["title"] for c in cards] for name, cards in boards.items()} == {
        name: [c.title for c in cards] for name, cards in BOARDS.items()
    }
    first = boards["Launch plan"][0]
    assert first["status"] == "DOING"
    assert first["assignee"] == {"email": "grace@demo.example.com"}
    assert [c["author"]["email"] for c in first["comments"]["nodes"]] == [
        "grace@demo.example.com",
        "ada@demo.example.com",
    ]
    # Recorded like any mutation: one event per change, seq 1, 2, 3, … without gaps.
    events = await api.events(api_person(tokens[viewer.email]), workspace["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = Counter(e["type"] for e in events)
    assert kinds["board.created"] == len(BOARDS)
    assert kinds["card.created"] == sum(len(c) for c in BOARDS.values())
    assert kinds["comment.added"] == sum(len(card.comments) for c in BOARDS.values() for card in c)
    assert kinds["member.added"] >= len(PEOPLE) - 1
    assert events[0]["type"] == "workspace.created"
    # The roles are real: the viewer cannot edit, an editor can.
    edit = """mutation($i: UpdateCardInput!) { updateCard(input: $i) { __typename } }"""
    change = {"i": {"id": first["id"], "expectedVersion": first["version"], "title": "New"}}
    refused = await api.ok(edit, change, token=tokens[viewer.email])
    assert refused["updateCard"]["__typename"] == "Forbidden"
    done = await api.ok(edit, change, token=tokens["alan@demo.example.com"])
    assert done["updateCard"]["__typename"] == "CardPayload"


def api_person(token: str | None) -> Any:
    from tests.api import Person

    assert token is not None
    return Person("", "", token, "")


async def test_seed_demo_prints_how_to_sign_in_and_the_demo_is_there(tmp_path: Path) -> None:
    result = concord("seed-demo", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    match = re.search(r"each with the password (\S+)", result.stdout)
    assert match is not None, result.stdout
    password = match.group(1)
    for person in PEOPLE:
        assert re.search(
            rf"{re.escape(person.email)}\s+{person.display_name}\s+{person.role}", result.stdout
        )
    assert f'password: "{password}"' in result.stdout  # the login mutation to paste
    async with running_app(embedded(tmp_path)) as api:
        await check_demo(api, password)


def test_seed_demo_refuses_a_weak_password_and_a_second_run_changing_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = in_process(monkeypatch, capsys, tmp_path, "seed-demo", "--password", "short")
    assert code == 1
    assert "password: Passwords need at least 10 characters." in err
    assert out == ""
    assert not signs_in(tmp_path, "ada@demo.example.com", "short")
    code, out, _ = in_process(monkeypatch, capsys, tmp_path, "seed-demo", "--password", "demo one!")
    assert code == 1  # nine characters
    code, out, _ = in_process(
        monkeypatch, capsys, tmp_path, "seed-demo", "--password", "demo password one"
    )
    assert code == 0
    assert "demo password one" in out
    code, out, err = in_process(
        monkeypatch, capsys, tmp_path, "seed-demo", "--password", "demo password two"
    )
    assert code == 1
    assert "already seeded" in err
    assert out == ""

    async def after() -> None:
        async with running_app(embedded(tmp_path)) as api:
            token = await sign_in(api, "ada@demo.example.com", "demo password one")
            assert token is not None
            assert await sign_in(api, "ada@demo.example.com", "demo password two") is None
            data = await api.ok("{ workspaces { nodes { id } } }", token=token)
            assert len(data["workspaces"]["nodes"]) == 1

    asyncio.run(after())


async def test_seed_demo_on_every_database(database_url: str, tmp_path: Path) -> None:
    await empty_tables(database_url)
    settings = settings_for(database_url, tmp_path)
    demo = await seed_demo(settings, "demo on a server")
    assert demo.cards == sum(len(c) for c in BOARDS.values())
    with pytest.raises(DemoExists):
        await seed_demo(settings, "demo on a server")
    async with running_app(settings) as api:
        await check_demo(api, "demo on a server")
