"""The datastore pages through a real server: the list (every datastore, where its data is, what
only admins may do), registering through the form, a server datastore's files folder by folder
with download links (byte-identical, resumable), a big folder shown a page at a time, and the
refusals: a member's POST, a prefix that climbs out, an unknown datastore or folder. Pages are read
with an HTML parser, not by searching text."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import add_user, login
from tests.html import Element, parse
from trainhub.server.pages.datastores import FOLDER_PAGE, crumbs, list_folder, parse_paths
from trainhub.spec import SpecError

DEFAULT = "workspaceblobstore"


def unique(prefix: str = "pg") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@dataclass
class People:
    admin_api: httpx.Client  # the suite's admin token
    member: httpx.Client  # logged in through the form
    boss: httpx.Client  # an admin, logged in
    anonymous: httpx.Client
    boss_name: str


@pytest.fixture(scope="module")
def people(server: Server) -> Iterator[People]:
    admin_api = server.client()
    member, boss = unique("ds-mia"), unique("ds-boss")
    add_user(admin_api, member)
    add_user(admin_api, boss, role="admin")
    found = People(
        admin_api,
        login(server.url, member),
        login(server.url, boss),
        httpx.Client(base_url=server.url, timeout=30),
        boss,
    )
    yield found
    for c in (found.member, found.boss, found.anonymous):
        c.close()


def csrf_form(client: httpx.Client, **fields: str) -> dict[str, str]:
    return {"_csrf_token": str(client.headers["x-csrftoken"]), **fields}


def put(client: httpx.Client, datastore: str, path: str, data: bytes) -> None:
    """A file uploaded through the API, as the SDK and the CLI do."""
    response = client.put(
        f"/api/v1/datastores/{datastore}/files/{quote(path)}",
        params={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        content=data,
    )
    assert response.status_code == 201, response.text


def server_datastore(people: People, **fields: object) -> str:
    name = unique()
    made = people.admin_api.post("/api/v1/datastores", json={"name": name, **fields})
    assert made.status_code == 201, made.text
    return name


def row_of(dom: Element, name: str) -> Element:
    return dom.find(f"datastore-{name}")


def links(element: Element) -> dict[str, str]:
    """Each link's text and where it goes."""
    return {a.text: a.attrs["href"] for a in element.iter() if a.tag == "a"}


def listed(dom: Element) -> list[tuple[str, str]]:
    """The listing's rows: ('folder' or 'file', path)."""
    return [(r.classes[0], r.attrs["data-path"]) for r in dom.find("listing").all(tag="tr")[1:]]


# Pure parts ----------------------------------------------------------------------------------
def test_the_paths_field_takes_one_path_a_line_for_every_node_or_one_node() -> None:
    assert parse_paths(" /mnt/data \n\ngpu-2=/srv/data\n") == {
        "*": "/mnt/data",
        "gpu-2": "/srv/data",
    }
    assert parse_paths("*=/mnt/a=b") == {"*": "/mnt/a=b"}
    assert parse_paths("") == {}
    with pytest.raises(SpecError, match="Line 2 \\('mnt/data'\\) is neither") as bad:
        parse_paths("/x\nmnt/data")
    assert bad.value.field == "paths"
    with pytest.raises(SpecError, match="'\\*' has a path on an earlier line"):
        parse_paths("/x\n*=/y")


def test_breadcrumbs_lead_to_every_folder_above() -> None:
    assert crumbs("") == []
    assert crumbs("a/b c/") == [("a", "a/"), ("b c", "a/b c/")]


def test_a_folder_lists_folders_first_hides_the_servers_own_and_never_a_link_out(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ds"
    for relative in ("b.txt", "a.txt", "zoo/x", "alpha/y", ".trainhub/sums/b.txt.sha256"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(relative)
    (tmp_path / "secret").write_text("outside")
    (root / "leak").symlink_to(tmp_path / "secret")
    (root / "alias").symlink_to(root / "b.txt")
    found = list_folder(root, "")
    assert [(e.name, e.is_folder) for e in found.entries] == [
        ("alpha", True),
        ("zoo", True),
        ("a.txt", False),
        ("alias", False),
        ("b.txt", False),
    ]
    assert (found.folders, found.files, found.after) == (2, 3, 0)
    assert [e.path for e in list_folder(root, "zoo/").entries] == ["zoo/x"]
    page = list_folder(root, "", start=1, limit=2)
    assert [e.name for e in page.entries] == ["zoo", "a.txt"]
    assert (page.start, page.end, page.after) == (1, 3, 2)


# The list ------------------------------------------------------------------------------------
def test_anonymous_is_sent_to_log_in_from_the_datastore_pages(people: People) -> None:
    for path in ("/datastores", f"/datastores/{DEFAULT}"):
        response = people.anonymous.get(path)
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"] == f"/login?next={path}"


def test_the_list_shows_every_datastore_and_where_its_data_is_and_members_get_no_admin_form(
    people: People,
) -> None:
    shared = unique("nfs")
    made = people.admin_api.post(
        "/api/v1/datastores",
        json={
            "name": shared,
            "kind": "shared",
            "paths": {"*": "/mnt/nfs/images", "gpu-2": "/data/images"},
            "readOnly": True,
            "description": "<b>ImageNet</b> subset",
        },
    )
    assert made.status_code == 201, made.text
    page = people.member.get("/datastores")
    assert page.status_code == 200
    dom = parse(page)
    assert dom.all("datastore", "tr")[0].attrs["id"] == f"datastore-{DEFAULT}"  # the default first
    default = row_of(dom, DEFAULT)
    assert default.one("kind").text == "server"
    assert default.one("where").text == "on the server"
    assert "default" in default.one("default").text
    assert not default.all("read-only")
    assert links(default)[DEFAULT] == f"/datastores/{DEFAULT}"
    row = row_of(dom, shared)
    assert row.one("kind").text == "shared"
    assert [li.text for li in row.one("where").all(tag="li")] == [
        "every node: /mnt/nfs/images",
        "gpu-2: /data/images",
    ]
    assert row.one("read-only").text == "read-only"
    # A name or description with markup is shown as text.
    assert row.one("description").text == "<b>ImageNet</b> subset"
    assert "<b>ImageNet" not in page.text
    # Members see no form to register and no buttons to change.
    assert dom.by_id("add-datastore") is None
    assert not [e for e in dom.iter() if e.tag == "form" and "/datastores" in e.attrs["action"]]
    assert dom.find("main").text  # the nav link is there for everyone
    nav = next(e for e in dom.iter() if e.tag == "nav" and e.attrs.get("aria-label") == "main")
    assert links(nav)["Datastores"] == "/datastores"


def test_a_members_post_is_refused_and_changes_nothing(people: People) -> None:
    name = server_datastore(people)
    member = people.member
    attempts = {
        "/datastores": csrf_form(member, name=unique(), kind="server"),
        f"/datastores/{name}/read-only": csrf_form(member),
        f"/datastores/{name}/remove": csrf_form(member),
    }
    for path, form in attempts.items():
        refused = member.post(path, data=form)
        assert refused.status_code == 403, (path, refused.status_code)
        assert "admin" in parse(refused).find("error-message").text
    found = people.admin_api.get(f"/api/v1/datastores/{name}")
    assert found.status_code == 200 and found.json()["readOnly"] is False
    registered = [
        d["name"] for d in people.admin_api.get("/api/v1/datastores").json()["datastores"]
    ]
    assert attempts["/datastores"]["name"] not in registered


def test_an_admin_registers_datastores_through_the_form(people: People) -> None:
    boss = people.boss
    form = parse(boss.get("/datastores")).find("add-datastore")
    assert {
        e.attrs.get("name") for e in form.iter() if e.tag in ("input", "select", "textarea")
    } >= {
        "_csrf_token",
        "name",
        "kind",
        "paths",
        "read_only",
        "description",
    }
    served, shared = unique("raw"), unique("nfs")
    made = boss.post(
        "/datastores", data=csrf_form(boss, name=served, kind="server", description="raw images")
    )
    assert made.status_code == 201, made.text
    dom = parse(made)
    assert served in dom.one("flash").text
    assert row_of(dom, served).one("where").text == "on the server"
    made = boss.post(
        "/datastores",
        data=csrf_form(
            boss, name=shared, kind="shared", paths="/mnt/nfs\ngpu-1=/data/nfs", read_only="1"
        ),
    )
    assert made.status_code == 201, made.text
    found = people.admin_api.get(f"/api/v1/datastores/{shared}").json()
    assert (found["kind"], found["paths"], found["readOnly"], found["createdBy"]) == (
        "shared",
        {"*": "/mnt/nfs", "gpu-1": "/data/nfs"},
        True,
        people.boss_name,
    )
    # Without the CSRF token, nothing is registered.
    third = unique()
    refused = httpx.post(
        f"{boss.base_url}/datastores",
        data={"name": third, "kind": "server"},
        cookies=boss.cookies,
    )
    assert refused.status_code == 403
    assert people.admin_api.get(f"/api/v1/datastores/{third}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "status", "field", "words"),
    [
        ({"name": "my-data", "kind": "server"}, 422, "name", "letters, digits or '_'"),
        ({"name": "my-data", "kind": "shared", "paths": "x"}, 422, "name", "digits or '_'"),
        ({"kind": "shared", "paths": ""}, 422, "paths", "needs the folder"),
        ({"kind": "server", "paths": "/mnt/x"}, 422, "paths", "takes no paths"),
        ({"kind": "shared", "paths": "gpu-1=data"}, 422, "paths.gpu-1", "not an absolute"),
        ({"kind": "shared", "paths": "nonsense"}, 422, "paths", "neither /PATH"),
        ({"kind": "blob"}, 422, "kind", "server, shared"),
        ({"name": DEFAULT.upper(), "kind": "server"}, 409, "name", "already registered"),
    ],
)
def test_a_bad_registration_is_shown_beside_its_field_with_the_form_kept(
    people: People, fields: dict[str, str], status: int, field: str, words: str
) -> None:
    boss = people.boss
    sent = {"name": unique(), "description": "kept <as typed>", **fields}
    refused = boss.post("/datastores", data=csrf_form(boss, **sent))
    assert refused.status_code == status, refused.text
    dom = parse(refused)
    error = dom.find("add-error")
    assert error.attrs["data-field"] == field
    assert words in error.text
    form = dom.find("add-datastore")
    invalid = [e for e in form.iter() if e.attrs.get("aria-invalid") == "true"]
    assert [e.attrs["name"] for e in invalid] == [field.split(".")[0]]
    assert invalid[0].attrs["aria-describedby"] == "add-error"
    name_input = next(e for e in form.iter() if e.attrs.get("name") == "name")
    assert name_input.attrs["value"] == sent["name"]
    description = next(e for e in form.iter() if e.attrs.get("name") == "description")
    assert description.text == "kept <as typed>"
    if status == 422:
        assert people.admin_api.get(f"/api/v1/datastores/{sent['name']}").status_code == 404


def test_an_admin_makes_a_datastore_read_only_and_writable_and_removes_it(people: People) -> None:
    boss = people.boss
    name = server_datastore(people)
    row = row_of(parse(boss.get("/datastores")), name)
    (make,) = [e for e in row.iter() if e.tag == "form" and e.attrs["action"].endswith("read-only")]
    done = boss.post(make.attrs["action"], data=csrf_form(boss))
    assert done.status_code == 303 and done.headers["location"] == "/datastores"
    assert people.admin_api.get(f"/api/v1/datastores/{name}").json()["readOnly"] is True
    row = row_of(parse(boss.get("/datastores")), name)
    assert row.one("read-only").text == "read-only"
    boss.post(f"/datastores/{name}/writable", data=csrf_form(boss))
    assert people.admin_api.get(f"/api/v1/datastores/{name}").json()["readOnly"] is False

    (remove,) = [e for e in row.iter() if e.tag == "form" and e.attrs["action"].endswith("remove")]
    assert name in remove.attrs["hx-confirm"]  # asks first (htmx), a plain form without script
    gone = boss.post(remove.attrs["action"], data=csrf_form(boss), headers={"HX-Request": "true"})
    assert gone.headers.get("hx-redirect") == "/datastores"
    assert people.admin_api.get(f"/api/v1/datastores/{name}").status_code == 404
    assert parse(boss.get("/datastores")).by_id(f"datastore-{name}") is None
    # The default one has no remove button, and a forged POST is refused naming it.
    default = row_of(parse(boss.get("/datastores")), DEFAULT)
    assert not [e for e in default.iter() if e.tag == "form" and "remove" in e.attrs["action"]]
    refused = boss.post(f"/datastores/{DEFAULT}/remove", data=csrf_form(boss))
    assert refused.status_code == 422
    assert "cannot be removed" in parse(refused).find("error-message").text
    missing = boss.post(f"/datastores/{unique()}/read-only", data=csrf_form(boss))
    assert missing.status_code == 404


# A server datastore's files ------------------------------------------------------------------
SAMPLE = {
    "train/part-0.csv": b"x,y\n" + b"1,2\n" * 500,
    "train/nested/deeper/blob.bin": os.urandom(200_000),
    "labels.txt": "ünïcode ✓\n".encode(),
    "with space/a & b.txt": b"spaces and an ampersand",
    "with space/odd #1?.txt": b"a name a URL must quote",
}


@pytest.fixture(scope="module")
def filled(people: People) -> str:
    """A server datastore with SAMPLE uploaded through the API."""
    name = server_datastore(people, description="sample")
    for path, data in SAMPLE.items():
        put(people.admin_api, name, path, data)
    return name


def test_browsing_shows_sub_folders_first_then_files_with_size_and_time(
    people: People, filled: str
) -> None:
    page = people.member.get(f"/datastores/{filled}")
    assert page.status_code == 200
    dom = parse(page)
    assert listed(dom) == [
        ("folder", "train/"),
        ("folder", "with space/"),
        ("file", "labels.txt"),
    ]
    label = dom.find("listing").one("file")
    assert label.all(tag="td")[1].attrs["data-bytes"] == str(len(SAMPLE["labels.txt"]))
    assert label.all(tag="td")[2].text.startswith("20")  # a date
    assert dom.by_id("listing-more") is None and dom.by_id("files-empty") is None

    # Follow the links, as a person would.
    train = parse(people.member.get(links(dom.find("listing"))["train/"]))
    assert listed(train) == [("folder", "train/nested/"), ("file", "train/part-0.csv")]
    assert [e.text for e in train.find("folder-crumbs").iter() if e.tag in ("a", "span")] == [
        filled,
        "train",
    ]
    deeper = parse(people.member.get(links(train.find("listing"))["nested/"]))
    deeper = parse(people.member.get(links(deeper.find("listing"))["deeper/"]))
    assert listed(deeper) == [("file", "train/nested/deeper/blob.bin")]
    crumb_links = links(deeper.find("folder-crumbs"))
    assert crumb_links == {
        filled: f"/datastores/{filled}",
        "train": f"/datastores/{filled}?prefix=train/",
        "nested": f"/datastores/{filled}?prefix=train/nested/",
    }
    odd = parse(people.member.get(links(dom.find("listing"))["with space/"]))
    assert listed(odd) == [("file", "with space/a & b.txt"), ("file", "with space/odd #1?.txt")]
    # A prefix without its trailing slash is the same folder.
    same = parse(people.member.get(f"/datastores/{filled}", params={"prefix": "train"}))
    assert listed(same) == listed(train)


def test_every_file_downloads_byte_identical_through_its_link_and_a_range_resumes(
    people: People, filled: str
) -> None:
    for path, data in SAMPLE.items():
        folder = path.rpartition("/")[0]
        dom = parse(people.member.get(f"/datastores/{filled}", params={"prefix": folder}))
        (link,) = [
            a
            for r in dom.find("listing").all("file")
            for a in r.all("download")
            if r.attrs["data-path"] == path
        ]
        assert "download" in link.attrs
        got = people.member.get(link.attrs["href"])
        assert got.status_code == 200, (path, got.text)
        assert got.content == data, path
        assert got.headers["accept-ranges"] == "bytes"
        assert got.headers["content-disposition"].startswith("attachment; filename*=UTF-8''")
    blob = SAMPLE["train/nested/deeper/blob.bin"]
    href = f"/datastores/{filled}/files/train/nested/deeper/blob.bin"
    rest = people.member.get(href, headers={"Range": "bytes=1000-"})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 1000-{len(blob) - 1}/{len(blob)}"
    assert rest.content == blob[1000:]
    beyond = people.member.get(href, headers={"Range": f"bytes={len(blob)}-"})
    assert beyond.status_code == 416
    # The page route is behind the session: no session, no file.
    assert people.anonymous.get(href).status_code == 303
    assert people.member.get(f"/datastores/{filled}/files/train/none.csv").status_code == 404


def test_a_prefix_or_a_file_path_that_climbs_out_is_refused_naming_it(
    people: People, filled: str
) -> None:
    for prefix in ("../", "train/../../", "/etc/"):
        refused = people.member.get(f"/datastores/{filled}", params={"prefix": prefix})
        assert refused.status_code == 422, (prefix, refused.status_code)
        dom = parse(refused)
        assert prefix in dom.find("error-message").text
        assert "prefix" in dom.one("hint").text  # the field is named
    own = people.member.get(f"/datastores/{filled}", params={"prefix": ".trainhub/sums/"})
    assert own.status_code == 422
    assert "the server's own" in parse(own).find("error-message").text
    climbing = people.member.get(f"/datastores/{filled}/files/train/%2E%2E/%2E%2E/x")
    assert climbing.status_code == 422
    assert "climbs out" in parse(climbing).find("error-message").text
    absolute = people.member.get(f"/datastores/{filled}/files//etc/passwd")
    assert absolute.status_code == 422
    assert "'/etc/passwd' is absolute" in parse(absolute).find("error-message").text


def test_an_unknown_datastore_or_folder_is_a_404_page(people: People, filled: str) -> None:
    missing = unique()
    for path in (f"/datastores/{missing}", f"/datastores/{missing}/files/x.txt"):
        page = people.member.get(path)
        assert page.status_code == 404, path
        assert missing in parse(page).find("error-message").text
    page = people.member.get(f"/datastores/{filled}", params={"prefix": "nothing/here/"})
    assert page.status_code == 404
    assert "nothing/here/" in parse(page).find("error-message").text
    # A file is not a folder.
    assert (
        people.member.get(f"/datastores/{filled}", params={"prefix": "labels.txt"}).status_code
        == 404
    )


def test_an_empty_datastore_says_how_to_upload_into_it(people: People) -> None:
    name = server_datastore(people)
    dom = parse(people.member.get(f"/datastores/{name}"))
    assert dom.by_id("listing") is None
    empty = dom.find("files-empty").text
    assert f"ds = Datastore.get(ws, '{name}')" in empty
    assert "ds.upload('./data'" in empty
    assert f"trainhub datastore upload ./data -d {name}" in empty
    # Read-only: a member is told who may upload instead.
    people.admin_api.patch(f"/api/v1/datastores/{name}", json={"readOnly": True})
    empty = parse(people.member.get(f"/datastores/{name}")).find("files-empty").text
    assert "only an admin may upload" in empty and "ds.upload" not in empty


def test_a_big_folder_shows_one_page_and_says_how_many_more(people: People, server: Server) -> None:
    name = server_datastore(people)
    # Files an admin copied into the datastore's folder on the server (cheaper than 500 uploads).
    folder = server.data / "datastores" / name / "many"
    for sub in ("sub_a", "sub_b"):
        (folder / sub).mkdir(parents=True)
    for index in range(FOLDER_PAGE + 3):
        (folder / f"f{index:05d}.txt").write_bytes(b"x")
    dom = parse(people.member.get(f"/datastores/{name}", params={"prefix": "many/"}))
    rows = listed(dom)
    assert len(rows) == FOLDER_PAGE
    assert rows[:3] == [
        ("folder", "many/sub_a/"),
        ("folder", "many/sub_b/"),
        ("file", "many/f00000.txt"),
    ]
    note = dom.find("listing-more")
    assert f"1–{FOLDER_PAGE} of {FOLDER_PAGE + 5}" in note.text
    assert "5 more not shown" in note.text
    following = parse(people.member.get(links(note)["next 5 →"]))
    assert [p for _, p in listed(following)] == [
        f"many/f{i:05d}.txt" for i in range(FOLDER_PAGE - 2, FOLDER_PAGE + 3)
    ]
    back = links(following.find("listing-more"))
    assert back[f"← previous {FOLDER_PAGE}"] == f"/datastores/{name}?prefix=many/&start=0"


def test_a_shared_datastore_says_where_its_data_is_on_each_node(people: People) -> None:
    name = unique("nfs")
    made = people.admin_api.post(
        "/api/v1/datastores",
        json={"name": name, "kind": "shared", "paths": {"gpu-1": "/data/a", "gpu-2": "/data/b"}},
    )
    assert made.status_code == 201, made.text
    dom = parse(people.member.get(f"/datastores/{name}"))
    assert dom.find("datastore-kind").text == "shared"
    assert [r.text for r in dom.all("node-path")] == ["gpu-1 /data/a", "gpu-2 /data/b"]
    assert "Only these nodes" in dom.find("shared-where").text
    assert dom.by_id("listing") is None and dom.by_id("files") is None
    refused = people.member.get(f"/datastores/{name}/files/x.txt")
    assert refused.status_code == 422
    assert "shared datastore" in parse(refused).find("error-message").text
