"""The web view: its routes over HTTP on both backends, and its pages in a real browser.

Route tests speak to an in-process daemon with httpx (`board_url`: fakeredis and redis-server).
Browser tests drive Debian's chromium with Playwright against a daemon on a real redis-server:
they post over the API and wait, with Playwright's auto-waiting `expect`, for the open page to
show the change (never a sleep, never a reload). Each page's screenshot is kept in
test-artifacts/. Without playwright or /usr/bin/chromium the browser tests skip, and fail
instead under BLACKBOARD_REQUIRE_BROWSER=1 (set by .ci/run).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from blackboard import Board, agent, display
from blackboard.context import Context
from blackboard.daemon import Daemon
from blackboard.models import Item
from blackboard.web import auth
from tests.test_http import TOKEN, client_for, planner, running, stepper, until

HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
if TYPE_CHECKING or HAVE_PLAYWRIGHT:
    from playwright.async_api import Browser, Page, async_playwright, expect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
REQUIRE_ENV = "BLACKBOARD_REQUIRE_BROWSER"
EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
VENDORED_SCRIPTS = [
    '<script src="/web/static/htmx.min.js">',
    '<script src="/web/static/htmx-ext-sse.min.js">',
]
PAGES = ["/", "/web/goals", "/web/agents", "/web/dead", "/web/approvals"]


async def dead_item(board: Board, kind: str, error: str = "it broke", payload: Any = None) -> Item:
    item = await board.post(kind, payload, max_attempts=1)
    [claim] = await board.claim("tester", [kind])
    await board.fail(claim, error, retry=False)
    return await board.get(item.id)


def tree_nodes(html: str) -> set[tuple[str, str]]:
    """(id, status) of every lineage node a goal page shows."""
    return set(re.findall(r'<li class="node" data-id="([^"]+)" data-status="([^"]+)">', html))


def traced_nodes(tree: dict[str, Any]) -> set[tuple[str, str]]:
    out = {(tree["item"]["id"], tree["item"]["status"])}
    for child in tree["children"]:
        out |= traced_nodes(child)
    return out


async def sse_changes(lines: AsyncIterator[str], n: int = 1, timeout: float = 10) -> list[tuple[str, str]]:
    """The first `n` (id, event type) of a web event stream."""
    out: list[tuple[str, str]] = []
    fields: dict[str, str] = {}
    with anyio.fail_after(timeout):
        async for line in lines:
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                out.append((fields["id"], fields["event"]))
                if len(out) == n:
                    return out
            fields = {}
    raise AssertionError(f"the stream ended after {out}")


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


# -- routes, on both backends ----------------------------------------------------------------


async def test_every_page_renders_untrusted_text_escaped_under_a_strict_csp(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        goal = (await c.post("/v1/items", json={"kind": "web.goal", "payload": {"text": EVIL}})).json()
        await c.post("/v1/items", json={"kind": "web.note", "payload": EVIL, "parent": goal["id"]})
        dead = await dead_item(d.board, "web.evil", f"model said {EVIL}", {"text": EVIL})
        paths = [*PAGES, f"/web/goals/{goal['id']}", f"/web/items/{goal['id']}", f"/web/items/{dead.id}"]
        for path in paths:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            # The only script elements are the vendored ones; the payload's tags are text.
            assert re.findall(r"<script\b[^>]*>", r.text) == VENDORED_SCRIPTS, path
            assert "<img" not in r.text and 'onerror="window' not in r.text
        page = (await c.get(f"/web/items/{dead.id}")).text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page  # payload and error, escaped
        assert (await c.get(f"/web/goals/{goal['id']}")).text.count("&lt;img src=x") == 0  # kinds only
        assert "&lt;script&gt;" in (await c.get("/web/dead")).text  # the error column

        for name in ("htmx.min.js", "htmx-ext-sse.min.js", "web.css"):
            r = await c.get(f"/web/static/{name}")
            assert (
                r.status_code == 200
                and r.content == (Path(auth.__file__).parent / "static" / name).read_bytes()
            )
        assert 'version:"2.0.11"' in (await c.get("/web/static/htmx.min.js")).text  # as VENDORED.md says


async def test_the_goal_page_shows_display_traced_the_data_of_trace_json(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = display.traced

    async def spy(view: Any, item_id: str) -> dict[str, Any]:
        calls.append(item_id)
        return await original(view, item_id)

    monkeypatch.setattr(display, "traced", spy)
    async with running(board_url, planner, stepper) as d, client_for(d) as c:
        goal = (await c.post("/v1/items", json={"kind": "plan.goal"})).json()

        async def finished() -> dict[str, Any] | None:
            tree = (await c.get(f"/v1/goals/{goal['id']}/tree")).json()
            return (
                tree
                if len(traced_nodes(tree)) == 4 and {s for _, s in traced_nodes(tree)} == {"done"}
                else None
            )

        tree = await until(finished)
        calls.clear()
        whole = await c.get(f"/web/goals/{goal['id']}")
        fragment = await c.get(f"/web/goals/{goal['id']}", headers={"HX-Request": "true"})
        assert calls == [goal["id"], goal["id"]]  # one function behind the page and its refresh
        assert tree_nodes(whole.text) == tree_nodes(fragment.text) == traced_nodes(tree)
        assert "<html" in whole.text and "<html" not in fragment.text and 'id="tree"' in fragment.text
        assert fragment.headers["vary"] == "HX-Request"
        for step in tree["children"]:
            assert f"by {step['item']['handled_by']}" in whole.text

        missing = await c.get("/web/goals/01J0000000000000000000ZZZZ")
        assert missing.status_code == 404 and "ItemNotFound" in missing.text
        assert (await c.get("/web/items/bad%20id")).status_code == 422


async def test_actions_refuse_what_another_site_could_send(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        dead = await dead_item(d.board, "web.job")
        url, own = f"/v1/items/{dead.id}/retry".replace("/v1/", "/web/"), d.http_url or ""
        forged = [
            {},  # a plain cross-site form: no HX-Request
            {"HX-Request": "true", "Origin": "http://evil.example"},
            {"HX-Request": "true", "Origin": "null"},
            {"HX-Request": "true", "Sec-Fetch-Site": "cross-site"},
            {"HX-Request": "true", "Sec-Fetch-Site": "same-site"},
        ]
        for headers in forged:
            r = await c.post(url, headers=headers)
            assert r.status_code == 403 and "refused" in r.text, (headers, r.text)
        assert (await d.board.get(dead.id)).status == "dead"
        r = await c.post(url, headers={"HX-Request": "true", "Origin": own, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200 and f"requeued {dead.id}" in r.text
        assert (await d.board.get(dead.id)).status == "open"
        again = await c.post(url, headers={"HX-Request": "true"})
        assert again.status_code == 409 and "InvalidState" in again.text  # shown as a message


async def test_an_open_daemon_shows_its_view_under_loopback_names_only(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        port = (d.http_url or "").rsplit(":", 1)[1]
        for host in (f"evil.example:{port}", "192.168.1.5", f"127.0.0.1.evil.example:{port}"):
            r = await c.get("/", headers={"Host": host})
            assert r.status_code == 403 and "loopback" in r.text, host
            assert (await c.get("/web/events", headers={"Host": host})).status_code == 403
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "app.localhost"):
            assert (await c.get("/", headers={"Host": host})).status_code == 200, host
        assert (await c.get("/login")).headers["location"] == "/"  # nothing to log in to


async def test_sessions_act_as_the_tokens_principal_on_the_web_view_only(board_url: str) -> None:
    async with running(board_url, api_token=TOKEN, api_principals={"alice": "t-alice"}) as d:
        async with client_for(d) as anon, client_for(d, TOKEN) as bearer:
            html = {"accept": "text/html"}
            r = await anon.get("/web/agents", headers=html)
            assert r.status_code == 303 and r.headers["location"] == "/login?next=/web/agents"
            r = await anon.get("/web/goals", headers={"HX-Request": "true"})
            assert r.status_code == 401 and r.headers["hx-redirect"] == "/login"
            assert (await anon.get("/web/events")).status_code == 401
            assert (await anon.get("/web/static/htmx.min.js")).status_code == 200  # public files
            assert (await anon.get("/login")).status_code == 200
            assert (await bearer.get("/")).status_code == 200  # a bearer token works here too

            form = {"token": "t-alice", "next": "/web/agents"}
            wrong = await anon.post("/login", data={"token": "nope"})
            assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
            foreign = await anon.post("/login", data=form, headers={"Origin": "http://evil.example"})
            assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
            r = await anon.post("/login", data=form)
            assert r.status_code == 303 and r.headers["location"] == "/web/agents"
            cookie = r.headers["set-cookie"]
            assert cookie.startswith(f"{auth.SESSION_COOKIE}=")
            for attribute in ("HttpOnly", "SameSite=strict", "Path=/", f"Max-Age={auth.SESSION_SECONDS}"):
                assert attribute.lower() in cookie.lower(), cookie
            value = anon.cookies[auth.SESSION_COOKIE]
            assert "t-alice" not in value and "t-alice" not in base64.b64encode(value.encode()).decode()
            r = await anon.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
            assert r.headers["location"] == "/"  # no open redirect

        jar = {auth.SESSION_COOKIE: value}
        async with httpx.AsyncClient(base_url=d.http_url or "", cookies=jar, timeout=10) as alice:
            page = await alice.get("/")
            assert page.status_code == 200 and '<code id="principal">alice</code>' in page.text
            async with alice.stream("GET", "/web/events") as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
            # The cookie is for the web view: the JSON API still wants the bearer token.
            assert (await alice.get("/v1/stats")).status_code == 401
            r = await alice.post("/logout", headers={"HX-Request": "true"})
            assert r.status_code == 204 and r.headers["hx-redirect"] == "/login"
            assert (
                'bb_session=""' in r.headers["set-cookie"] and "max-age=0" in r.headers["set-cookie"].lower()
            )

        name, expires, mac = value.split(".")
        http_name = base64.urlsafe_b64encode(b"http").decode().rstrip("=")
        stale = auth.session_value("alice", "t-alice", now=time.time() - auth.SESSION_SECONDS - 1)
        for bad in (
            f"{http_name}.{expires}.{mac}",  # another principal under alice's MAC
            f"{name}.{int(expires) + 3600}.{mac}",  # a longer life
            f"{name}.{expires}.{'0' * 64}",
            stale,
            "garbage",
            "",
        ):
            async with httpx.AsyncClient(
                base_url=d.http_url or "", cookies={auth.SESSION_COOKIE: bad}, timeout=10
            ) as c:
                assert (await c.get("/", headers={"accept": "text/html"})).status_code == 303, bad


async def test_the_event_stream_sends_changes_of_readable_items_of_its_goal(
    board_url: str, tmp_path: Path
) -> None:
    rules = "roles:\n  api: {post: ['*'], read: ['web.*']}\nprincipals:\n  http: [api]\n  cli: [api]\n"
    (tmp_path / "p.yaml").write_text(rules)
    async with running(board_url, policies=[tmp_path]) as d, client_for(d) as c:
        goal = (await c.post("/v1/items", json={"kind": "web.goal"})).json()
        other = (await c.post("/v1/items", json={"kind": "web.other"})).json()
        since = await d.board.last_event_id()
        params = {"root": goal["id"], "since": since}
        async with c.stream("GET", "/web/events", params=params) as stream:
            assert stream.status_code == 200
            await c.post("/v1/items", json={"kind": "web.kid", "parent": other["id"]})  # another goal
            await c.post("/v1/items", json={"kind": "hidden.kid", "parent": goal["id"]})  # unreadable
            await c.post("/v1/items", json={"kind": "web.kid", "parent": goal["id"]})
            mine = await d.board.last_event_id()
            [(cursor, event)] = await sse_changes(stream.aiter_lines())
            assert event == "change" and cursor_key(cursor) >= cursor_key(mine)  # not for the others
        for params, field in [({"since": "bogus"}, "since"), ({"root": "bad id"}, "root"), ({"x": "1"}, "x")]:
            r = await c.get("/web/events", params=params)
            assert r.status_code == 422 and field in r.text


# -- in a real browser -----------------------------------------------------------------------


def require_browser() -> None:
    missing = []
    if not HAVE_PLAYWRIGHT:
        missing.append("playwright (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if missing:
        reason = "the browser tests need " + " and ".join(missing)
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, but {REQUIRE_ENV}=1 requires them")
        pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_browser()
    expect.set_options(timeout=15_000)
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            await launched.close()
            expect.set_options(timeout=5_000)  # process-wide: back to Playwright's default


@asynccontextmanager
async def browsing(browser: Browser, daemon: Daemon) -> AsyncIterator[Page]:
    """A fresh browser context on the daemon's web view. On the way out: no script error, no
    CSP violation, and no script of the board's data ran (`window.__pwned`)."""
    context = await browser.new_context(base_url=daemon.http_url, viewport={"width": 1200, "height": 420})
    problems: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
        )
        yield page
        assert await page.evaluate("typeof window.__pwned") == "undefined"
        assert problems == []
    finally:
        await context.close()


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=str(artifacts / f"web-{name}.png"), full_page=True)


async def test_the_board_and_a_goal_tree_fill_in_live(
    redis_url: str, browser: Browser, artifacts: Path
) -> None:
    gate = anyio.Event()

    @agent(name="planner", consumes=["web.goal"], produces=["web.step"])
    async def plan(item: Item, ctx: Context) -> dict[str, int]:
        await gate.wait()
        for i in range(3):
            await ctx.post("web.step", {"n": i})
        return {"steps": 3}

    @agent(name="stepper", consumes=["web.step"], produces=["web.check"], concurrency=3)
    async def step(item: Item, ctx: Context) -> int:
        if item.payload["n"] == 1:
            await ctx.post("web.check", {"of": item.id})
        return int(item.payload["n"]) * 10

    @agent(name="checker", consumes=["web.check"])
    async def check(item: Item, ctx: Context) -> str:
        return "looks right"

    async with (
        running(redis_url, plan, step, check, presence_interval=0.2) as d,
        client_for(d) as api,
        browsing(browser, d) as page,
    ):
        await page.goto("/")
        await expect(page.locator("h1")).to_contain_text("Board")
        await page.evaluate("window.__stay = 1")  # gone if the page ever reloads
        goal = (await api.post("/v1/items", json={"kind": "web.goal", "payload": {"q": "why"}})).json()
        row = page.locator('tr[data-kind="web.goal"]')
        await expect(row.locator('td[data-status="claimed"]')).to_have_text("1")  # live counts
        await shot(page, artifacts, "board")

        await page.goto("/web/goals")
        await expect(page.locator(f'#goals-running tr[data-id="{goal["id"]}"]')).to_be_visible()
        await shot(page, artifacts, "goals")
        await page.locator(f'#goals-running tr[data-id="{goal["id"]}"] a.goal-link').click()
        await expect(page).to_have_url(re.compile(f"/web/goals/{goal['id']}$"))
        await page.evaluate("window.__stay = 1")
        nodes = page.locator("li.node")
        await expect(nodes).to_have_count(1)
        await expect(nodes.first).to_have_attribute("data-status", "claimed")

        gate.set()  # the planner fans out; the open page fills in as the items change
        await expect(page.locator('li.node[data-status="done"]')).to_have_count(5)
        await expect(page.locator("#tree > li > ul > li > .line .agent")).to_have_text(["by stepper"] * 3)
        await expect(page.locator("li.node li.node li.node .agent")).to_have_text("by checker")
        await expect(page.locator("li.node li.node .took")).to_have_count(4)
        assert await page.evaluate("window.__stay") == 1  # updated in place, not reloaded
        tree = (await api.get(f"/v1/goals/{goal['id']}/tree")).json()
        assert tree_nodes(await page.content()) == traced_nodes(tree)
        await shot(page, artifacts, "goal-tree")

        await page.locator("#tree > li > ul > li > .line a.kind").first.click()
        await expect(page.locator("#item-status")).to_contain_text("done")
        await expect(page.locator("#history tbody tr")).to_have_count(3)  # posted, claimed, done
        await expect(page.locator('#history tr[data-type="claimed"]')).to_contain_text("stepper")
        await expect(page.locator("#payload")).to_contain_text('"n":')
        await shot(page, artifacts, "item")

        await page.goto("/web/agents")
        me = page.locator(f'section[data-daemon="{d.id}"]')
        await expect(me.locator("h2 .status")).to_have_text("live")
        await expect(me.locator('tr[data-agent="stepper"] .completed')).to_have_text("3")
        await expect(me.locator('tr[data-agent="stepper"] .per-minute')).to_have_text("3")
        await expect(me.locator('tr[data-agent="planner"] .in-flight')).to_have_text("0/1")
        await shot(page, artifacts, "agents")


@asynccontextmanager
async def attacker_site(html: str) -> AsyncIterator[str]:
    """Another site (http://localhost:PORT, a different site from 127.0.0.1) serving `html`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = html.encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://localhost:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()


async def test_a_dead_letter_is_retried_from_the_page_and_not_from_another_site(
    redis_url: str, browser: Browser, artifacts: Path
) -> None:
    fixed = False

    @agent(name="fragile", consumes=["web.fragile"])
    async def fragile(item: Item, ctx: Context) -> str:
        if not fixed:
            raise RuntimeError("upstream is down")
        return "recovered"

    async with (
        running(redis_url, fragile) as d,
        client_for(d) as api,
        browsing(browser, d) as page,
    ):
        item = (await api.post("/v1/items", json={"kind": "web.fragile", "max_attempts": 1})).json()

        async def dead() -> bool:
            return (await d.board.get(item["id"])).status == "dead"

        await until(dead)
        retry = f"{d.http_url}/web/items/{item['id']}/retry"
        form = f'<form method="post" action="{retry}"><button>win a prize</button></form>'
        async with attacker_site(form) as evil:
            await page.goto(evil)
            async with page.expect_navigation():
                await page.locator("button").click()  # a cross-site form post
            await expect(page.locator("body")).to_contain_text("refused")
            await page.goto(evil)
            sent = await page.evaluate(
                "url => fetch(url, {method: 'POST', headers: {'HX-Request': 'true'}})"
                ".then(r => r.status, () => 'blocked')",
                retry,
            )
            assert sent == "blocked"  # the header needs a preflight, which the daemon never grants
        assert await dead()

        await page.goto("/web/dead")
        row = page.locator(f'tr[data-id="{item["id"]}"]')
        await expect(row).to_contain_text("upstream is down")
        await shot(page, artifacts, "dead-letters")
        fixed = True
        await row.locator("button.retry").click()
        await expect(page.locator("#flash")).to_contain_text(f"requeued {item['id']}")
        await expect(row).to_have_count(0)  # it left the list by itself: the stream said so
        await page.goto(f"/web/items/{item['id']}")
        await expect(page.locator("#item-status")).to_contain_text("done")
        await expect(page.locator("#result")).to_have_text("recovered")
        await expect(page.locator('#history tr[data-type="requeued"]')).to_have_count(1)
        await expect(page.locator('#history tr[data-type="claimed"]')).to_have_count(2)


async def test_untrusted_text_shows_as_text_and_never_runs(
    redis_url: str, browser: Browser, artifacts: Path
) -> None:
    @agent(name="parrot", consumes=["web.parrot"])
    async def parrot(item: Item, ctx: Context) -> str:
        raise RuntimeError(f"model said {item.payload['text']}")

    async with (
        running(redis_url, parrot) as d,
        client_for(d) as api,
        browsing(browser, d) as page,
    ):
        goal = (await api.post("/v1/items", json={"kind": "web.goal", "payload": EVIL})).json()
        body = {"kind": "web.parrot", "payload": {"text": EVIL}, "parent": goal["id"], "max_attempts": 1}
        parrot_item = (await api.post("/v1/items", json=body)).json()

        async def dead() -> bool:
            return (await d.board.get(parrot_item["id"])).status == "dead"

        await until(dead)
        await page.goto(f"/web/items/{goal['id']}")
        await expect(page.locator("#payload")).to_have_text(EVIL)  # the tags, as text
        await shot(page, artifacts, "untrusted-payload")
        await page.goto(f"/web/items/{parrot_item['id']}")
        await expect(page.locator("#payload")).to_contain_text(EVIL.replace('"', '\\"'))  # inside JSON
        await expect(page.locator("#error")).to_have_text(f"RuntimeError: model said {EVIL}")
        for path in (f"/web/goals/{goal['id']}", "/web/dead", f"/web/items/{parrot_item['id']}"):
            await page.goto(path)
            await expect(page.locator(".err").first).to_contain_text("<script>window.__pwned = 1</script>")
            assert await page.locator("main script, main img").count() == 0
            assert await page.locator("script").count() == 2  # htmx and its SSE extension
            assert await page.evaluate("typeof window.__pwned") == "undefined"


RULES = """\
roles:
  approver: {approve: [pay.*], read: [pay.*], post: [pay.*]}
  viewer: {read: [pay.*]}
  worker: {claim: [pay.*]}
principals:
  alice: [approver]
  bob: [viewer]
  refunder: [worker]
approvals:
  - {kind: pay.refund, timeout_seconds: 3600}
"""


async def test_approvals_are_decided_in_the_browser_as_the_policy_allows(
    redis_url: str, browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    from blackboard import audit

    @agent(name="refunder", consumes=["pay.refund"])
    async def refund(item: Item, ctx: Context) -> dict[str, int]:
        return {"refunded": int(item.payload["amount"])}

    (tmp_path / "p.yaml").write_text(RULES)
    tokens = {"alice": "t-alice", "bob": "t-bob"}
    async with (
        running(redis_url, refund, policies=[tmp_path], api_principals=tokens) as d,
        client_for(d, "t-alice") as api,
        browsing(browser, d) as page,
    ):
        big = (await api.post("/v1/items", json={"kind": "pay.refund", "payload": {"amount": 900}})).json()
        small = (await api.post("/v1/items", json={"kind": "pay.refund", "payload": {"amount": 50}})).json()
        assert big["status"] == small["status"] == "waiting"

        async def log_in(token: str) -> None:
            await page.goto("/web/approvals")
            await expect(page).to_have_url(re.compile(r"/login\?next=/web/approvals$"))
            await shot(page, artifacts, "login")
            await page.get_by_label("API token").fill(token)
            await page.get_by_role("button", name="log in").click()
            await expect(page).to_have_url(re.compile(r"/web/approvals$"))

        await log_in("t-bob")
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        await expect(page.locator("#principal")).to_have_text("bob")
        big_row, small_row = (page.locator(f'tr[data-id="{i["id"]}"]') for i in (big, small))
        await expect(big_row).to_be_visible()
        await big_row.locator("button.approve").click()
        flash = page.locator("#flash .message.error")
        await expect(flash).to_contain_text("PolicyDenied")
        await expect(flash).to_contain_text("'bob'")
        await shot(page, artifacts, "approvals-denied")
        assert (await d.board.get(big["id"])).status == "waiting"

        await page.get_by_role("button", name="log out").click()
        await expect(page).to_have_url(re.compile(r"/login$"))
        await log_in("t-alice")
        await expect(page.locator("#principal")).to_have_text("alice")
        await big_row.locator("input[name=note]").fill("checked the invoice")
        await big_row.locator("button.approve").click()
        await expect(page.locator("#flash")).to_contain_text(f"approved {big['id']}")
        await expect(big_row).to_have_count(0)
        await small_row.locator("button.reject").click()
        await expect(page.locator("#flash .message.error")).to_contain_text("needs a note")
        await small_row.locator("input[name=note]").fill("too small to bother")
        await small_row.locator("button.reject").click()
        await expect(page.locator("#flash")).to_contain_text(f"rejected {small['id']}")
        await expect(small_row).to_have_count(0)
        await expect(page.locator(".empty")).to_contain_text("Nothing waits for approval")
        await shot(page, artifacts, "approvals")

        async def decided() -> bool:
            return (await d.board.get(big["id"])).status == "done"

        await until(decided)
        rejected = await d.board.get(small["id"])
        assert rejected.status == "dead" and "too small to bother" in (rejected.error or "")
        records = {r.op: r for r in await audit.tail(d.board, 50) if r.op in ("approved", "rejected")}
        assert records["approved"].actor == records["rejected"].actor == "alice"


def test_vendored_files_note_their_source() -> None:
    static = Path(auth.__file__).parent / "static"
    note = (static / "VENDORED.md").read_text()
    for name in ("htmx.min.js", "htmx-ext-sse.min.js", "LICENSE.htmx", "LICENSE.htmx-ext-sse"):
        assert (static / name).is_file() and f"`{name}`" in note
    assert "2.0.11" in note and "2.2.4" in note and json.dumps("htmx.org")[1:-1] in note
