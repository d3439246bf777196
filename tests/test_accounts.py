"""Accounts on a real server: logging in, sessions, CSRF, throttled passwords, API tokens, roles
(member vs admin vs anonymous, API and pages), the account and users pages, escaping and the CSP."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.conftest import Server, ServerFactory
from tests.helpers import add_user, csrf_of, get_run, login, submit, wait_for_status, wait_until

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def htmx(current: str = "/") -> dict[str, str]:
    return {"HX-Request": "true", "HX-Current-URL": f"http://127.0.0.1{current}"}


def new_token_on(page: httpx.Response) -> str:
    found = re.search(r'<p class="secret" id="new-token">([^<]+)</p>', page.text)
    assert found, page.text
    return found.group(1)


def error_beside_form(page: httpx.Response, form: str) -> tuple[str, str]:
    """(field, message) of the error shown beside ``form``."""
    found = re.search(
        rf'<p class="error" role="alert" id="{form}-error" data-field="([^"]+)">(.*?)</p>',
        page.text,
        re.S,
    )
    assert found, page.text
    return found.group(1), found.group(2)


def is_login_redirect(response: httpx.Response, where: str) -> bool:
    return response.status_code == 303 and response.headers["location"] == f"/login?next={where}"


# Who is asking -----------------------------------------------------------------------------------
def test_the_first_start_admin_token_is_the_user_admin_and_its_runs_say_so(
    client: httpx.Client,
) -> None:
    assert client.get("/api/v1/me").json() == {"name": "admin", "role": "admin"}
    run = submit(client, "print('hello from admin')\n", experiment="accounts")
    assert run["submittedBy"] == "admin"
    assert wait_for_status(client, run["runId"])["submittedBy"] == "admin"


def test_logging_in_shows_your_account_and_logging_out_ends_the_session(
    server: Server, client: httpx.Client
) -> None:
    name = unique("ann")
    add_user(client, name)
    page = login(server.url, name)
    account = page.get("/account")
    assert account.status_code == 200
    assert f'<dd id="account-name">{name}</dd>' in account.text
    assert '<dd id="account-role">member' in account.text
    out = page.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert is_login_redirect(page.get("/account"), "/account")


def test_wrong_passwords_are_401_and_too_many_lock_out_even_the_right_one(
    make_server: ServerFactory,
) -> None:
    srv = make_server(login_attempts_per_minute="3")
    add_user(srv.client(), "carol")
    browser = httpx.Client(base_url=srv.url, timeout=30)
    csrf = csrf_of(browser.get("/login").text)

    def attempt(password: str) -> httpx.Response:
        return browser.post(
            "/login",
            data={"name": "carol", "password": password, "_csrf_token": csrf, "next": "/account"},
        )

    for _ in range(3):
        wrong = attempt("not-carols-password")
        assert wrong.status_code == 401
        assert "Wrong user name or password" in wrong.text
    locked = attempt("a-good-password")
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert "Too many wrong passwords: try again in" in locked.text
    assert is_login_redirect(browser.get("/account"), "/account")
    browser.close()


def test_a_form_post_without_the_csrf_token_is_403_and_changes_nothing(
    server: Server, client: httpx.Client
) -> None:
    name = unique("dave")
    token = add_user(client, name, role="admin")
    page = login(server.url, name)
    del page.headers["x-csrftoken"]
    api = server.client(token)
    tokens_before = api.get("/api/v1/tokens").json()
    made = page.post("/account/tokens", data={"name": "sneaky"})
    assert made.status_code == 403
    added = page.post(
        "/users", data={"name": f"{name}-x", "role": "admin", "password": "a-good-password"}
    )
    assert added.status_code == 403
    disabled = page.post(f"/users/{name}/disable")
    assert disabled.status_code == 403
    assert api.get("/api/v1/tokens").json() == tokens_before
    names = [u["name"] for u in client.get("/api/v1/users").json()["users"]]
    assert f"{name}-x" not in names
    assert api.get("/api/v1/me").status_code == 200  # not disabled


def test_an_expired_session_goes_to_login_and_back_to_the_page_it_was_on(
    make_server: ServerFactory,
) -> None:
    srv = make_server(session_hours="0.001")  # 3.6 s
    add_user(srv.client(), "erin")
    page = login(srv.url, "erin")
    assert page.get("/account?from=expiry").status_code == 200
    cookies = "; ".join(f"{k}={v}" for k, v in page.cookies.items())

    def server_says_expired() -> bool:
        # The cookie sent as it was (a browser may keep it): the server itself refuses it.
        raw = httpx.get(f"{srv.url}/account", headers={"Cookie": cookies})
        return raw.status_code == 303

    wait_until(server_says_expired, "the session expired", timeout=30)
    sent = page.get("/account?from=expiry")
    assert is_login_redirect(sent, "/account%3Ffrom%3Dexpiry")
    login_page = page.get(sent.headers["location"])
    assert '<input type="hidden" name="next" value="/account?from=expiry">' in login_page.text
    back = page.post(
        "/login",
        data={
            "name": "erin",
            "password": "a-good-password",
            "_csrf_token": csrf_of(login_page.text),
            "next": "/account?from=expiry",
        },
    )
    assert back.status_code == 303 and back.headers["location"] == "/account?from=expiry"
    assert page.get("/account?from=expiry").status_code == 200


def test_htmx_requests_without_a_session_are_told_where_to_log_in(server: Server) -> None:
    anon = httpx.Client(base_url=server.url, timeout=30)
    told = anon.get("/account", headers=htmx("/users?sort=name"))
    assert told.status_code == 401
    assert told.headers["hx-redirect"] == "/login?next=/users%3Fsort%3Dname"
    anon.close()


def test_a_disabled_users_token_and_session_stop_working_until_enabled(
    server: Server, client: httpx.Client
) -> None:
    name = unique("fay")
    api = server.client(add_user(client, name))
    page = login(server.url, name)
    assert api.get("/api/v1/me").status_code == 200
    assert page.get("/account").status_code == 200
    assert client.post(f"/api/v1/users/{name}/disable").json()["disabled"] is True
    refused = api.get("/api/v1/me")
    assert refused.status_code == 401 and refused.json()["error"] == "The API token is not valid"
    assert is_login_redirect(page.get("/account"), "/account")
    assert client.post(f"/api/v1/users/{name}/enable").json()["disabled"] is False
    assert api.get("/api/v1/me").json()["name"] == name


def test_tokens_are_shown_once_show_their_last_use_and_stop_working_when_revoked(
    server: Server, client: httpx.Client
) -> None:
    name = unique("gus")
    api = server.client(add_user(client, name))
    made = api.post("/api/v1/tokens", json={"name": "laptop"})
    assert made.status_code == 201
    value = made.json()["token"]
    assert made.json()["lastUsedTimeUtc"] is None
    listed = api.get("/api/v1/tokens")
    assert value not in listed.text and '"token"' not in listed.text
    laptop = next(t for t in listed.json()["tokens"] if t["name"] == "laptop")
    assert laptop["lastUsedTimeUtc"] is None
    used = server.client(value)
    assert used.get("/api/v1/me").json()["name"] == name
    laptop = next(t for t in api.get("/api/v1/tokens").json()["tokens"] if t["name"] == "laptop")
    assert laptop["lastUsedTimeUtc"] is not None
    assert api.delete(f"/api/v1/tokens/{laptop['id']}").status_code == 200
    assert used.get("/api/v1/me").status_code == 401
    assert "laptop" not in api.get("/api/v1/tokens").text
    other = server.client(add_user(client, unique("hal")))
    assert other.delete(f"/api/v1/tokens/{laptop['id']}").status_code == 404


# Roles -------------------------------------------------------------------------------------------
def test_a_member_changes_only_their_own_runs_and_an_admin_changes_any(
    server: Server, client: httpx.Client
) -> None:
    owner_name = unique("ivy")
    owner = server.client(add_user(client, owner_name))
    intruder = server.client(add_user(client, unique("jon")))
    boss = server.client(add_user(client, unique("kim"), role="admin"))
    run = submit(owner, SLEEPER, experiment="accounts")
    assert run["submittedBy"] == owner_name
    run_id = run["runId"]
    assert intruder.get(f"/api/v1/runs/{run_id}").status_code == 200  # members see every run
    tag = intruder.post(f"/api/v1/runs/{run_id}/tags", json={"tags": {"by": "intruder"}})
    assert tag.status_code == 403 and f"Only {owner_name} or an admin" in tag.json()["error"]
    cancel = intruder.post(f"/api/v1/runs/{run_id}/cancel")
    assert cancel.status_code == 403 and f"Only {owner_name} or an admin" in cancel.json()["error"]
    assert "by" not in (get_run(client, run_id)["tags"] or {})
    assert owner.post(f"/api/v1/runs/{run_id}/tags", json={"tags": {"by": "owner"}}).is_success
    assert boss.post(f"/api/v1/runs/{run_id}/tags", json={"tags": {"ok": "boss"}}).is_success
    assert get_run(client, run_id)["tags"] == {"by": "owner", "ok": "boss"}
    assert get_run(client, run_id)["status"] not in ("CancelRequested", "Canceled")
    assert owner.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    wait_for_status(client, run_id, "Canceled")

    second = submit(owner, SLEEPER, experiment="accounts")["runId"]
    assert boss.post(f"/api/v1/runs/{second}/cancel").status_code == 200
    wait_for_status(client, second, "Canceled")


def test_a_member_is_refused_admin_actions_that_an_admin_user_may_do(
    server: Server, client: httpx.Client
) -> None:
    member = server.client(add_user(client, unique("lee")))
    admin = server.client(add_user(client, unique("max"), role="admin"))
    name = unique("adm")
    node = {
        "name": name,
        "host": "127.0.0.1",
        "port": 1,
        "user": "root",
        "key_path": "/nonexistent",
    }
    actions: list[tuple[str, dict[str, object] | None, dict[str, float] | None]] = [
        ("/api/v1/nodes", node, None),
        ("/api/v1/targets", {"name": name, "nodes": ["local"]}, None),
        ("/api/v1/environments", {"name": name}, None),
        ("/api/v1/images/prune", None, {"days": 36500}),
        ("/api/v1/users", {"name": name, "password": "a-good-password"}, None),
    ]
    for path, body, params in actions:
        refused = member.post(path, json=body, params=params)
        assert refused.status_code == 403, (path, refused.text)
        assert "Only an admin may do this" in refused.json()["error"]
    targets = client.get("/api/v1/targets").json()["targets"]
    assert name not in [t["name"] for t in targets]
    assert name not in [u["name"] for u in client.get("/api/v1/users").json()["users"]]
    for path, body, params in actions[1:]:
        done = admin.post(path, json=body, params=params)
        assert done.is_success, (path, done.text)
    # Adding a node reaches the SSH step (and fails there, naming it), past the permission check.
    tried = admin.post("/api/v1/nodes", json=node)
    assert tried.status_code not in (401, 403) and not tried.is_success, tried.text
    assert member.get("/api/v1/users").status_code == 403
    assert admin.get("/api/v1/users").status_code == 200


def test_anonymous_gets_401_on_the_api_and_is_sent_to_log_in_on_pages(server: Server) -> None:
    anon = server.client(token=None)
    for path in ("/api/v1/me", "/api/v1/runs", "/api/v1/users", "/api/v1/tokens"):
        refused = anon.get(path)
        assert refused.status_code == 401, path
        assert "API token" in refused.json()["error"]
    assert anon.post("/api/v1/users", json={"name": unique("x")}).status_code == 401
    bad = server.client(token="th_not_a_real_token")
    assert bad.get("/api/v1/me").status_code == 401
    for path in ("/account", "/users", "/users/admin"):
        assert is_login_redirect(anon.get(path), path), path


def test_the_users_page_is_403_for_a_member_and_lists_users_for_an_admin(
    server: Server, client: httpx.Client
) -> None:
    member_name = unique("ned")
    add_user(client, member_name)
    member = login(server.url, member_name)
    for path in ("/users", "/users/admin"):
        refused = member.get(path)
        assert refused.status_code == 403, path
        assert "text/html" in refused.headers["content-type"]
        assert "Only an admin may do this" in refused.text
    sneaky = unique("sneaky")
    assert (
        member.post("/users", data={"name": sneaky, "password": "a-good-password"}).status_code
        == 403
    )
    assert member.post(f"/users/{member_name}/disable").status_code == 403
    assert "Users</a>" not in member.get("/account").text  # no link to it in the nav

    boss_name = unique("oz")
    add_user(client, boss_name, role="admin")
    boss = login(server.url, boss_name)
    listed = boss.get("/users")
    assert listed.status_code == 200
    row = re.search(rf'<tr id="user-{member_name}">(.*?)</tr>', listed.text, re.S)
    assert row, listed.text
    assert "<td>member</td>" in row.group(1) and "active" in row.group(1)
    own_row = re.search(rf'<tr id="user-{boss_name}">(.*?)</tr>', listed.text, re.S)
    assert own_row and "(you)" in own_row.group(1) and "/disable" not in own_row.group(1)
    assert '<tr id="user-admin">' in listed.text
    assert sneaky not in listed.text


def test_an_admin_adds_disables_enables_and_sets_passwords_on_the_users_page(
    server: Server, client: httpx.Client
) -> None:
    boss_name = unique("pat")
    add_user(client, boss_name, role="admin")
    boss = login(server.url, boss_name)
    name = unique("quin")
    added = boss.post("/users", data={"name": name, "role": "member", "password": "first-password"})
    assert added.status_code == 201
    assert f"Created member {name}" in added.text and f'<tr id="user-{name}">' in added.text
    assert login(server.url, name, "first-password").get("/account").status_code == 200

    bad_name = boss.post("/users", data={"name": "no spaces", "password": "first-password"})
    assert bad_name.status_code == 422 and error_beside_form(bad_name, "add")[0] == "name"
    assert 'value="no spaces" aria-invalid="true"' in bad_name.text
    short = boss.post("/users", data={"name": unique("r"), "password": "short"})
    assert short.status_code == 422 and error_beside_form(short, "add")[0] == "password"
    role = boss.post(
        "/users", data={"name": unique("r"), "role": "root", "password": "long-enough"}
    )
    assert role.status_code == 422 and error_beside_form(role, "add")[0] == "role"
    twice = boss.post("/users", data={"name": name, "password": "first-password"})
    assert twice.status_code == 409
    field, message = error_beside_form(twice, "add")
    assert field == "name" and "exists already" in message

    session = login(server.url, name, "first-password")
    row = boss.post(f"/users/{name}/disable", data={"row": "1"}, headers=htmx("/users"))
    assert row.status_code == 200
    assert row.text.startswith(f'<tr id="user-{name}">') and "disabled" in row.text
    assert f"/users/{name}/enable" in row.text
    assert is_login_redirect(session.get("/account"), "/account")
    enabled = boss.post(f"/users/{name}/enable", data={"next": "/users"})
    assert enabled.status_code == 303 and enabled.headers["location"] == "/users"
    own = boss.post(f"/users/{boss_name}/disable")
    assert own.status_code == 422 and "You cannot disable yourself" in own.text

    short_pw = boss.post(f"/users/{name}/password", data={"password": "short"})
    assert short_pw.status_code == 422 and error_beside_form(short_pw, "password")[0] == "password"
    set_pw = boss.post(f"/users/{name}/password", data={"password": "second-password"})
    assert set_pw.status_code == 200 and f"The password of {name} was set" in set_pw.text
    assert login(server.url, name, "second-password").get("/account").status_code == 200


def test_the_account_page_makes_tokens_shown_once_and_revokes_them_without_reload(
    server: Server, client: httpx.Client
) -> None:
    name = unique("ray")
    add_user(client, name)
    page = login(server.url, name)
    made = page.post("/account/tokens", data={"name": "notebook"})
    assert made.status_code == 201
    value = new_token_on(made)
    assert "shown only this once" in made.text
    api = server.client(value)
    assert api.get("/api/v1/me").json()["name"] == name
    notebook = next(
        t for t in api.get("/api/v1/tokens").json()["tokens"] if t["name"] == "notebook"
    )
    again = page.get("/account")
    assert value not in again.text
    row = re.search(rf'<tr id="token-{notebook["id"]}">(.*?)</tr>', again.text, re.S)
    assert row and "notebook" in row.group(1) and "never" not in row.group(1), again.text
    assert 'hx-confirm="Revoke the token' in row.group(1)

    empty = page.post("/account/tokens", data={"name": "   "})
    assert empty.status_code == 422 and error_beside_form(empty, "token")[0] == "name"

    revoked = page.post(f"/account/tokens/{notebook['id']}/revoke", headers=htmx("/account"))
    assert revoked.status_code == 200
    assert revoked.text.startswith(f'<tr id="token-{notebook["id"]}" class="revoked">')
    assert api.get("/api/v1/me").status_code == 401

    second = new_token_on(page.post("/account/tokens", data={"name": "ci"}))
    mine = server.client(second).get("/api/v1/tokens").json()["tokens"]
    ci = next(t for t in mine if t["name"] == "ci")
    plain = page.post(f"/account/tokens/{ci['id']}/revoke")
    assert plain.status_code == 303 and plain.headers["location"] == "/account"
    assert server.client(second).get("/api/v1/me").status_code == 401
    assert page.post(f"/account/tokens/{ci['id']}/revoke").status_code == 404


def test_changing_your_password_needs_the_current_one(server: Server, client: httpx.Client) -> None:
    name = unique("sam")
    add_user(client, name)
    page = login(server.url, name)

    def change(current: str, new: str, repeat: str) -> httpx.Response:
        return page.post(
            "/account/password",
            data={"current_password": current, "new_password": new, "repeat_password": repeat},
        )

    wrong = change("not-the-password", "brand-new-password", "brand-new-password")
    assert (
        wrong.status_code == 422 and error_beside_form(wrong, "password")[0] == "current_password"
    )
    differ = change("a-good-password", "brand-new-password", "other-new-password")
    assert (
        differ.status_code == 422 and error_beside_form(differ, "password")[0] == "repeat_password"
    )
    short = change("a-good-password", "short", "short")
    assert short.status_code == 422 and error_beside_form(short, "password")[0] == "new_password"
    done = change("a-good-password", "brand-new-password", "brand-new-password")
    assert done.status_code == 200 and "Your password was changed" in done.text
    assert login(server.url, name, "brand-new-password").get("/account").status_code == 200


def test_a_new_password_ends_the_users_other_sessions_but_not_the_one_that_set_it(
    server: Server, client: httpx.Client
) -> None:
    name = unique("pat")
    add_user(client, name)
    laptop = login(server.url, name)
    phone = login(server.url, name)
    changed = laptop.post(
        "/account/password",
        data={
            "current_password": "a-good-password",
            "new_password": "after-the-leak",
            "repeat_password": "after-the-leak",
        },
    )
    assert changed.status_code == 200
    assert laptop.get("/account").status_code == 200
    gone = phone.get("/account")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    # An admin setting it ends the user's sessions too.
    assert client.post(
        f"/api/v1/users/{name}/password", json={"password": "set-by-the-admin"}
    ).is_success
    assert laptop.get("/account").status_code == 303


# Bad input ---------------------------------------------------------------------------------------
def test_names_with_html_are_shown_as_text_and_every_page_has_the_csp(
    server: Server, client: httpx.Client
) -> None:
    name = unique("tess")
    add_user(client, name, role="admin")
    page = login(server.url, name)
    hostile = "<script>alert(1)</script>"
    made = page.post("/account/tokens", data={"name": hostile})
    assert made.status_code == 201
    account = page.get("/account")
    for shown in (made, account):
        assert hostile not in shown.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    missing = page.get("/users/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert missing.status_code == 404
    assert "<img src=x" not in missing.text and "&lt;img src=x onerror=alert(1)&gt;" in missing.text
    anon = httpx.Client(base_url=server.url, timeout=30)
    responses = [
        made,
        account,
        missing,
        page.get("/users"),
        page.get(f"/users/{name}"),
        anon.get("/login"),
        anon.get("/account"),
    ]
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'self'" in csp, response.url
    anon.close()


def test_a_missing_user_is_a_404_page(server: Server, client: httpx.Client) -> None:
    name = unique("uma")
    add_user(client, name, role="admin")
    page = login(server.url, name)
    for response in (
        page.get("/users/nobody-here"),
        page.post("/users/nobody-here/disable"),
        page.post("/users/nobody-here/password", data={"password": "a-good-password"}),
    ):
        assert response.status_code == 404
        assert "text/html" in response.headers["content-type"]
        assert "No user named &#39;nobody-here&#39;" in response.text
    assert client.post("/api/v1/users/nobody-here/disable").status_code == 404


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_logging_in_never_sends_you_off_this_server(
    server: Server, client: httpx.Client, target: str
) -> None:
    name = unique("vic")
    add_user(client, name)
    browser = httpx.Client(base_url=server.url, timeout=30)
    csrf = csrf_of(browser.get("/login").text)
    landed = browser.post(
        "/login",
        data={"name": name, "password": "a-good-password", "_csrf_token": csrf, "next": target},
    )
    assert landed.status_code == 303 and landed.headers["location"] == "/"
    browser.close()


def test_an_admin_changes_roles_and_the_last_admin_stays_one(
    make_server: ServerFactory,
) -> None:
    server = make_server()
    admin = server.client()
    member_token = add_user(admin, "riley")
    member = server.client(token=member_token)
    target = {"name": "t-riley", "nodes": ["local"]}
    assert member.post("/api/v1/targets", json=target).status_code == 403
    refused = member.post("/api/v1/users/riley/role", json={"role": "admin"})
    assert refused.status_code == 403
    promoted = admin.post("/api/v1/users/riley/role", json={"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert member.post("/api/v1/targets", json=target).status_code == 201
    bad = admin.post("/api/v1/users/riley/role", json={"role": "owner"})
    assert bad.status_code == 422 and bad.json()["field"] == "role"
    # The admin page does the same, and says why it refuses.
    add_user(admin, "boss", role="admin")
    page = login(server.url, "boss")
    demoted = page.post("/users/riley/role", data={"role": "member"})
    assert demoted.status_code == 200 and "riley is now a member" in demoted.text
    assert member.post("/api/v1/targets", json=target).status_code == 403
    # With the first-start admin and boss disabled, riley promoted back is the last admin left.
    assert admin.post("/api/v1/users/riley/role", json={"role": "admin"}).is_success
    assert admin.post("/api/v1/users/boss/disable").is_success
    assert member.post("/api/v1/users/admin/disable").is_success
    last = member.post("/api/v1/users/riley/role", json={"role": "member"})
    assert last.status_code == 422 and "last admin" in last.json()["error"]
    assert member.get("/api/v1/users").status_code == 200
