"""The board as an MCP server, spoken to with the official SDK's own client over both transports.

`http`: an in-process daemon serves `/mcp` (streamable HTTP) and the SDK's streamable HTTP client
talks to it over real HTTP, on both backends. `stdio`: `blackboard mcp --url --board` runs as a
subprocess spawned by the SDK's stdio client, against a real redis-server, while a daemon runs
in-process on the same board (a subprocess can't reach an in-process memory:// board). Conditions
are waited for, never slept for.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from anyio.abc import TaskStatus
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent, TextResourceContents

from blackboard import agent
from blackboard.context import Context
from blackboard.daemon import Daemon
from blackboard.display import traced
from blackboard.models import Item
from blackboard.settings import Settings
from blackboard.views import ReadView
from tests.conftest import unique_board
from tests.test_http import TOKEN, board_state, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

TOOLS = {"post_goal", "get_item", "wait_for_goal", "goal_tree", "list_kinds", "list_agents", "cancel_goal"}
GOAL_SCHEMA = {
    "type": "object",
    "properties": {"steps": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["steps"],
}
STEP_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


# -- agents: a planner fans a goal out into steps; steps wait at a gate the test opens ----------

gate: dict[str, anyio.Event] = {}


@agent(name="planner", consumes=["plan.goal"], produces=["plan.step"])
async def planner(item: Item, ctx: Context) -> dict[str, int]:
    for i in range(item.payload["steps"]):
        await ctx.post("plan.step", {"n": i})
    return {"steps": item.payload["steps"]}


@agent(name="stepper", consumes=["plan.step"], concurrency=4)
async def stepper(item: Item, ctx: Context) -> int:
    await gate["steps"].wait()  # held until the test has seen the tree grow
    return int(item.payload["n"]) * 10


@pytest.fixture(autouse=True)
def _gate() -> None:
    gate["steps"] = anyio.Event()


# -- harness -----------------------------------------------------------------------------------


@pytest.fixture(params=["http-memory", "http-redis", "stdio-redis"])
def transport(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(transport, board URL): HTTP on both backends, stdio on Redis."""
    kind, backend = request.param.split("-")
    if backend == "memory":
        return kind, f"memory://mcp-{os.getpid()}"
    return kind, str(request.getfixturevalue("redis_url"))


def blackboard_command() -> list[str]:
    script = Path(sys.executable).parent / "blackboard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "blackboard"]


@asynccontextmanager
async def http_session(daemon: Daemon, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    timeout = httpx2.Timeout(30, read=120)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(f"{daemon.http_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def stdio_session(daemon: Daemon, log: Path, *options: str) -> AsyncIterator[ClientSession]:
    command, *args = blackboard_command()
    s = daemon.settings
    params = StdioServerParameters(
        command=command, args=[*args, "mcp", "--url", s.url, "--board", s.board, *options]
    )
    with log.open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@asynccontextmanager
async def mcp_client(
    transport: str, daemon: Daemon, tmp_path: Path, *, token: str | None = None, principal: str | None = None
) -> AsyncIterator[ClientSession]:
    """An SDK client session on `daemon`'s board over `transport`."""
    if transport == "http":
        async with http_session(daemon, token) as session:
            yield session
        return
    options = ["--strict"] if daemon.settings.strict else []
    if principal is not None:
        options += ["--principal", principal]
    async with stdio_session(daemon, tmp_path / "mcp-stderr.log", *options) as session:
        yield session


def data(result: CallToolResult) -> Any:
    assert not result.is_error, text(result)
    return json.loads(text(result))


def text(result: CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


def tool_error(result: CallToolResult, *needles: str) -> str:
    assert result.is_error, text(result)
    message = text(result)
    for needle in needles:
        assert needle in message, message
    return message


def resource_json(contents: Any) -> Any:
    [content] = contents.contents
    assert isinstance(content, TextResourceContents) and content.mime_type == "application/json"
    return json.loads(content.text)


async def with_kinds(daemon: Daemon) -> Daemon:
    await daemon.board.register_kind("plan.goal", GOAL_SCHEMA)
    await daemon.board.register_kind("plan.step", STEP_SCHEMA)
    return daemon


# -- the main flow -----------------------------------------------------------------------------


async def test_a_goal_posted_over_mcp_runs_reports_progress_and_reads_back(
    transport: tuple[str, str], tmp_path: Path
) -> None:
    kind, url = transport
    async with (
        running(url, planner, stepper) as daemon,
        mcp_client(kind, await with_kinds(daemon), tmp_path) as s,
    ):
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        # the kinds, their schemas and consumers are offered in post_goal's description
        described = tools["post_goal"].description or ""
        assert "plan.goal" in described and '"steps"' in described and "planner" in described
        assert set(tools["post_goal"].input_schema["properties"]) >= {"kind", "payload", "priority"}

        goal = data(await s.call_tool("post_goal", {"kind": "plan.goal", "payload": {"steps": 3}}))
        assert goal["kind"] == "plan.goal" and goal["parent"] is None

        progress: list[tuple[float, float | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total))
            if total == 4 and done < 4:  # the tree grew to the planner's 3 steps: let them finish
                gate["steps"].set()

        waited = data(
            await s.call_tool(
                "wait_for_goal", {"id": goal["id"], "timeout": 30}, progress_callback=on_progress
            )
        )
        assert waited["status"] == "done" and waited["items"] == 4 and waited["finished"] == 4
        assert waited["final"]["kind"] == "plan.step" and waited["final"]["status"] == "done"
        # progress arrived while the tree grew, each one higher than the last, ending at 4 of 4
        assert progress and progress[-1] == (4, 4), progress
        assert any(total == 4 and done < 4 for done, total in progress), progress
        assert [d for d, _ in progress] == sorted({d for d, _ in progress}), progress

        tree = data(await s.call_tool("goal_tree", {"id": goal["id"]}))
        assert tree["item"]["id"] == goal["id"] and len(tree["children"]) == 3
        assert {c["item"]["result"] for c in tree["children"]} == {0, 10, 20}
        expected = await traced(ReadView(daemon.board, "http"), goal["id"])
        assert tree == expected and "usage" in tree

        # the same as resources, by URI
        templates = {t.uri_template for t in (await s.list_resource_templates()).resource_templates}
        assert templates == {"blackboard://items/{id}", "blackboard://goals/{id}/tree"}
        assert resource_json(await s.read_resource(f"blackboard://goals/{goal['id']}/tree")) == expected
        item = resource_json(await s.read_resource(f"blackboard://items/{goal['id']}"))
        assert item["status"] == "done" and item["result"] == {"steps": 3}
        assert data(await s.call_tool("get_item", {"id": goal["id"]})) == item

        kinds = {k["kind"]: k for k in data(await s.call_tool("list_kinds", {}))["kinds"]}
        assert kinds["plan.goal"]["schema"] == GOAL_SCHEMA and kinds["plan.goal"]["consumed_by"] == [
            "planner"
        ]
        agents = data(await s.call_tool("list_agents", {}))["agents"]
        assert {a["name"] for a in agents} == {"planner", "stepper"}
        assert all(a["daemon"] == daemon.id and a["live"] for a in agents)


async def test_cancel_goal_cancels_the_goal_and_its_tree(transport: tuple[str, str], tmp_path: Path) -> None:
    kind, url = transport
    async with running(url) as daemon, mcp_client(kind, daemon, tmp_path) as s:  # no agents: it waits
        goal = data(await s.call_tool("post_goal", {"kind": "idle.goal", "payload": {}}))
        assert data(await s.call_tool("cancel_goal", {"id": goal["id"], "reason": "not needed"})) == {
            "cancelled": 1
        }
        item = data(await s.call_tool("get_item", {"id": goal["id"]}))
        assert item["status"] == "cancelled" and item["reason"] == "not needed"
        # a finished tree: waiting returns at once
        assert data(await s.call_tool("wait_for_goal", {"id": goal["id"]}))["status"] == "cancelled"


# -- bad calls ---------------------------------------------------------------------------------


async def test_bad_calls_are_tool_errors_naming_the_problem(
    transport: tuple[str, str], tmp_path: Path
) -> None:
    kind, url = transport
    async with running(url, strict=True) as daemon, mcp_client(kind, await with_kinds(daemon), tmp_path) as s:
        before = await board_state(daemon)
        post = "post_goal"
        tool_error(
            await s.call_tool(post, {"kind": "nope.kind", "payload": {}}), "UnknownKind", "kind:", "strict"
        )
        tool_error(
            await s.call_tool(post, {"kind": "plan.goal", "payload": {"steps": "three"}}),
            "SchemaViolation",
            "payload.steps",
            "integer",
        )
        tool_error(
            await s.call_tool(post, {"kind": "plan.goal", "payload": {}}), "SchemaViolation", "'steps'"
        )
        tool_error(await s.call_tool(post, {"kind": "Not A Kind", "payload": {}}), "InvalidKind", "kind:")
        tool_error(
            await s.call_tool(post, {"kind": "plan.goal", "payload": {"steps": 1}, "priority": 5000}),
            "priority",
        )
        tool_error(await s.call_tool(post, {"payload": {}}), "kind")  # missing argument
        tool_error(await s.call_tool("get_item", {"id": "01NOSUCHITEM0000000000000"}), "ItemNotFound", "id:")
        tool_error(
            await s.call_tool("get_item", {"id": "../etc"}), "InvalidInput", "id:", "expected an item id"
        )
        tool_error(await s.call_tool("goal_tree", {"id": "01NOSUCHITEM0000000000000"}), "ItemNotFound")
        tool_error(await s.call_tool("cancel_goal", {"id": "01NOSUCHITEM0000000000000"}), "ItemNotFound")
        tool_error(await s.call_tool("wait_for_goal", {"id": "01NOSUCHITEM0000000000000"}), "ItemNotFound")
        tool_error(await s.call_tool("wait_for_goal", {"id": "x", "timeout": -1}), "timeout")
        tool_error(await s.call_tool("no_such_tool", {}), "no_such_tool")
        with pytest.raises(MCPError, match="ItemNotFound"):
            await s.read_resource("blackboard://items/01NOSUCHITEM0000000000000")
        with pytest.raises(MCPError, match="ItemNotFound"):
            await s.read_resource("blackboard://goals/01NOSUCHITEM0000000000000/tree")
        assert await board_state(daemon) == before  # nothing of the bad calls was written

        # a goal nobody works on: the wait times out, with what it saw
        goal = data(await s.call_tool(post, {"kind": "plan.goal", "payload": {"steps": 1}}))
        message = tool_error(
            await s.call_tool("wait_for_goal", {"id": goal["id"], "timeout": 0.5}),
            "Timeout",
            "timeout",
            "0 of 1",
        )
        assert goal["id"] in message
        # and the server is still there
        assert data(await s.call_tool("get_item", {"id": goal["id"]}))["status"] == "open"


# -- policy ------------------------------------------------------------------------------------

POLICY = """\
roles:
  api: {post: [ok.*], read: [ok.*]}
  admin: {post: ["*"]}
principals:
  http: [api]
  mcp: [api]
  cli: [admin]
"""


async def test_the_policy_decides_what_an_mcp_caller_may_post_and_read(
    transport: tuple[str, str], tmp_path: Path
) -> None:
    kind, url = transport
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    async with running(url, policies=[tmp_path / "policies"]) as daemon:
        secret = await daemon.board.post("secret.note", {"text": "hidden"}, actor="cli")
        async with mcp_client(kind, daemon, tmp_path) as s:
            principal = "http" if kind == "http" else "mcp"
            before = await board_state(daemon)
            message = tool_error(
                await s.call_tool("post_goal", {"kind": "secret.kind", "payload": {}}),
                "PolicyDenied",
                f"policy denies {principal!r} to post 'secret.kind'",
                "default deny",
            )
            assert "Traceback" not in message
            assert await board_state(daemon) == before  # nothing but the denial's audit record
            goal = data(await s.call_tool("post_goal", {"kind": "ok.goal", "payload": {}}))
            assert (await daemon.board.get(goal["id"])).created_by == principal
            # reads go through the principal's view of the board
            tool_error(await s.call_tool("get_item", {"id": secret.id}), "PolicyDenied", "read 'secret.note'")
            tool_error(await s.call_tool("goal_tree", {"id": secret.id}), "PolicyDenied")
            with pytest.raises(MCPError, match="PolicyDenied"):
                await s.read_resource(f"blackboard://items/{secret.id}")
            assert data(await s.call_tool("get_item", {"id": goal["id"]}))["kind"] == "ok.goal"
            tool_error(
                await s.call_tool("cancel_goal", {"id": goal["id"]}), "PolicyDenied", "cancel 'ok.goal'"
            )
            kinds = data(await s.call_tool("list_kinds", {}))
            assert kinds["principal"] == principal


async def test_each_caller_acts_as_its_own_principal(transport: tuple[str, str], tmp_path: Path) -> None:
    kind, url = transport
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(
        "roles:\n  ops: {post: [ops.*]}\nprincipals:\n  ops-bot: [ops]\n"
    )
    tokens = {"ops-bot": "t-ops"}
    async with running(
        url, policies=[tmp_path / "policies"], api_token=TOKEN, api_principals=tokens
    ) as daemon:
        async with mcp_client(kind, daemon, tmp_path, token="t-ops", principal="ops-bot") as s:
            goal = data(await s.call_tool("post_goal", {"kind": "ops.restart", "payload": {}}))
            assert (await daemon.board.get(goal["id"])).created_by == "ops-bot"
        # the plain token acts as `http`, the stdio default as `mcp`: this policy grants them nothing
        async with mcp_client(kind, daemon, tmp_path, token=TOKEN) as s:
            who = "http" if kind == "http" else "mcp"
            tool_error(
                await s.call_tool("post_goal", {"kind": "ops.restart", "payload": {}}),
                f"policy denies {who!r} to post 'ops.restart'",
            )


# -- the HTTP endpoint's guards ----------------------------------------------------------------

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream"}


async def test_mcp_over_http_needs_the_bearer_token(board_url: str) -> None:
    async with running(board_url, api_token=TOKEN) as daemon:
        async with httpx.AsyncClient(base_url=daemon.http_url or "", timeout=10) as c:
            for headers in ({}, {"authorization": "Bearer wrong"}):
                r = await c.post("/mcp", json=INITIALIZE, headers={**ACCEPT, **headers})
                assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized", r.text
                assert r.headers["www-authenticate"] == 'Bearer realm="blackboard"'
            r = await c.post("/mcp", json=INITIALIZE, headers={**ACCEPT, "authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, r.text
        async with http_session(daemon, TOKEN) as s:
            assert {t.name for t in (await s.list_tools()).tools} == TOOLS


async def test_an_open_daemon_answers_mcp_on_loopback_names_and_json_only(board_url: str) -> None:
    async with (
        running(board_url) as daemon,
        httpx.AsyncClient(base_url=daemon.http_url or "", timeout=10) as c,
    ):
        r = await c.post("/mcp", json=INITIALIZE, headers={**ACCEPT, "host": "evil.example:8420"})
        assert r.status_code == 403 and "loopback" in r.json()["error"]["message"], r.text
        form = {**ACCEPT, "content-type": "text/plain"}
        r = await c.post("/mcp", content=json.dumps(INITIALIZE), headers=form)
        assert r.status_code == 415 and r.json()["error"]["field"] == "content-type", r.text
        r = await c.post("/mcp", json=INITIALIZE, headers={**ACCEPT, "host": "localhost"})
        assert r.status_code == 200, r.text
        assert "/mcp" not in (await c.get("/openapi.json")).json()["paths"]


async def test_a_daemon_stops_while_an_mcp_client_waits_on_it(board_url: str) -> None:
    """The endpoint's session manager runs inside the daemon's HTTP server: stopping the daemon
    ends a wait in flight (the client hears its connection end) instead of hanging on it."""
    settings = Settings(
        url=board_url, board=unique_board(), port=0, reload=False, agents=[], entry_points=False
    )
    daemon = Daemon(settings)
    waiting, stopped, answered = anyio.Event(), anyio.Event(), anyio.Event()
    outcome: list[Any] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        waiting.set()

    async def run_daemon(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await daemon.run(task_status=task_status)
        stopped.set()

    async def wait(s: ClientSession, goal_id: str) -> None:
        try:
            outcome.append(await s.call_tool("wait_for_goal", {"id": goal_id}, progress_callback=on_progress))
        except Exception as e:  # the transport's word for a connection that ended
            outcome.append(e)
        answered.set()

    async with anyio.create_task_group() as tg:
        await tg.start(run_daemon)
        async with http_session(daemon) as s:
            goal = data(await s.call_tool("post_goal", {"kind": "idle.goal", "payload": {}}))
            async with anyio.create_task_group() as clients:
                clients.start_soon(wait, s, goal["id"])
                with anyio.fail_after(10):
                    await waiting.wait()  # the wait is in flight
                daemon.stop()
                with anyio.fail_after(10):
                    await stopped.wait()
                with anyio.fail_after(10):
                    await answered.wait()
    [error] = outcome
    assert isinstance(error, MCPError) and "ended" in str(error), error
