"""The live demo board at /demo: served in development only, from Concord alone, and it works.

The browser test drives Debian's Chromium through Playwright (`executable_path`, never a
downloaded browser) against a real `concord serve` with the demo data: two people in two
browser contexts see each other's presence and edits live over graphql-transport-ws, and a
stale edit shows the conflict with merge (other fields) or reload (the same field). Every
request to a host other than this machine is blocked and recorded. Screenshots go to
test-artifacts/ (ignored by git).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from server.admin import seed_demo
from server.app import create_app
from server.demo import CONTENT_SECURITY_POLICY, demo_enabled
from server.settings import Settings
from tests.browser import ARTIFACTS, ConcordServer, chromium, concord_server, local_page

PASSWORD = "demo password for the browser"
SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


def client_for(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://concord.test"
    )


async def test_the_page_and_its_assets_come_from_concord_alone(tmp_path: Path) -> None:
    async with client_for(Settings(CONCORD_DATA_DIR=tmp_path)) as client:
        page = await client.get("/demo")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        refs = _Refs()
        refs.feed(page.text)
        assets = [u for u in refs.urls if not u.startswith("data:")]
        assert len(assets) == 3  # stylesheet, graphql-ws, demo.js
        for url in assets:
            assert urlsplit(url).netloc == "", url  # this origin only
            response = await client.get(url)
            assert response.status_code == 200, url
        assert not re.search(r"https?://", page.text)


async def test_the_demo_is_off_next_to_a_server_database(tmp_path: Path) -> None:
    production = Settings(
        CONCORD_DATA_DIR=tmp_path,
        database_url="postgresql+asyncpg://concord@127.0.0.1:1/concord",
        jwt_secret=SECRET,
    )
    assert not demo_enabled(production)
    async with client_for(production) as client:
        assert (await client.get("/demo")).status_code == 404
        assert (await client.get("/demo-static/demo.js")).status_code == 404
    debugging = production.model_copy(update={"debug": True})
    assert demo_enabled(debugging)


# ---- the browser test ------------------------------------------------------------------------


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[ConcordServer]:
    """`concord serve` on a free port, on an embedded database holding the demo data."""
    asyncio.run(seed_demo(Settings(CONCORD_DATA_DIR=tmp_path), PASSWORD))
    with concord_server(tmp_path) as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


def open_as(browser: Any, url: str, email: str, elsewhere: list[str]) -> Any:
    """A new browser context (its own session storage) signed in to /demo as `email`."""
    from playwright.sync_api import expect

    errors: list[str] = []
    page = local_page(browser, elsewhere, errors)
    page.goto(f"{url}/demo")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.locator("#sign-in-form button[type=submit]").click()
    expect(page.get_by_test_id("live")).to_have_text("live", timeout=20_000)
    assert errors == []
    return page


def test_two_windows_see_each_other_live_and_a_stale_edit_is_a_conflict(
    demo_server: ConcordServer, browser: Any
) -> None:
    from playwright.sync_api import expect

    elsewhere: list[str] = []
    ada = open_as(browser, demo_server.url, "ada@demo.example.com", elsewhere)
    grace = open_as(browser, demo_server.url, "grace@demo.example.com", elsewhere)

    # Presence: each sees the other looking at the same board.
    expect(ada.get_by_test_id("presence")).to_contain_text("Grace Hopper", timeout=20_000)
    expect(grace.get_by_test_id("presence")).to_contain_text("Ada Lovelace")
    expect(grace.get_by_test_id("presence")).to_contain_text("Grace Hopper (you)")

    # Both open the same card; Ada saves a new title and Grace's board shows it live.
    for page in (ada, grace):
        page.locator("li.card", has_text="Rehearse the demo").click()
        expect(page.get_by_test_id("editor")).to_be_visible()
    ada.get_by_test_id("edit-title").fill("Rehearse the demo twice")
    ada.get_by_test_id("save").click()
    expect(ada.get_by_test_id("editor-message")).to_contain_text("Saved")
    expect(grace.get_by_test_id("board")).to_contain_text("Rehearse the demo twice", timeout=20_000)
    expect(grace.get_by_test_id("events")).to_contain_text("card.updated by Ada Lovelace: title")

    # Grace's editor still holds the old version: her description edit is a conflict on
    # other fields, so she can merge it, and Ada sees the merged card live.
    grace.get_by_test_id("edit-description").fill("In two windows, side by side.")
    grace.get_by_test_id("save").click()
    expect(grace.get_by_test_id("conflict")).to_be_visible(timeout=20_000)
    expect(grace.get_by_test_id("conflict-text")).to_contain_text("(title)")
    expect(grace.get_by_test_id("merge")).to_be_enabled()
    grace.screenshot(path=str(ARTIFACTS / "demo-conflict-merge.png"), full_page=True)
    grace.get_by_test_id("merge").click()
    expect(grace.get_by_test_id("editor-message")).to_contain_text("Saved")
    expect(ada.get_by_test_id("board")).to_contain_text(
        "In two windows, side by side.", timeout=20_000
    )

    # Ada's editor is now stale; changing the title Grace did not touch is fine, but Grace
    # changes the title too, first: the same field, so merging is refused and Ada reloads.
    grace.get_by_test_id("edit-title").fill("Rehearse the demo with Grace")
    grace.get_by_test_id("save").click()
    expect(grace.get_by_test_id("editor-message")).to_contain_text("Saved")
    ada.get_by_test_id("edit-title").fill("Rehearse the demo with Ada")
    ada.get_by_test_id("save").click()
    expect(ada.get_by_test_id("conflict")).to_be_visible(timeout=20_000)
    expect(ada.get_by_test_id("conflict-text")).to_contain_text("You both changed title")
    expect(ada.get_by_test_id("merge")).to_be_disabled()
    ada.screenshot(path=str(ARTIFACTS / "demo-conflict-reload.png"), full_page=True)
    ada.get_by_test_id("reload").click()
    expect(ada.get_by_test_id("edit-title")).to_have_value("Rehearse the demo with Grace")
    expect(ada.get_by_test_id("edit-description")).to_have_value("In two windows, side by side.")
    ada.screenshot(path=str(ARTIFACTS / "demo-ada.png"), full_page=True)
    assert elsewhere == []  # the page asked no other host for anything


def event_seqs(page: Any) -> list[int]:
    values: list[int] = page.evaluate(
        "Array.from(document.querySelectorAll('#events li')).map(li => li.value)"
    )
    return values


def test_after_a_server_restart_the_board_resumes_without_repeating_an_event(
    demo_server: ConcordServer, browser: Any
) -> None:
    from playwright.sync_api import expect

    elsewhere: list[str] = []
    ada = open_as(browser, demo_server.url, "ada@demo.example.com", elsewhere)
    grace = open_as(browser, demo_server.url, "grace@demo.example.com", elsewhere)

    def describe(card: str, text: str) -> None:
        ada.locator("li.card", has_text=card).first.click()
        ada.get_by_test_id("edit-description").fill(text)
        ada.get_by_test_id("save").click()
        expect(ada.get_by_test_id("editor-message")).to_contain_text("Saved")
        expect(grace.get_by_test_id("board")).to_contain_text(text, timeout=20_000)

    # An event on the first board, so that the subscription for the second one starts from
    # a cursor (it is what a reconnecting client would replay from).
    describe("Rehearse the demo", "Seen on the first board")
    for page in (grace, ada):
        page.get_by_test_id("board-picker").select_option(label="Demo: product launch / Bugs")
        expect(page.get_by_test_id("board")).to_contain_text("Typo on the sign-in page")
    describe("Typo on the sign-in page", "Seen before the restart")
    before = event_seqs(grace)
    assert before == [before[1] + 1, before[1]], before

    demo_server.stop()
    expect(grace.get_by_test_id("live")).to_have_text("reconnecting…", timeout=20_000)
    demo_server.start()
    for page in (ada, grace):
        expect(page.get_by_test_id("live")).to_have_text("live", timeout=30_000)
    describe("Typo on the sign-in page", "Seen after the restart")
    # Each event once, in order: the resubscription resumed after the last cursor received.
    expect(grace.get_by_test_id("events").locator("li")).to_have_count(3)
    assert event_seqs(grace) == [before[0] + 1, *before]
    grace.screenshot(path=str(ARTIFACTS / "demo-after-restart.png"), full_page=True)
    assert elsewhere == []
