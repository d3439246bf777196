"""Browser tests: Playwright (sync API) driving Debian's Chromium against a real ``trainhub serve``.

One Chromium for the whole session, a fresh context (cookies, storage) per test. The sync API keeps
its asyncio loop "running" in the test thread while the browser is open, which would break any
later test that calls ``asyncio.run``: the browser tests are therefore moved to the end of the
session (``pytest_collection_modifyitems`` below).

Screenshots go to ``$TRAINHUB_SCREENSHOTS`` or ``<pytest basetemp>/screenshots``; the README's
three (``README_SHOTS``) are also written to ``docs/screenshots/`` when
``TRAINHUB_UPDATE_SCREENSHOTS=1`` (never in CI, so the tree stays clean).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests import helpers
from tests.conftest import TOKEN, Server, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a-good-password"
MEMBER = "browser-member"
ADMIN = "browser-admin"
README_SHOTS = {"runs", "run-page", "nodes", "datastores", "models", "datasets", "sweep"}
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# What Playwright waits for, at most, before a locator assertion fails (a run in a container
# takes a few seconds to start on this machine's engine).
EXPECT_TIMEOUT_MS = 60_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last (see the module's docstring), in their own order otherwise."""
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        rest = [item for item in items if not item.get_closest_marker("browser")]
        items[:] = rest + browser


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (./scripts/test does)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Web:
    """The browser tests' server and the API tokens of its users."""

    server: Server
    tokens: dict[str, str]

    def api(self, name: str = MEMBER) -> httpx.Client:
        return self.server.client(self.tokens[name])


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Web]:
    """The browser tests' own server, with a member and an admin who log in with a password
    (the first-start admin has a token, no password)."""
    srv = start_server(tmp_path_factory, "browser-data")
    admin = srv.client(TOKEN)
    tokens = {
        MEMBER: helpers.add_user(admin, MEMBER, PASSWORD),
        ADMIN: helpers.add_user(admin, ADMIN, PASSWORD, role="admin"),
    }
    yield Web(srv, tokens)
    srv.cleanup()


@dataclass
class Problems:
    """What went wrong inside the page: uncaught script errors, CSP refusals."""

    found: list[str] = field(default_factory=list)


@pytest.fixture
def context(chromium: Browser, web: Web) -> Iterator[BrowserContext]:
    ctx = chromium.new_context(
        base_url=web.server.url, accept_downloads=True, viewport={"width": 1400, "height": 900}
    )
    ctx.set_default_timeout(EXPECT_TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab that fails its test on an uncaught script error or a Content-Security-Policy refusal
    (the pages must work without inline script)."""
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    problems = Problems()
    tab = context.new_page()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            problems.found.append(f"console: {msg.text}")

    tab.on("pageerror", lambda exc: problems.found.append(f"script error: {exc}"))
    tab.on("console", on_console)
    yield tab
    assert not problems.found, "\n".join(problems.found)


def log_in(
    page: Page, name: str = MEMBER, password: str = PASSWORD, then: str = "/", base: str = ""
) -> None:
    """Through the real login form, as a person does (on the server at ``base``, else ``web``)."""
    page.goto(f"{base}/login?next={then}")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))


def mark_page(page: Page) -> None:
    """Leave a marker on ``window``: it survives htmx swaps and SSE, not a reload or navigation."""
    page.evaluate("window.__trainhubMarker = 'still-here'")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__trainhubMarker") == "still-here", "the page was reloaded"


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("TRAINHUB_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Screenshots:
    folder: Path

    def take(self, page: Page, name: str) -> Path:
        """``name``.png of the whole page; a README one also goes to docs/screenshots/ when
        ``TRAINHUB_UPDATE_SCREENSHOTS=1``."""
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if name in README_SHOTS and os.environ.get("TRAINHUB_UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
        return path


@pytest.fixture
def screenshots(screenshot_dir: Path) -> Screenshots:
    return Screenshots(screenshot_dir)
