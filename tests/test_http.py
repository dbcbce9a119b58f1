"""The daemon's HTTP API, served by a Daemon running in-process, spoken to with httpx.

Every test runs against both backends (`board_url`): the daemon serves on a free port, the
test talks to it over real HTTP, and conditions are waited for (never slept for).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blackboard import Board, Retry, agent
from blackboard.agents import Agent
from blackboard.context import Context
from blackboard.daemon import Daemon, check_bind
from blackboard.errors import InvalidInput
from blackboard.models import Item
from blackboard.settings import Settings
from tests.conftest import unique_board

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

TOKEN = "s3cret"
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


# -- harness ---------------------------------------------------------------------------------


@asynccontextmanager
async def running(board_url: str, *agents: Agent, **overrides: Any) -> AsyncIterator[Daemon]:
    """A daemon on a fresh board, serving HTTP on a free port, stopped on the way out."""
    fields: dict[str, Any] = {
        "url": board_url,
        "board": unique_board(),
        "port": 0,
        "reload": False,
        "agents": [],
        "entry_points": False,
        "grace": 5.0,
        "sweep": 1.0,
        **overrides,
    }
    daemon = Daemon(Settings(**fields), agents=list(agents))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert daemon.http_url is not None
        try:
            yield daemon
        finally:
            daemon.stop()


@asynccontextmanager
async def client_for(daemon: Daemon, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=daemon.http_url or "", headers=headers, timeout=10) as c:
        yield c


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy; that value is returned."""
    with anyio.fail_after(timeout):
        while True:
            got = await check()
            if got:
                return got
            await anyio.sleep(0.02)


def assert_error(
    r: httpx.Response, status: int, field: str | None, type_: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"type", "field", "message"}
    assert err["field"] == field, err
    assert isinstance(err["message"], str) and err["message"]
    if type_ is not None:
        assert err["type"] == type_, err
    return dict(err)


async def board_state(daemon: Daemon) -> tuple[Any, ...]:
    """Everything a bad request must leave untouched: counts, items, events, posted counter."""
    stats = (await daemon.board.stats()).model_dump(mode="json")
    items = (await daemon.board.query(limit=10_000)).model_dump(mode="json")
    posted = sum(
        s.value for fam in daemon.metrics.posted.collect() for s in fam.samples if s.name.endswith("_total")
    )
    return stats, items, await daemon.board.last_event_id(), posted


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- agents used by the tests ----------------------------------------------------------------


@agent(name="planner", consumes=["plan.goal"], produces=["plan.step"])
async def planner(item: Item, ctx: Context) -> dict[str, int]:
    for i in range(3):
        await ctx.post("plan.step", {"n": i})
    return {"steps": 3}


@agent(name="stepper", consumes=["plan.step"])
async def stepper(item: Item, ctx: Context) -> int:
    return int(item.payload["n"]) * 10


@agent(name="worker", consumes=["job"], concurrency=4)
async def worker(item: Item, ctx: Context) -> str:
    mode = item.payload["mode"]
    if mode == "boom":
        raise RuntimeError("handler blew up")
    if mode == "flaky" and item.attempts == 1:
        raise Retry(0.01, "try again")
    return "ok"


# -- posting and reading ---------------------------------------------------------------------


async def test_post_returns_201_with_the_stored_item_and_get_reads_it(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        r = await c.post(
            "/v1/items",
            json={
                "kind": "note.text",
                "payload": {"text": "hi"},
                "priority": 7,
                "tags": ["a", "b"],
                "max_attempts": 2,
                "idempotency_key": "k1",
            },
        )
        assert r.status_code == 201, r.text
        item = r.json()
        assert ULID_RE.match(item["id"])
        assert item["kind"] == "note.text" and item["payload"] == {"text": "hi"}
        assert item["status"] == "open" and item["priority"] == 7 and item["max_attempts"] == 2
        assert item["tags"] == ["a", "b"] and item["root"] == item["id"] and item["created_by"] == "http"
        assert (await d.board.get(item["id"])).model_dump(mode="json") == item

        got = await c.get(f"/v1/items/{item['id']}")
        assert got.status_code == 200 and got.json() == item

        again = await c.post(
            "/v1/items", json={"kind": "note.text", "payload": {"text": "x"}, "idempotency_key": "k1"}
        )
        assert again.status_code == 201 and again.json()["id"] == item["id"]  # the first one, nothing new
        assert (await d.board.stats()).kinds["note.text"].by_status == {"open": 1}

        child = await c.post("/v1/items", json={"kind": "note.reply", "parent": item["id"]})
        assert child.status_code == 201
        assert child.json()["parent"] == item["id"] and child.json()["root"] == item["id"]
        assert child.json()["payload"] is None and child.json()["depth"] == 1

        waiter = await c.post("/v1/items", json={"kind": "note.join", "after": [item["id"]], "delay": 5})
        assert waiter.status_code == 201 and waiter.json()["status"] == "waiting"
        assert waiter.json()["after"] == [item["id"]]


async def test_query_filters_and_paging(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        ids = [
            (await c.post("/v1/items", json={"kind": "page.item", "payload": i})).json()["id"]
            for i in range(5)
        ]
        other = (await c.post("/v1/items", json={"kind": "page.other"})).json()["id"]
        child = (await c.post("/v1/items", json={"kind": "page.item", "parent": ids[0]})).json()["id"]
        await c.post(f"/v1/items/{ids[4]}/cancel")

        seen, cursor, pages = [], None, 0
        while True:
            params: dict[str, Any] = {
                "kind": "page.item",
                "limit": 2,
                **({"cursor": cursor} if cursor else {}),
            }
            r = await c.get("/v1/items", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            assert set(page) == {"items", "cursor"} and len(page["items"]) <= 2
            seen += [it["id"] for it in page["items"]]
            pages += 1
            cursor = page["cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted([*ids, child]) and len(seen) == len(set(seen)) == 6
        assert pages >= 3

        def got(r: httpx.Response) -> set[str]:
            assert r.status_code == 200, r.text
            return {it["id"] for it in r.json()["items"]}

        assert got(await c.get("/v1/items", params={"status": "cancelled"})) == {ids[4]}
        assert got(await c.get("/v1/items", params={"status": "open", "kind": "page.item"})) == {
            *ids[:4],
            child,
        }
        assert got(await c.get("/v1/items", params={"kind": "page.other"})) == {other}
        assert got(await c.get("/v1/items", params={"root": ids[0]})) == {ids[0], child}
        assert got(await c.get("/v1/items", params={"root": ids[0], "status": "open", "limit": 1})) <= {
            ids[0],
            child,
        }
        assert got(await c.get("/v1/items", params={"parent": ids[0]})) == {child}
        assert got(await c.get("/v1/items")) == {*ids, other, child}
        assert len(got(await c.get("/v1/items", params={"limit": 3}))) == 3


async def test_goal_tree_after_an_agent_fanned_out(board_url: str) -> None:
    async with running(board_url, planner, stepper) as d, client_for(d) as c:
        goal = (await c.post("/v1/items", json={"kind": "plan.goal", "payload": {"q": "why"}})).json()

        async def finished() -> dict[str, Any] | None:
            r = await c.get(f"/v1/goals/{goal['id']}/tree")
            assert r.status_code == 200, r.text
            tree = r.json()
            kids = tree["children"]
            done = tree["item"]["status"] == "done" and len(kids) == 3
            return tree if done and all(k["item"]["status"] == "done" for k in kids) else None

        tree = await until(finished)
        assert set(tree) == {"item", "children", "usage"}
        assert tree["usage"]["calls"] == 0  # plain Python agents make no model calls
        usage = await c.get(f"/v1/goals/{tree['children'][0]['item']['id']}/usage")  # any item: its goal
        assert usage.status_code == 200 and usage.json()["calls"] == 0
        assert tree["item"]["id"] == goal["id"] and tree["item"]["result"] == {"steps": 3}
        kids = tree["children"]
        # (siblings posted in one completion share created_at, then sort by id: any order)
        assert sorted((k["item"]["payload"]["n"], k["item"]["result"]) for k in kids) == [
            (0, 0),
            (1, 10),
            (2, 20),
        ]
        for k in kids:
            assert k["children"] == []
            assert k["item"]["parent"] == goal["id"] and k["item"]["root"] == goal["id"]
            assert k["item"]["kind"] == "plan.step" and k["item"]["handled_by"] == "stepper"

        # A child's tree is its own subtree.
        sub = (await c.get(f"/v1/goals/{kids[1]['item']['id']}/tree")).json()
        assert sub == kids[1] | {"usage": tree["usage"]}  # the usage of the goal it belongs to
        r = await c.get("/v1/items", params={"root": goal["id"], "kind": "plan.step", "status": "done"})
        assert len(r.json()["items"]) == 3


async def test_cancel_over_http(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        goal = (await c.post("/v1/items", json={"kind": "task.goal"})).json()
        kid = (await c.post("/v1/items", json={"kind": "task.step", "parent": goal["id"]})).json()
        r = await c.post(f"/v1/items/{goal['id']}/cancel")
        assert r.status_code == 200 and r.json() == {"cancelled": 2}
        for i in (goal["id"], kid["id"]):
            item = (await c.get(f"/v1/items/{i}")).json()
            assert item["status"] == "cancelled" and item["reason"] == "cancelled over HTTP"
        again = await c.post(f"/v1/items/{goal['id']}/cancel")
        assert again.status_code == 200 and again.json() == {"cancelled": 0}


async def test_stats(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        empty = (await c.get("/v1/stats")).json()
        assert empty == {"board": d.settings.board, "kinds": {}, "dead_letters": 0}
        for _ in range(3):
            await c.post("/v1/items", json={"kind": "s.a"})
        b = (await c.post("/v1/items", json={"kind": "s.b"})).json()
        await c.post(f"/v1/items/{b['id']}/cancel")
        r = await c.get("/v1/stats")
        assert r.status_code == 200
        stats = r.json()
        assert stats["board"] == d.settings.board and stats["dead_letters"] == 0
        assert stats["kinds"]["s.a"]["by_status"] == {"open": 3} and stats["kinds"]["s.a"]["ready"] == 3
        assert stats["kinds"]["s.b"]["by_status"] == {"cancelled": 1} and stats["kinds"]["s.b"]["ready"] == 0
        assert stats == (await d.board.stats()).model_dump(mode="json")


async def test_agents_lists_this_daemon_and_its_agents(board_url: str) -> None:
    async with running(board_url, planner, stepper, presence_interval=0.1) as d, client_for(d) as c:

        async def listed() -> dict[str, Any] | None:
            r = await c.get("/v1/agents")
            assert r.status_code == 200, r.text
            mine = [x for x in r.json() if x["id"] == d.id]
            return mine[0] if mine and mine[0]["http"] == d.http_url and mine[0]["ready"] else None

        me = await until(listed)
        assert me["live"] is True and me["plugin_errors"] == {}
        by_name = {a["name"]: a for a in me["agents"]}
        assert set(by_name) == {"planner", "stepper"}
        assert by_name["planner"]["consumes"] == ["plan.goal"] and by_name["planner"]["produces"] == [
            "plan.step"
        ]
        assert by_name["stepper"]["source"] == "(programmatic)"

        # The heartbeat keeps the record current: completions show up in the next beats.
        await c.post("/v1/items", json={"kind": "plan.goal"})

        async def counted() -> bool:
            mine = [x for x in (await c.get("/v1/agents")).json() if x["id"] == d.id]
            return bool(mine) and {a["name"]: a["completed"] for a in mine[0]["agents"]} == {
                "planner": 1,
                "stepper": 3,
            }

        await until(counted)


# -- bad requests: 4xx JSON naming the field, and nothing written -----------------------------

BAD_POSTS: list[tuple[str, Any, int, str | None, str | None]] = [
    # (case, body (bytes = raw), status, field, error type)
    ("malformed json", b'{"kind": "x",', 422, "body", "InvalidInput"),
    ("empty body", b"", 422, "body", "InvalidInput"),
    ("array body", [{"kind": "x"}], 422, "body", "InvalidInput"),
    ("string body", "x", 422, "body", "InvalidInput"),
    ("null body", None, 422, "body", "InvalidInput"),
    ("missing kind", {"payload": {"a": 1}}, 422, "kind", "InvalidInput"),
    ("invalid kind", {"kind": "Not A Kind"}, 422, "kind", "InvalidKind"),
    ("empty kind", {"kind": ""}, 422, "kind", "InvalidKind"),
    ("non-string kind", {"kind": 5}, 422, "kind", "InvalidInput"),
    ("unknown field", {"kind": "x.y", "colour": "red"}, 422, "colour", "InvalidInput"),
    ("id is not postable", {"kind": "x.y", "id": "A1"}, 422, "id", "InvalidInput"),
    ("negative priority", {"kind": "x.y", "priority": -1}, 422, "priority", "InvalidInput"),
    ("priority too high", {"kind": "x.y", "priority": 1001}, 422, "priority", "InvalidInput"),
    ("priority not a number", {"kind": "x.y", "priority": "high"}, 422, "priority", "InvalidInput"),
    ("negative delay", {"kind": "x.y", "delay": -1}, 422, "delay", "InvalidInput"),
    ("zero max_attempts", {"kind": "x.y", "max_attempts": 0}, 422, "max_attempts", "InvalidInput"),
    (
        "schema violation",
        {"kind": "typed.doc", "payload": {"text": 5}},
        422,
        "payload.text",
        "SchemaViolation",
    ),
    ("schema: missing key", {"kind": "typed.doc", "payload": {}}, 422, "payload", "SchemaViolation"),
    ("unknown after", {"kind": "x.y", "after": ["01J0000000000000000000ZZZZ"]}, 422, "after", "UnknownItem"),
    ("unknown parent", {"kind": "x.y", "parent": "01J0000000000000000000ZZZZ"}, 422, "parent", "UnknownItem"),
    ("malformed after id", {"kind": "x.y", "after": ["no spaces"]}, 422, "after[0]", "InvalidInput"),
    ("after listed twice", {"kind": "x.y", "after": ["A1", "A1"]}, 422, "after", "InvalidInput"),
    ("payload too large", {"kind": "x.y", "payload": "x" * (1 << 20)}, 422, "payload", "PayloadTooLarge"),
]


async def test_bad_posts_get_422_naming_the_field_and_write_nothing(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        await d.board.register_kind(
            "typed.doc",
            {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        )
        existing = (await c.post("/v1/items", json={"kind": "x.y"})).json()
        before = await board_state(d)
        for case, body, status, field, type_ in BAD_POSTS:
            if isinstance(body, bytes):
                r = await c.post("/v1/items", content=body, headers={"content-type": "application/json"})
            else:
                r = await c.post("/v1/items", json=body)
            try:
                assert_error(r, status, field, type_)
            except AssertionError as e:
                raise AssertionError(f"{case}: {e}") from None
            assert await board_state(d) == before, case
        # ...and the board still takes good posts afterwards.
        ok = await c.post(
            "/v1/items", json={"kind": "typed.doc", "payload": {"text": "fine"}, "after": [existing["id"]]}
        )
        assert ok.status_code == 201 and ok.json()["status"] == "waiting"


async def test_body_over_the_limit_is_refused(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        before = await board_state(d)
        big = json.dumps({"kind": "x.y", "payload": "x" * (3 << 20)}).encode()
        assert_error(await c.post("/v1/items", content=big), 422, "body")
        assert await board_state(d) == before


async def test_bad_queries_and_ids(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        item = (await c.post("/v1/items", json={"kind": "q.item"})).json()
        before = await board_state(d)
        bad_queries = [
            ({"limit": "abc"}, "limit"),
            ({"limit": "0"}, "limit"),
            ({"limit": "-5"}, "limit"),
            ({"limit": "100000"}, "limit"),
            ({"status": "bogus"}, "status"),
            ({"kind": "Bad Kind"}, "kind"),
            ({"colour": "red"}, "colour"),
            ({"kind": "q.item", "sort": "id"}, "sort"),
        ]
        for params, field in bad_queries:
            assert_error(await c.get("/v1/items", params=params), 422, field)

        missing = "01J0000000000000000000ZZZZ"
        for method, path in [
            ("GET", f"/v1/items/{missing}"),
            ("POST", f"/v1/items/{missing}/cancel"),
            ("GET", f"/v1/goals/{missing}/tree"),
        ]:
            err = assert_error(await c.request(method, path), 404, None, "ItemNotFound")
            assert missing in err["message"]

        for method, path in [
            ("GET", "/v1/items/bad%20id"),
            ("POST", "/v1/items/bad%20id/cancel"),
            ("GET", "/v1/goals/bad%20id/tree"),
            ("GET", "/v1/items/" + "a" * 129),
        ]:
            assert_error(await c.request(method, path), 422, "id")

        assert_error(await c.get("/v1/nothing-here"), 404, None, "HTTPException")
        assert_error(await c.delete(f"/v1/items/{item['id']}"), 405, None, "HTTPException")
        assert await board_state(d) == before
        assert (await c.get(f"/v1/items/{item['id']}")).json()["status"] == "open"


# -- auth, binding, health -----------------------------------------------------------------


async def test_token_guards_every_v1_route(board_url: str) -> None:
    async with running(board_url, api_token=TOKEN) as d:
        item = await d.board.post("auth.item")
        routes = [
            ("POST", "/v1/items", {"kind": "auth.item"}, 201),
            ("GET", "/v1/items", None, 200),
            ("GET", f"/v1/items/{item.id}", None, 200),
            ("GET", f"/v1/goals/{item.id}/tree", None, 200),
            ("GET", "/v1/stats", None, 200),
            ("GET", "/v1/agents", None, 200),
            ("POST", f"/v1/items/{item.id}/retry", None, 409),  # open, not dead
            ("POST", f"/v1/items/{item.id}/cancel", None, 200),
            ("GET", "/v1/nothing-here", None, 404),
        ]
        async with client_for(d) as anon, client_for(d, "wrong") as wrong, client_for(d, TOKEN) as ok:
            basic = {"authorization": f"Basic {TOKEN}"}
            before = await board_state(d)
            for method, path, body, _ in routes:
                for c, headers in [(anon, {}), (wrong, {}), (anon, basic), (anon, {"authorization": TOKEN})]:
                    r = await c.request(method, path, json=body, headers=headers)
                    assert_error(r, 401, None, "Unauthorized")
                    assert r.headers["www-authenticate"].startswith("Bearer")
            async with anon.stream("GET", "/v1/events") as r:
                assert r.status_code == 401
            async with wrong.stream("GET", "/v1/events") as r:
                assert r.status_code == 401
            assert await board_state(d) == before
            for method, path, body, status in routes:
                r = await ok.request(method, path, json=body)
                assert r.status_code == status, (path, r.text)
            async with ok.stream("GET", "/v1/events") as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
            assert (await d.board.get(item.id)).status == "cancelled"

            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                r = await anon.get(path)
                assert r.status_code == 200, (path, r.text)


async def test_an_open_daemon_refuses_what_another_website_could_send(board_url: str) -> None:
    """No token: a cross-site form can't post (it can't send application/json without a
    preflight), and a rebound DNS name can't reach the API (only loopback host names)."""
    async with running(board_url) as daemon, client_for(daemon) as c:
        form = await c.post("/v1/items", content=b'{"kind": "x.y"}', headers={"content-type": "text/plain"})
        assert assert_error(form, 422, "content-type")["message"].endswith("got 'text/plain'")
        none = await c.post("/v1/items", content=b'{"kind": "x.y"}', headers={"content-type": ""})
        assert_error(none, 422, "content-type")
        rebound = {"host": f"evil.example:{daemon.http_url.rsplit(':', 1)[1]}"}  # type: ignore[union-attr]
        r = await c.post("/v1/items", json={"kind": "x.y"}, headers=rebound)
        assert r.status_code == 403 and "loopback names only" in r.text
        assert (await c.get("/v1/stats", headers=rebound)).status_code == 403
        assert (await c.get("/metrics", headers=rebound)).status_code == 200  # probes stay open
        assert (await daemon.board.query(kind="x.y")).items == ()  # none of it was written
        for host in ("localhost", "127.0.0.1", "[::1]"):
            assert (await c.get("/v1/stats", headers={"host": host})).status_code == 200, host
    async with running(board_url, api_token=TOKEN) as daemon, client_for(daemon, TOKEN) as c:
        r = await c.get("/v1/stats", headers={"host": "blackboard.internal"})  # a token: any name
        assert r.status_code == 200, r.text


async def test_check_bind_needs_a_token_beyond_loopback() -> None:
    with pytest.raises(InvalidInput) as e:
        check_bind(Settings(host="0.0.0.0", agents=[]))
    assert e.value.field == "host" and "0.0.0.0" in str(e.value)
    with pytest.raises(InvalidInput, match="host"):
        check_bind(Settings(host="192.168.1.10", agents=[]))
    check_bind(Settings(host="0.0.0.0", api_token=TOKEN, agents=[]))
    check_bind(Settings(host="0.0.0.0", http=False, agents=[]))
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(Settings(host=host, agents=[]))


async def test_health_readiness_and_openapi(board_url: str) -> None:
    gate = anyio.Event()
    started = anyio.Event()

    @agent(name="slow", consumes=["slow.job"])
    async def slow(item: Item, ctx: Context) -> str:
        started.set()
        await gate.wait()
        return "finished"

    async with running(board_url, slow) as d, client_for(d) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "alive", "daemon": d.id}
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json() == {"ready": True, "redis": True, "agents": 1}

        r = await c.get("/openapi.json")
        assert r.status_code == 200
        doc = json.loads(r.text)
        assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "blackboard"
        assert {"get", "post"} <= set(doc["paths"]["/v1/items"])
        assert "/v1/goals/{id}/tree" in doc["paths"] and "/openapi.json" not in doc["paths"]

        # Draining: no longer ready (load balancers stop sending), still alive, handler finishes.
        job = (await c.post("/v1/items", json={"kind": "slow.job"})).json()
        with anyio.fail_after(10):
            await started.wait()
        d.stop()

        async def unready() -> httpx.Response | None:
            r = await c.get("/readyz")
            return r if r.status_code == 503 else None

        r = await until(unready)
        assert r.json() == {"ready": False, "redis": True, "agents": 1}
        assert (await c.get("/healthz")).status_code == 200
        gate.set()
    # The daemon let the in-flight handler finish before it stopped.
    async with await Board.connect(board_url, board=d.settings.board) as board:
        item = await board.get(job["id"])
        assert item.status == "done" and item.result == "finished"


# -- server-sent events ----------------------------------------------------------------------


async def read_events(
    lines: AsyncIterator[str], want: Callable[[str, dict[str, Any]], bool], timeout: float = 10.0
) -> list[tuple[str, dict[str, Any]]]:
    """SSE events (type, data) from a stream's `lines` up to and including the first `want` accepts."""
    seen: list[tuple[str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    with anyio.fail_after(timeout):
        async for line in lines:
            if line.startswith(":"):
                continue  # comment / ping
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                ev = (fields.get("event", "message"), json.loads(fields["data"]))
                assert ev[1]["cursor"] == fields["id"]
                seen.append(ev)
                if want(*ev):
                    return seen
            fields = {}
    raise AssertionError(f"stream ended before the wanted event; saw {seen}")


async def test_events_stream_posted_and_done(board_url: str) -> None:
    async with running(board_url, stepper) as d, client_for(d) as c, c.stream("GET", "/v1/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        item = (await c.post("/v1/items", json={"kind": "plan.step", "payload": {"n": 4}})).json()
        seen = await read_events(
            stream.aiter_lines(), lambda t, data: t == "done" and data["id"] == item["id"]
        )
        posted = [data for t, data in seen if t == "posted" and data["id"] == item["id"]]
        assert len(posted) == 1
        assert posted[0]["kind"] == "plan.step" and posted[0]["status"] == "open"
        assert posted[0]["root"] == item["id"]
        types = [t for t, data in seen if data["id"] == item["id"]]
        assert types.index("posted") < types.index("claimed") < types.index("done")


async def test_events_resume_since_and_filter_by_root(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        first = (await c.post("/v1/items", json={"kind": "ev.a"})).json()
        async with c.stream("GET", "/v1/events", params={"since": "0-0"}) as stream:
            seen = await read_events(
                stream.aiter_lines(), lambda t, data: t == "posted" and data["id"] == first["id"]
            )
            assert seen[-1][1]["kind"] == "ev.a"

        goal = (await c.post("/v1/items", json={"kind": "ev.goal"})).json()
        async with c.stream("GET", "/v1/events", params={"root": goal["id"]}) as stream:
            await c.post("/v1/items", json={"kind": "ev.other"})
            kid = (await c.post("/v1/items", json={"kind": "ev.kid", "parent": goal["id"]})).json()
            seen = await read_events(stream.aiter_lines(), lambda t, data: data["id"] == kid["id"])
            assert [data["kind"] for _, data in seen] == ["ev.kid"]


async def test_bad_event_stream_params_are_refused_before_streaming(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        for params, field in [
            ({"since": "bogus"}, "since"),
            ({"since": "12-x"}, "since"),
            ({"since": "1" * 25}, "since"),
            ({"root": "bad id"}, "root"),
            ({"colour": "red"}, "colour"),
        ]:
            with anyio.fail_after(10):
                assert_error(await c.get("/v1/events", params=params), 422, field)
        # The daemon is fine afterwards, and a valid cursor still streams.
        item = (await c.post("/v1/items", json={"kind": "ev.a"})).json()
        async with c.stream("GET", "/v1/events", params={"since": "0"}) as stream:
            await read_events(stream.aiter_lines(), lambda t, data: data["id"] == item["id"])


async def test_stopping_the_daemon_ends_open_event_streams(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c, c.stream("GET", "/v1/events") as stream:
        item = (await c.post("/v1/items", json={"kind": "ev.a"})).json()
        lines = stream.aiter_lines()
        await read_events(lines, lambda t, data: data["id"] == item["id"])
        d.stop()
        with anyio.fail_after(10):  # the stream ends (the connection closes); it doesn't hang
            with pytest.raises(httpx.RemoteProtocolError):
                async for _ in lines:
                    pass


async def test_daemons_one_after_another_in_one_process_all_serve(board_url: str) -> None:
    """A stopped daemon leaves nothing behind that stops the next one's HTTP server answering."""
    for _ in range(3):
        async with running(board_url) as d, client_for(d) as c:
            assert (await c.get("/healthz")).json()["daemon"] == d.id
            assert (await c.post("/v1/items", json={"kind": "seq.item"})).status_code == 201


# -- metrics ---------------------------------------------------------------------------------


async def test_metrics_count_a_known_workload(board_url: str) -> None:
    async with running(board_url, worker, presence_interval=0.1) as d, client_for(d) as c:
        base = scrape((await c.get("/metrics")).text)
        ids = []
        for mode, attempts in [("ok", 3)] * 5 + [("boom", 1)] * 2 + [("flaky", 3)]:
            r = await c.post(
                "/v1/items", json={"kind": "job", "payload": {"mode": mode}, "max_attempts": attempts}
            )
            assert r.status_code == 201
            ids.append(r.json()["id"])

        async def settled() -> bool:
            s = await d.board.stats()
            return s.total("done") == 6 and s.total("dead") == 2 and d.in_flight == 0

        await until(settled)
        r = await c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        now = scrape(r.text)

        def moved(name: str, **labels: str) -> float:
            return sample(now, name, **labels) - sample(base, name, **labels)

        ka = {"kind": "job", "agent": "worker"}
        assert moved("blackboard_items_posted_total", kind="job") == 8
        assert moved("blackboard_items_claimed_total", **ka) == 9  # 8 items, the flaky one twice
        assert moved("blackboard_items_completed_total", **ka) == 6
        assert moved("blackboard_items_failed_total", **ka) == 3
        assert moved("blackboard_items_dead_total", **ka) == 2
        assert moved("blackboard_retries_total", **ka) == 1
        assert moved("blackboard_fencing_rejections_total", **ka) == 0
        assert moved("blackboard_handler_duration_seconds_count", **ka) == 9
        assert moved("blackboard_pickup_latency_seconds_count", kind="job") == 9
        assert sample(now, "blackboard_in_flight", agent="worker") == 0
        assert sample(now, "blackboard_agents_loaded") == 1
        assert sample(now, "blackboard_ready") == 1

        # Board depth is the board's own counts, refreshed every presence beat.
        board = d.settings.board

        async def depth() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            s = scrape((await c.get("/metrics")).text)
            done = sample(s, "blackboard_items", board=board, kind="job", status="done")
            dead = sample(s, "blackboard_items", board=board, kind="job", status="dead")
            return s if (done, dead) == (6, 2) else None

        last = await until(depth)
        for status in ("open", "claimed", "waiting", "failed", "cancelled"):
            assert sample(last, "blackboard_items", board=board, kind="job", status=status) == 0
        assert sample(last, "blackboard_live_daemons", board=board) >= 1

        # Bounded labels only: no label value is an item id.
        for _, labels in last:
            for _, value in labels:
                assert value not in ids and not ULID_RE.match(value), value
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                assert not set(s.labels) & {"id", "item", "item_id"}


async def test_a_post_the_policy_denies_is_403_and_writes_nothing(board_url: str, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("roles:\n  api: {post: [ok.*]}\nprincipals:\n  http: [api]\n")
    async with running(board_url, policies=[tmp_path]) as daemon, client_for(daemon) as c:
        before = await board_state(daemon)
        r = await c.post("/v1/items", json={"kind": "secret.kind", "payload": {}})
        err = assert_error(r, 403, None, "PolicyDenied")
        assert (
            "policy denies 'http' to post 'secret.kind'" in err["message"]
            and "default deny" in err["message"]
        )
        assert await board_state(daemon) == before
        r = await c.post("/v1/items", json={"kind": "ok.kind", "payload": {}})
        assert r.status_code == 201, r.text


async def test_reads_over_http_follow_the_policy(board_url: str, tmp_path: Path) -> None:
    rules = "roles:\n  api: {post: ['*'], read: ['doc.*']}\nprincipals:\n  http: [api]\n  cli: [api]\n"
    (tmp_path / "p.yaml").write_text(rules)
    async with running(board_url, policies=[tmp_path]) as daemon, client_for(daemon) as c:
        r = await c.post("/v1/items", json={"kind": "doc.open", "payload": {}})
        assert r.status_code == 201, (r.status_code, r.text)
        open_id = r.json()["id"]
        r = await c.post("/v1/items", json={"kind": "doc.hr", "payload": {}, "visibility": ["hr"]})
        hr_id = r.json()["id"]
        other = await daemon.board.post("note.x", {}, actor="cli")
        assert (await c.get(f"/v1/items/{open_id}")).status_code == 200
        assert_error(await c.get(f"/v1/items/{hr_id}"), 403, None, "PolicyDenied")  # no role sees hr
        assert_error(await c.get(f"/v1/items/{other.id}"), 403, None, "PolicyDenied")  # no read grant
        listed = (await c.get("/v1/items")).json()["items"]
        assert [it["id"] for it in listed] == [open_id]


async def test_each_api_token_acts_as_its_own_principal(board_url: str, tmp_path: Path) -> None:
    from blackboard import audit

    (tmp_path / "p.yaml").write_text("roles:\n  ops: {post: [ops.*]}\nprincipals:\n  ops-bot: [ops]\n")
    tokens = {"ops-bot": "t-ops"}
    async with running(board_url, policies=[tmp_path], api_token=TOKEN, api_principals=tokens) as daemon:
        async with client_for(daemon, "t-ops") as bot, client_for(daemon, TOKEN) as plain:
            r = await bot.post("/v1/items", json={"kind": "ops.restart", "payload": {}})
            assert r.status_code == 201, r.text
            item = await daemon.board.get(r.json()["id"])
            assert item.created_by == "ops-bot"
            [record] = [rec for rec in await audit.tail(daemon.board, 5) if rec.op == "posted"]
            assert record.actor == "ops-bot"
            # the plain token is the `http` principal, which this policy grants nothing
            assert_error(
                await plain.post("/v1/items", json={"kind": "ops.restart", "payload": {}}), 403, None
            )
        async with client_for(daemon, "wrong") as nobody:
            assert (await nobody.post("/v1/items", json={"kind": "ops.x", "payload": {}})).status_code == 401


# -- retrying dead letters -------------------------------------------------------------------


async def dead_letter(board: Board, kind: str = "retry.job", actor: str | None = None) -> Item:
    """An item of `kind` dead-lettered by a failed claim."""
    item = await board.post(kind, {"n": 1}, max_attempts=1, actor=actor)
    [claim] = await board.claim("tester", [kind])
    assert await board.fail(claim, "it broke", retry=False) == "dead"
    return await board.get(item.id)


async def test_retry_requeues_a_dead_letter(board_url: str) -> None:
    async with running(board_url) as d, client_for(d) as c:
        dead = await dead_letter(d.board)
        assert dead.status == "dead" and dead.attempts == 1
        r = await c.post(f"/v1/items/{dead.id}/retry")
        assert r.status_code == 200 and r.json() == {"requeued": 1}, r.text
        back = await d.board.get(dead.id)
        assert back.status == "open" and back.attempts == 0
        assert [it.id for it in (await d.board.dead_letters()).items] == []

        before = await board_state(d)
        assert_error(await c.post(f"/v1/items/{dead.id}/retry"), 409, None, "InvalidState")  # not dead now
        assert_error(await c.post("/v1/items/01J0000000000000000000ZZZZ/retry"), 404, None, "ItemNotFound")
        assert_error(await c.post("/v1/items/bad%20id/retry"), 422, "ids[0]", "InvalidInput")
        assert await board_state(d) == before

        doc = (await c.get("/openapi.json")).json()
        assert "post" in doc["paths"]["/v1/items/{id}/retry"]


async def test_retry_over_http_follows_the_policy(board_url: str, tmp_path: Path) -> None:
    from blackboard import audit

    rules = (
        "roles:\n  ops: {post: [ops.*], read: ['*']}\n  setup: {post: ['*'], claim: ['*']}\n"
        "principals:\n  ops-bot: [ops]\n  cli: [setup]\n  tester: [setup]\n"
    )
    (tmp_path / "p.yaml").write_text(rules)
    tokens = {"ops-bot": "t-ops"}
    async with running(board_url, policies=[tmp_path], api_token=TOKEN, api_principals=tokens) as d:
        ops, other = (
            await dead_letter(d.board, "ops.job", "cli"),
            await dead_letter(d.board, "misc.job", "cli"),
        )
        async with client_for(d, "t-ops") as bot, client_for(d, TOKEN) as plain, client_for(d) as anon:
            assert_error(await anon.post(f"/v1/items/{ops.id}/retry"), 401, None, "Unauthorized")
            err = assert_error(await plain.post(f"/v1/items/{ops.id}/retry"), 403, None, "PolicyDenied")
            assert "'http'" in err["message"]  # the plain token acts as http, granted nothing
            assert_error(await bot.post(f"/v1/items/{other.id}/retry"), 403, None, "PolicyDenied")
            assert (await d.board.get(ops.id)).status == "dead" and (
                await d.board.get(other.id)
            ).status == "dead"
            r = await bot.post(f"/v1/items/{ops.id}/retry")
            assert r.status_code == 200 and r.json() == {"requeued": 1}, r.text
        assert (await d.board.get(ops.id)).status == "open"
        [record] = [rec for rec in await audit.tail(d.board, 20) if rec.op == "requeued"]
        assert record.actor == "ops-bot" and record.id == ops.id
