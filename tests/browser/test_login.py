"""Logging in through the real form, and what a member may not open."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, MEMBER, Screenshots, log_in

pytestmark = pytest.mark.browser


def test_logging_in_through_the_form_shows_who_is_logged_in(page: Page) -> None:
    log_in(page, MEMBER)
    expect(page).to_have_url(re.compile(r"/runs"))
    expect(page.locator("#me")).to_have_text(MEMBER)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["trainhub_session"]["httpOnly"]


def test_a_wrong_password_is_refused_with_a_sentence(page: Page) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(MEMBER)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password")
    expect(page.locator("#me")).to_have_count(0)


def test_an_anonymous_visitor_logs_in_and_lands_where_they_were_going(page: Page) -> None:
    page.goto("/nodes")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fnodes|/login\?next=/nodes"))
    page.get_by_label("User name").fill(MEMBER)
    page.get_by_label("Password").fill("a-good-password")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/nodes$"))


def test_a_member_is_refused_an_admin_page(page: Page, screenshots: Screenshots) -> None:
    log_in(page, MEMBER)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    response = page.goto("/users")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("403 · Not allowed")
    expect(page.locator("#error-message")).to_contain_text("admin")
    screenshots.take(page, "forbidden")


def test_an_admin_opens_the_users_page(page: Page, screenshots: Screenshots) -> None:
    log_in(page, ADMIN)
    page.get_by_role("navigation", name="main").get_by_role("link", name="Users").click()
    expect(page).to_have_url(re.compile(r"/users$"))
    # The users table's row (the disk use tables below may name the member too).
    users_row = page.locator(f"#user-{MEMBER}")
    expect(users_row.get_by_role("cell", name=MEMBER, exact=True)).to_be_visible()
    screenshots.take(page, "users")
