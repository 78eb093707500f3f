"""`concord archive-events` and `concord restore-events`, run as an operator would.

Events are archived to a directory and to a real S3-compatible HTTP server (moto's
standalone server, started on a free port), verified by reading them back, pruned only
with `--prune` (an older cursor then answers CURSOR_EXPIRED), and restored into a fresh
database, where the `events` query answers the same history as before.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from models.database import make_engine
from models.tables import Event
from server.cli import main
from tests.api import Api, Person, migrate, running_app, settings_for
from tests.services import free_port, scratch_postgres_database, unavailable

CONCORD = Path(sys.executable).with_name("concord")
BUCKET = "concord-event-archive"

HISTORY = """query($w: ID!, $a: String) { events(workspaceId: $w, after: $a, first: 100) {
  edges { cursor node { seq cursor type workspaceId entityType entityId version
    actor { id displayName } changes { field oldValue newValue } occurredAt } }
  pageInfo { hasNextPage } } }"""
LOGIN = """mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) {
  __typename ... on AuthPayload { accessToken } } }"""
UPDATE_CARD = """mutation($i: UpdateCardInput!) { updateCard(input: $i) {
  __typename ... on CardPayload { card { version } } } }"""


# ---- the S3-compatible server ------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server in a subprocess on a free port, with an empty bucket."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    unavailable(f"moto's S3 server did not start on port {port}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "concord-test",
        "AWS_SECRET_ACCESS_KEY": "concord-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def s3_client(endpoint: str) -> Any:
    import boto3

    env = aws_env(endpoint)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


class Target:
    """Where an archive goes (a directory or an S3 prefix), and how a test looks inside."""

    def __init__(self, kind: str, tmp_path: Path, endpoint: str | None) -> None:
        self.kind = kind
        self.endpoint = endpoint
        if kind == "dir":
            self.root = tmp_path / "archive"
            self.url = str(self.root)
        else:
            assert endpoint is not None
            self.prefix = f"run-{uuid.uuid4().hex[:8]}/events"
            self.url = f"s3://{BUCKET}/{self.prefix}"
            self.client = s3_client(endpoint)

    def env(self) -> dict[str, str]:
        return aws_env(self.endpoint) if self.endpoint else {}

    def keys(self) -> list[str]:
        if self.kind == "dir":
            return sorted(
                str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()
            )
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix + "/")
        return sorted(o["Key"][len(self.prefix) + 1 :] for o in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        if self.kind == "dir":
            return (self.root / key).read_bytes()
        data: bytes = self.client.get_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}")[
            "Body"
        ].read()
        return data

    def write(self, key: str, data: bytes) -> None:
        if self.kind == "dir":
            (self.root / key).write_bytes(data)
        else:
            self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}", Body=data)

    def versions(self, key: str) -> int:
        """How many times the object was stored (S3 keeps each version; a file is one)."""
        if self.kind == "dir":
            return 1
        listed = self.client.list_object_versions(Bucket=BUCKET, Prefix=f"{self.prefix}/{key}")
        return len([v for v in listed.get("Versions", []) if v["Key"] == f"{self.prefix}/{key}"])


@pytest.fixture(params=["dir", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "dir":
        return Target("dir", tmp_path, None)
    endpoint: str = request.getfixturevalue("s3_endpoint")
    client = s3_client(endpoint)
    buckets = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in buckets:
        client.create_bucket(Bucket=BUCKET)
        # As the CloudFormation template has it: every overwrite keeps the old version.
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return Target("s3", tmp_path, endpoint)


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of the same kind as `database_url`, to restore into."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}"
    elif database_url.startswith("postgresql"):
        with scratch_postgres_database() as url:
            yield url
    else:
        pytest.skip("restoring is tested on SQLite and PostgreSQL")


# ---- running the command --------------------------------------------------------------------


async def concord(
    *args: str, database_url: str, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CONCORD_DATA_DIR": str(cwd),
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "JWT_SECRET": "test-secret-that-is-long-enough-for-hs256-0123456789",
        **(extra_env or {}),
    }
    return await asyncio.to_thread(
        subprocess.run,
        [str(CONCORD), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def history(api: Api, person: Person, workspace_id: str, after: str | None = None) -> Any:
    return await api(HISTORY, {"w": workspace_id, "a": after}, person.token)


async def edges(api: Api, person: Person, workspace_id: str) -> list[dict[str, Any]]:
    answer = await history(api, person, workspace_id)
    assert "errors" not in answer, answer
    assert answer["data"]["events"]["pageInfo"]["hasNextPage"] is False
    found: list[dict[str, Any]] = answer["data"]["events"]["edges"]
    return found


async def backdate(url: str, workspace_id: str, seqs: range, day: date) -> None:
    """Make events look as old as `day` (the API only ever writes the present)."""
    engine = make_engine(url, pool=False)
    try:
        async with engine.begin() as conn:
            for n, seq in enumerate(seqs):
                at = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=n)
                await conn.execute(
                    update(Event)
                    .where(Event.workspace_id == uuid.UUID(workspace_id), Event.seq == seq)
                    .values(occurred_at=at)
                )
    finally:
        await engine.dispose()


def manifest(target: Target) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(target.read("manifest.json"))
    return loaded


# ---- the round trip ---------------------------------------------------------------------------


async def test_archive_verify_prune_and_restore_into_a_fresh_database(
    api: Api, database_url: str, fresh_url: str, target: Target, tmp_path: Path
) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    launch = await api.workspace(alice, "Launch")
    await api.add_member(alice, launch["id"], bob, "EDITOR")
    board = await api.board(alice, launch["id"], "Plan")
    card = await api.card(alice, board["id"], "Write docs", description="first draft")
    renamed = await api.ok(
        UPDATE_CARD,
        {"i": {"id": card["id"], "expectedVersion": card["version"], "title": "Write the docs"}},
        bob.token,
    )
    for n in range(3):
        await api.card(bob, board["id"], f"task {n}", status="DOING")
    await api.ok(
        UPDATE_CARD,
        {
            "i": {
                "id": card["id"],
                "expectedVersion": renamed["updateCard"]["card"]["version"],
                "description": 'ünïcode ✓ and "quotes"',
            }
        },
        alice.token,
    )
    side = await api.workspace(bob, "Side project")
    await api.board(bob, side["id"], "Ideas")

    # seq 1-3 two days ago, 4-6 yesterday, the rest today; the side project wholly yesterday.
    # (Before the first read: a cached answer would still show the times the API wrote.)
    today = datetime.now(UTC).date()
    await backdate(database_url, launch["id"], range(1, 4), today - timedelta(days=2))
    await backdate(database_url, launch["id"], range(4, 7), today - timedelta(days=1))
    await backdate(database_url, side["id"], range(1, 100), today - timedelta(days=1))
    launch_all = await edges(api, alice, launch["id"])
    side_all = await edges(api, bob, side["id"])
    assert [e["node"]["seq"] for e in launch_all] == list(range(1, len(launch_all) + 1))
    assert len(launch_all) > 7
    side_seqs = [e["node"]["seq"] for e in side_all]
    archived_launch, kept_launch = launch_all[:6], launch_all[6:]

    def run(*args: str, url: str = database_url) -> Any:
        return concord(*args, database_url=url, cwd=tmp_path, extra_env=target.env())

    # 1. Archive without --prune: objects and manifest written and verified, nothing deleted.
    archive = ("archive-events", "--before", today.isoformat(), "--to", target.url)
    done = await run(*archive)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    w_launch, w_side = f"workspace={launch['id']}", f"workspace={side['id']}"
    days = [(today - timedelta(days=d)).isoformat() for d in (2, 1)]
    objects = {
        f"{w_launch}/date={days[0]}/events.jsonl.gz": [1, 2, 3],
        f"{w_launch}/date={days[1]}/events.jsonl.gz": [4, 5, 6],
        f"{w_side}/date={days[1]}/events.jsonl.gz": side_seqs,
    }
    assert set(target.keys()) == {
        "manifest.json",
        f"{w_launch}/workspace.json.gz",
        f"{w_side}/workspace.json.gz",
        *objects,
    }
    listed = {o["key"]: o for o in manifest(target)["objects"]}
    assert set(listed) == set(objects)
    for key, seqs in objects.items():
        data = target.read(key)
        assert listed[key]["sha256"] == hashlib.sha256(data).hexdigest()
        assert listed[key]["count"] == len(seqs)
        lines = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
        assert [line["seq"] for line in lines] == seqs
    assert await edges(api, alice, launch["id"]) == launch_all  # nothing pruned

    # 2. Again: the identical objects are verified, not stored a second time.
    before_bytes = {key: target.read(key) for key in target.keys()}
    again = await run(*archive)
    assert again.returncode == 0, again.stderr
    assert {key: target.read(key) for key in target.keys()} == before_bytes
    assert all(target.versions(key) == 1 for key in before_bytes)

    # 3. With --prune: what was verified leaves the database; older cursors expire.
    pruned = await run(*archive, "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert f"pruned {6 + len(side_seqs)} events" in pruned.stdout
    assert await edges(api, alice, launch["id"]) == kept_launch
    assert await edges(api, bob, side["id"]) == []
    for who, workspace_id, cursor in (
        (alice, launch["id"], launch_all[0]["cursor"]),
        (alice, launch["id"], launch_all[4]["cursor"]),
        (bob, side["id"], side_all[0]["cursor"]),
    ):
        answer = await history(api, who, workspace_id, cursor)
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["CURSOR_EXPIRED"], answer
    # Right at the edge of what was pruned, reading on is exact.
    tail = await history(api, alice, launch["id"], launch_all[5]["cursor"])
    assert tail["data"]["events"]["edges"] == kept_launch
    assert {key: target.read(key) for key in target.keys()} == before_bytes

    # 4. Restore into a fresh database: the same history, read by the same people. A server
    # database is migrated explicitly first (the embedded one is migrated by the command).
    if not fresh_url.startswith("sqlite"):
        unmigrated = await run("restore-events", "--from", target.url, url=fresh_url)
        assert unmigrated.returncode == 1
        assert "run `concord migrate`" in unmigrated.stderr
    await migrate(fresh_url)
    restored = await run("restore-events", "--from", target.url, url=fresh_url)
    assert restored.returncode == 0, restored.stderr
    assert f"restored {6 + len(side_seqs)} events" in restored.stdout
    async with running_app(settings_for(fresh_url, tmp_path / "fresh")) as fresh:
        for person, workspace_id, expected in (
            (alice, launch["id"], archived_launch),
            (bob, launch["id"], archived_launch),
            (bob, side["id"], side_all),
        ):
            login = await fresh.ok(LOGIN, {"e": person.email, "p": "correct horse battery"})
            assert login["login"]["__typename"] == "AuthPayload"
            reader = Person(person.id, person.email, login["login"]["accessToken"], "")
            assert await edges(fresh, reader, workspace_id) == expected
            # Cursors from the original database resume in the restored one.
            answer = await history(fresh, reader, workspace_id, expected[0]["cursor"])
            assert answer["data"]["events"]["edges"] == expected[1:]

    # 5. A second restore into what is now not empty is refused, and changes nothing.
    twice = await run("restore-events", "--from", target.url, url=fresh_url)
    assert twice.returncode == 1
    assert "not empty" in twice.stderr
    async with running_app(settings_for(fresh_url, tmp_path / "fresh")) as fresh:
        login = await fresh.ok(LOGIN, {"e": alice.email, "p": "correct horse battery"})
        reader = Person(alice.id, alice.email, login["login"]["accessToken"], "")
        assert await edges(fresh, reader, launch["id"]) == archived_launch


async def test_a_later_event_dated_earlier_waits_so_the_log_keeps_no_hole(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    """Clocks of two API hosts may disagree: seq 4 can carry an older time than seq 3.

    Only a gapless prefix of each log is archived and pruned, so `events` never skips one.
    """
    alice = await api.register("alice")
    space = await api.workspace(alice)
    board = await api.board(alice, space["id"])
    await api.card(alice, board["id"], "a")
    await api.card(alice, board["id"], "b")
    before = await edges(api, alice, space["id"])
    assert len(before) == 5
    today = datetime.now(UTC).date()
    await backdate(database_url, space["id"], range(1, 3), today - timedelta(days=3))
    await backdate(database_url, space["id"], range(4, 5), today - timedelta(days=2))
    dest = tmp_path / "archive"
    done = await concord(
        "archive-events", "--before", today.isoformat(), "--to", str(dest), "--prune",
        database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pruned 2 events" in done.stdout
    kept = await edges(api, alice, space["id"])
    assert [e["node"]["seq"] for e in kept] == [3, 4, 5]
    # Right after what was pruned, reading on is exact; before it, the cursor expired.
    answer = await history(api, alice, space["id"], before[1]["cursor"])
    assert answer["data"]["events"]["edges"] == kept
    answer = await history(api, alice, space["id"], before[0]["cursor"])
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["CURSOR_EXPIRED"]


# ---- bad input ----------------------------------------------------------------------------


def in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("CONCORD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("REDIS_URL", "")
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--before", "last week", "--to", "{dest}"], "--before"),
        (["--before", "2026-02-30", "--to", "{dest}"], "--before"),
        (["--before", "2999-01-01", "--to", "{dest}"], "future"),
        (["--before", "2026-01-01", "--to", "ftp://host/path"], "--to"),
        (["--before", "2026-01-01", "--to", "s3://"], "bucket"),
        (["--before", "2026-01-01", "--to", "s3://Not_A_Bucket/x"], "bucket"),
        (["--before", "2026-01-01", "--to", "{file}"], "not a directory"),
        (["--before", "2026-01-01"], "--to"),
    ],
)
def test_archive_refuses_bad_arguments_and_writes_nothing(
    args: list[str],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest, file = tmp_path / "archive", tmp_path / "a-file"
    file.write_text("not a directory")
    filled = [a.format(dest=dest, file=file) for a in args]
    code, out, err = in_process(monkeypatch, capsys, tmp_path, "archive-events", *filled)
    assert code == 2, (out, err)
    assert says in err
    assert not dest.exists()
    assert not (tmp_path / "concord.db").exists()  # not even the database was touched


def test_restore_refuses_a_missing_or_foreign_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = in_process(
        monkeypatch, capsys, tmp_path, "restore-events", "--from", str(tmp_path / "nope")
    )
    assert code == 2
    assert "no such directory" in err
    code, _, err = in_process(
        monkeypatch, capsys, tmp_path, "restore-events", "--from", "ftp://x/y"
    )
    assert code == 2
    assert "--from" in err
    (tmp_path / "empty").mkdir()
    code, _, err = in_process(
        monkeypatch, capsys, tmp_path, "restore-events", "--from", str(tmp_path / "empty")
    )
    assert code == 1
    assert "manifest.json" in err


async def test_a_damaged_archive_is_neither_pruned_against_nor_restored(
    api: Api, database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    alice = await api.register("alice")
    space = await api.workspace(alice)
    await api.board(alice, space["id"])
    everything = await edges(api, alice, space["id"])
    today = datetime.now(UTC).date()
    await backdate(database_url, space["id"], range(1, 3), today - timedelta(days=1))
    everything = await edges(api, alice, space["id"])
    dest = tmp_path / "archive"
    archive = ("archive-events", "--before", today.isoformat(), "--to", str(dest))
    done = await concord(*archive, database_url=database_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    day = (today - timedelta(days=1)).isoformat()
    damaged = dest / f"workspace={space['id']}" / f"date={day}" / "events.jsonl.gz"
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-8] + b"\0" * 8)

    # Archiving over it: the object no longer reads back; nothing is pruned.
    again = await concord(*archive, "--prune", database_url=database_url, cwd=tmp_path)
    assert again.returncode == 1
    assert "events.jsonl.gz" in again.stderr
    assert await edges(api, alice, space["id"]) == everything

    # Restoring it: the checksum does not match; the fresh database stays empty.
    await migrate(fresh_url)
    restored = await concord(
        "restore-events", "--from", str(dest), database_url=fresh_url, cwd=tmp_path
    )
    assert restored.returncode == 1
    assert "sha256" in restored.stderr
    async with running_app(settings_for(fresh_url, tmp_path / "fresh")) as fresh:
        login = await fresh.ok(LOGIN, {"e": alice.email, "p": "correct horse battery"})
        assert login["login"]["__typename"] != "AuthPayload"


async def test_a_later_run_adds_the_rest_of_a_day_to_its_object(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    """`--before` may be a time: the day's object then grows on the next run, in place."""
    alice = await api.register("alice")
    space = await api.workspace(alice)
    await api.board(alice, space["id"], "one")
    first_cut = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await api.board(alice, space["id"], "two")
    everything = await edges(api, alice, space["id"])
    second_cut = datetime.now(UTC)
    dest = tmp_path / "archive"

    def run(cut: datetime, *extra: str) -> Any:
        return concord(
            "archive-events", "--before", cut.isoformat(), "--to", str(dest), *extra,
            database_url=database_url, cwd=tmp_path,
        )  # fmt: skip

    first = await run(first_cut)
    assert first.returncode == 0, first.stderr
    assert "1 updated" not in first.stdout
    key = f"workspace={space['id']}/date={first_cut.date()}/events.jsonl.gz"
    assert (dest / key).exists()
    (entry,) = json.loads((dest / "manifest.json").read_text())["objects"]
    assert entry["count"] == len(everything) - 1

    second = await run(second_cut, "--prune")
    assert second.returncode == 0, second.stderr
    assert "1 updated" in second.stdout
    (entry,) = json.loads((dest / "manifest.json").read_text())["objects"]
    assert entry["count"] == len(everything)
    assert entry["sha256"] == hashlib.sha256((dest / key).read_bytes()).hexdigest()
    lines = gzip.decompress((dest / key).read_bytes()).decode().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [e["node"]["seq"] for e in everything]
    assert f"pruned {len(everything)} events" in second.stdout
    assert await edges(api, alice, space["id"]) == []


def test_an_unreachable_database_is_a_clear_error_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "archive"
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/concord"
    monkeypatch.setenv("CONCORD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", nowhere)
    code = main(["archive-events", "--before", "2026-01-01", "--to", str(dest)])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("concord archive-events: cannot use the database: ")
    assert "Traceback" not in err
    assert not dest.exists()
    code = main(["restore-events", "--from", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 1
    assert "manifest.json" in err  # the archive is checked before the database is opened


def test_a_missing_bucket_is_a_clear_error(
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in aws_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    code, _, err = in_process(
        monkeypatch, capsys, tmp_path,
        "archive-events", "--before", "2026-01-01", "--to", "s3://no-such-bucket/events",
    )  # fmt: skip
    assert code == 1
    assert "there is no bucket 'no-such-bucket'" in err
    code, _, err = in_process(
        monkeypatch, capsys, tmp_path, "restore-events", "--from", "s3://no-such-bucket/events"
    )
    assert code == 1
    assert "there is no bucket 'no-such-bucket'" in err
