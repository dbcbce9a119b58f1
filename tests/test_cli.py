"""The `blackboard` command: every subcommand through click's CliRunner (in process, where a
`memory://NAME` board is shared with the test), a few as real processes against redis-server,
and `init` + `run` as a user would use them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
import structlog
from typer.testing import CliRunner, Result

from blackboard import Board, Context, Item, NewItem, Status, agent, presence
from blackboard.agents import Agent
from blackboard.cli import app
from blackboard.daemon import Daemon
from blackboard.scaffold import EXAMPLE_AGENT
from blackboard.settings import Settings, load_settings
from tests.conftest import unique_board

T = TypeVar("T")
ROOT = Path(__file__).parent.parent
ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


# -- helpers ----------------------------------------------------------------------------------


def cli(*args: str) -> Result:
    """Run the CLI in process; a wide terminal so tables never truncate ids."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def on(url: str, name: str, fn: Callable[[Board], Awaitable[T]]) -> T:
    """Run `fn(board)` on its own event loop (for sync tests that set a board up)."""

    async def main() -> T:
        async with await Board.connect(url, board=name) as b:
            return await fn(b)

    return anyio.run(main)


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """A rich table's header cells and data rows' cells."""
    lines = text.splitlines()
    header = next(line for line in lines if "┃" in line)
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.count("│") > 2]
    return [c.strip() for c in header.split("┃")[1:-1]], rows


def one_line_error(result: Result, starts: str) -> None:
    """A user error: one line on stderr, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr
    assert "Traceback" not in result.output


async def done_item(b: Board, kind: str, result: Any, outputs: Sequence[NewItem] = (), **fields: Any) -> Item:
    item = await b.post(kind, {"for": kind}, **fields)
    [claim] = await b.claim("worker", [kind])
    assert claim.id == item.id
    await b.complete(claim, result, outputs)
    return await b.get(item.id)


async def dead_item(b: Board, kind: str, error: str, **fields: Any) -> Item:
    item = await b.post(kind, {"n": 1}, max_attempts=1, **fields)
    [claim] = await b.claim("worker", [kind])
    assert claim.id == item.id
    assert await b.fail(claim, error, retry=False) is Status.DEAD
    return await b.get(item.id)


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    return {**env, "COLUMNS": "250", **extra}


def subprocess_cli(
    *args: str, cwd: Path = ROOT, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blackboard", *args],
        cwd=cwd,
        env=env_with(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- agents and a daemon in the test's event loop ---------------------------------------------


@agent(name="greeter", consumes=["hello.request"], produces=["hello.note"])
async def greet(item: Item, ctx: Context) -> dict[str, str]:
    await ctx.post("hello.note", {"text": f"greeted {item.payload['name']}"})
    return {"greeting": f"Hello, {item.payload['name']}!"}


@agent(name="notetaker", consumes=["hello.note"])
async def note(item: Item, ctx: Context) -> str:
    return f"noted: {item.payload['text']}"


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """The daemon logs through structlog, whose default printer follows sys.stdout — which the
    CliRunner swaps while it runs a command in another thread. Silence it for the test."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    yield
    structlog.configure(**saved)


@asynccontextmanager
async def running_daemon(url: str, name: str, agents: Sequence[Agent]) -> AsyncIterator[Daemon]:
    settings = Settings.model_validate(
        {
            "url": url,
            "board": name,
            "port": 0,
            "http": False,
            "reload": False,
            "agents": [],
            "entry_points": False,
            "presence_interval": 0.1,
            "grace": 2.0,
            "sweep": 0.5,
        }
    )
    daemon = Daemon(settings, agents=agents)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.stop()


async def in_thread(*args: str) -> Result:
    """The CLI on a worker thread (its own event loop) while the daemon runs on ours."""
    return await anyio.to_thread.run_sync(partial(cli, *args))


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while True:
            if value := await predicate():
                return value
            await anyio.sleep(0.02)  # polling a condition, under a deadline


# -- post -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_post_prints_the_id_and_the_item_exists(board_url: str, tmp_path: Path) -> None:
    name = unique_board()
    target = ("--url", board_url, "--board", name)

    r = cli("post", "research.question", "--data", '{"q": "why?"}', "--priority", "7", *target)
    assert r.exit_code == 0, r.output
    item_id = r.stdout.strip()
    assert ULID.match(item_id), r.stdout
    item = on(board_url, name, lambda b: b.get(item_id))
    assert (item.kind, item.payload, item.priority) == ("research.question", {"q": "why?"}, 7)
    assert item.status is Status.OPEN and item.created_by == "cli"

    payload = {"files": ["a.md", "b.md"], "top": 3, "note": "[bold]not markup[/bold] " + "long " * 40}
    (tmp_path / "goal.json").write_text(json.dumps(payload))
    r = cli("post", "wordcount.goal", "--data", f"@{tmp_path / 'goal.json'}", "--json", *target)
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)  # not wrapped at the terminal width, markup left alone
    assert shown["kind"] == "wordcount.goal" and shown["payload"] == payload and shown["status"] == "open"
    assert on(board_url, name, lambda b: b.get(shown["id"])).payload == payload

    r = cli("post", "bare.item", "--json", *target)  # no --data: a null payload
    assert r.exit_code == 0 and json.loads(r.stdout)["payload"] is None


@pytest.mark.timeout(30)
def test_post_bad_input_exits_2_with_one_line(board_url: str, tmp_path: Path) -> None:
    target = ("--url", board_url, "--board", unique_board())

    r = cli("post", "Not A Kind!", *target)
    assert r.exit_code == 2
    one_line_error(r, "error: kind: ")

    r = cli("post", "job", "--data", "{not json", *target)
    assert r.exit_code == 2
    one_line_error(r, "error: --data: expected JSON")

    r = cli("post", "job", "--data", f"@{tmp_path / 'missing.json'}", *target)
    assert r.exit_code == 2
    one_line_error(r, "error: --data: no such file")

    (tmp_path / "bad.json").write_text("[1, 2,")
    r = cli("post", "job", "--data", f"@{tmp_path / 'bad.json'}", *target)
    assert r.exit_code == 2
    one_line_error(r, "error: --data: ")

    assert on(target[1], target[3], lambda b: b.query(limit=10)).items == ()  # nothing was posted


@pytest.mark.timeout(30)
def test_bad_urls_and_names_are_usage_errors() -> None:
    r = cli("post", "job", "--url", "nonsense")
    assert r.exit_code == 2
    one_line_error(r, "error: url: ")
    r = cli("ls", "--url", "memory://x", "--board", "bad name!")
    assert r.exit_code == 2
    one_line_error(r, "error: board: ")
    r = cli("ls", "--url", "memory://x", "--status", "bogus")
    assert r.exit_code == 2
    one_line_error(r, "error: status: ")


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_post_wait_follows_the_goal_and_prints_tree_and_result(
    board_url: str, quiet_logs: None
) -> None:
    name = unique_board()
    target = ("--url", board_url, "--board", name)
    async with running_daemon(board_url, name, [greet, note]):
        r = await in_thread(
            "post", "hello.request", "--data", '{"name": "Ada"}', "--wait", "--timeout", "20", *target
        )
        assert r.exit_code == 0, r.output
        out = r.stdout
        goal = re.search(r"posted (\S+); following its tree", out)
        assert goal, out
        # live progress: the events of the goal's tree, in order
        assert re.search(r"claimed\s+hello\.request\s+\S+ by greeter", out)
        done_request, done_note = (
            re.search(rf"^  done\s+{k}\s", out, re.M) for k in ("hello.request", "hello.note")
        )
        assert done_request and done_note and done_request.start() < done_note.start()
        # the tree, with statuses and agents
        assert re.search(rf"hello\.request {goal[1]} done by greeter", out)
        assert re.search(r"└── hello\.note \S+ done by notetaker", out)
        # and the final result (the item that finished last)
        assert out.rstrip().endswith('"noted: greeted Ada"')

        r = await in_thread("post", "hello.request", "--data", '{"name": "Bo"}', "--wait", "--json", *target)
        assert r.exit_code == 0, r.output
        shown = json.loads(r.stdout)  # stdout is only the JSON; the progress line went to stderr
        assert shown["final"]["kind"] == "hello.note" and shown["final"]["result"] == "noted: greeted Bo"
        assert shown["final"]["root"] == shown["goal"] and "following its tree" in r.stderr

    r = await in_thread("post", "hello.request", "--wait", "--timeout", "1", *target)  # nobody runs it
    assert r.exit_code == 3
    assert r.stderr.strip() == "error: timed out"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_post_wait_as_a_process_against_redis(redis_url: str, quiet_logs: None) -> None:
    name = unique_board()
    async with running_daemon(redis_url, name, [greet, note]):
        with anyio.fail_after(25):
            out = await anyio.run_process(
                [
                    sys.executable,
                    "-m",
                    "blackboard",
                    "post",
                    "hello.request",
                    "--data",
                    '{"name": "Cy"}',
                    "--wait",
                    "--timeout",
                    "20",
                    "--url",
                    redis_url,
                    "--board",
                    name,
                ],
                cwd=ROOT,
                env=env_with(),
                check=False,
            )
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert re.search(r"claimed\s+hello\.note\s+\S+ by notetaker", text)
    assert "hello.request" in text and text.rstrip().endswith('"noted: greeted Cy"')


# -- reading ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_ls_table_json_and_filters(board_url: str) -> None:
    name = unique_board()
    target = ("--url", board_url, "--board", name)

    async def setup(b: Board) -> dict[str, str]:
        goal = await b.post("trip.plan", {"to": "Oslo"}, priority=9)
        leg = await b.post("trip.leg", {"n": 1}, parent=goal.id)
        other = await b.post("trip.plan", {"to": "Rome"})
        [claim] = await b.claim("planner", ["trip.plan"])
        assert claim.id == goal.id  # the higher priority
        return {"goal": goal.id, "leg": leg.id, "other": other.id}

    ids = on(board_url, name, setup)

    r = cli("ls", *target)
    assert r.exit_code == 0, r.output
    header, cells = table(r.stdout)
    assert header == ["id", "kind", "status", "attempts", "agent", "root"]
    rows = {row[0]: row for row in cells}
    assert set(rows) == set(ids.values())
    assert rows[ids["goal"]] == [ids["goal"], "trip.plan", "claimed", "1", "planner", ""]
    assert rows[ids["leg"]] == [ids["leg"], "trip.leg", "open", "0", "", ids["goal"]]  # a child: its root

    def listed(*args: str) -> list[dict[str, Any]]:
        r = cli("ls", "--json", *args, *target)
        assert r.exit_code == 0, r.output
        return list(json.loads(r.stdout))

    assert {i["id"] for i in listed()} == set(ids.values())
    assert {i["id"] for i in listed("--kind", "trip.plan")} == {ids["goal"], ids["other"]}
    assert [i["id"] for i in listed("--status", "claimed")] == [ids["goal"]]
    assert {i["id"] for i in listed("--status", "open")} == {ids["leg"], ids["other"]}
    assert {i["id"] for i in listed("--root", ids["goal"])} == {ids["goal"], ids["leg"]}
    assert [i["id"] for i in listed("--root", ids["goal"], "--kind", "trip.leg")] == [ids["leg"]]
    assert listed("--kind", "no.such") == []
    assert len(listed("--limit", "1")) == 1


@pytest.mark.timeout(30)
def test_show_and_trace(board_url: str) -> None:
    name = unique_board()
    target = ("--url", board_url, "--board", name)

    async def setup(b: Board) -> dict[str, str]:
        pages = [NewItem(kind="report.page", payload=n, max_attempts=1) for n in (1, 2)]
        goal = await done_item(b, "report.goal", {"pages": 2}, pages)
        first, second = await b.claim("worker", ["report.page"], n=2)
        await b.complete(first, "page one")
        await b.fail(second, "renderer [crashed] badly", retry=False)
        return {"goal": goal.id, "done": first.id, "dead": second.id}

    ids = on(board_url, name, setup)

    r = cli("show", ids["goal"], *target)
    assert r.exit_code == 0, r.output
    fields = dict(line.strip().split(": ", 1) for line in r.stdout.splitlines())
    assert fields["id"] == json.dumps(ids["goal"]) and fields["status"] == '"done"'
    assert json.loads(fields["result"]) == {"pages": 2} and fields["handled_by"] == '"worker"'
    assert "lease_token" not in fields  # unset fields are left out

    r = cli("show", ids["dead"], "--json", *target)
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["status"] == "dead" and shown["parent"] == ids["goal"]
    assert shown["error"] == "renderer [crashed] badly"

    r = cli("trace", ids["goal"], *target)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert re.match(rf"report\.goal {ids['goal']} done by worker \d+\.\d+s$", lines[0])
    children = "\n".join(lines[1:])
    assert re.search(rf"[├└]── report\.page {ids['done']} done by worker", children)
    assert re.search(rf"[├└]── report\.page {ids['dead']} dead by worker .*renderer", children)

    r = cli("trace", ids["goal"], "--json", *target)
    assert r.exit_code == 0, r.output
    tree = json.loads(r.stdout)
    assert tree["item"]["id"] == ids["goal"] and [c["children"] for c in tree["children"]] == [[], []]
    statuses = {c["item"]["id"]: c["item"]["status"] for c in tree["children"]}
    assert statuses == {ids["done"]: "done", ids["dead"]: "dead"}

    r = cli("trace", ids["dead"], "--json", *target)  # a subtree
    subtree = json.loads(r.stdout)
    assert r.exit_code == 0 and subtree == {"item": shown, "children": [], "usage": subtree["usage"]}
    assert subtree["usage"]["calls"] == 0 and subtree["usage"]["by_model"] == {}

    for command in ("show", "trace", "wait", "cancel"):
        r = cli(command, "01J0000000000000000000NONE", *target)
        assert r.exit_code == 1, (command, r.output)
        one_line_error(r, "error: no item with id '01J0000000000000000000NONE'")


@pytest.mark.timeout(30)
def test_trace_shows_an_error_that_looks_like_markup() -> None:
    url, name = f"memory://test-{os.getpid()}", unique_board()
    dead = on(url, name, lambda b: dead_item(b, "parse.job", "unexpected '[/x]' in input"))
    r = cli("trace", dead.id, "--url", url, "--board", name)
    assert r.exit_code == 0, r.exception
    assert "unexpected '[/x]' in input" in r.stdout


@pytest.mark.timeout(30)
def test_wait_prints_the_result_or_fails(board_url: str) -> None:
    name = unique_board()
    target = ("--url", board_url, "--board", name)

    async def setup(b: Board) -> dict[str, str]:
        done = await done_item(b, "calc.sum", {"sum": 42})
        dead = await dead_item(b, "calc.div", "ZeroDivisionError: division by zero")
        cancelled = await b.post("calc.sum", {"n": 2})
        await b.cancel(cancelled.id, "no longer needed")
        open_ = await b.post("calc.later", {})
        return {"done": done.id, "dead": dead.id, "cancelled": cancelled.id, "open": open_.id}

    ids = on(board_url, name, setup)

    r = cli("wait", ids["done"], *target)
    assert r.exit_code == 0 and json.loads(r.stdout) == {"sum": 42}
    r = cli("wait", ids["done"], "--json", *target)
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == ids["done"]

    r = cli("wait", ids["dead"], *target)
    assert r.exit_code == 1
    error = "ZeroDivisionError: division by zero"
    assert json.loads(r.stdout) == {"status": "dead", "error": error, "reason": None}
    r = cli("wait", ids["cancelled"], *target)
    assert r.exit_code == 1 and json.loads(r.stdout)["reason"] == "no longer needed"

    r = cli("wait", ids["open"], "--timeout", "0.5", *target)
    assert r.exit_code == 3 and r.stderr.strip() == "error: timed out"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_wait_wakes_when_the_item_finishes(board_url: str) -> None:
    async with await Board.connect(board_url, board=unique_board()) as b:
        item = await b.post("slow.job", {"n": 1})
        async with anyio.create_task_group() as tg:
            results: list[Result] = []

            async def waiter() -> None:
                r = await in_thread("wait", item.id, "--timeout", "20", "--url", board_url, "--board", b.name)
                results.append(r)

            tg.start_soon(waiter)
            # Whether this lands before the waiter's first look or after, it sees it: `wait`
            # takes its event cursor before it first reads the item.
            [claim] = await b.claim("w", ["slow.job"])
            await b.complete(claim, {"slept": True})
        [r] = results
        assert r.exit_code == 0 and json.loads(r.stdout) == {"slept": True}


# -- changing things --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_prints_the_count_and_cancels_the_tree(board_url: str) -> None:
    name = unique_board()

    async def setup(b: Board) -> list[str]:
        goal = await b.post("batch.goal")
        a = await b.post("batch.part", parent=goal.id)
        c = await b.post("batch.part", parent=a.id)
        done = await done_item(b, "batch.done", 1, parent=goal.id)
        return [goal.id, a.id, c.id, done.id]

    goal, a, c, done = on(board_url, name, setup)
    r = cli("cancel", goal, "--url", board_url, "--board", name)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "cancelled 3 items"
    items = on(board_url, name, lambda b: b.get_many([goal, a, c, done]))
    assert [i.status for i in items if i] == [Status.CANCELLED] * 3 + [Status.DONE]
    assert items[0] is not None and items[0].reason == "cancelled from the CLI"

    r = cli("cancel", goal, "--url", board_url, "--board", name)  # again: nothing left to cancel
    assert r.exit_code == 0 and r.stdout.strip() == "cancelled 0 items"


@pytest.mark.timeout(30)
def test_dlq_ls_and_retry(board_url: str) -> None:
    name = unique_board()
    target = ("--url", board_url, "--board", name)

    async def setup(b: Board) -> list[str]:
        d1 = await dead_item(b, "mail.send", "SMTPError: [Errno 111] connection refused")
        d2 = await dead_item(b, "mail.send", "timeout after 30s")
        d3 = await dead_item(b, "mail.bounce", "[/x] not markup")
        await b.post("mail.send", {"fine": True})  # open: not a dead letter
        return [d1.id, d2.id, d3.id]

    d1, d2, d3 = on(board_url, name, setup)

    r = cli("dlq", "ls", *target)
    assert r.exit_code == 0, r.output
    header, cells = table(r.stdout)
    assert header == ["id", "kind", "attempts", "error"]
    rows = {row[0]: row for row in cells}
    assert rows[d1] == [d1, "mail.send", "1", "SMTPError: [Errno 111] connection refused"]
    assert rows[d3] == [d3, "mail.bounce", "1", "[/x] not markup"]  # errors are not rich markup
    assert set(rows) == {d1, d2, d3}

    r = cli("dlq", "ls", "--json", *target)
    assert r.exit_code == 0, r.output
    dead = {i["id"]: i for i in json.loads(r.stdout)}
    assert set(dead) == {d1, d2, d3}
    assert (dead[d2]["error"], dead[d2]["attempts"]) == ("timeout after 30s", 1)

    r = cli("dlq", "retry", d1, *target)
    assert r.exit_code == 0 and r.stdout.strip() == "requeued 1 items"
    item = on(board_url, name, lambda b: b.get(d1))
    assert (item.status, item.attempts) == (Status.OPEN, 0)

    r = cli("dlq", "retry", d1, *target)  # no longer dead
    assert r.exit_code == 1
    one_line_error(r, f"error: item {d1} is open; expected dead")

    r = cli("dlq", "retry", "--all", *target)
    assert r.exit_code == 0 and r.stdout.strip() == "requeued 2 items"
    items = on(board_url, name, lambda b: b.get_many([d2, d3]))
    assert [(i.status, i.attempts) for i in items if i] == [(Status.OPEN, 0)] * 2
    r = cli("dlq", "ls", "--json", *target)
    assert json.loads(r.stdout) == []

    r = cli("dlq", "retry", "--all", *target)  # nothing dead: fine, nothing to do
    assert r.exit_code == 0 and r.stdout.strip() == "requeued 0 items"

    r = cli("dlq", "retry", *target)
    assert r.exit_code == 2
    one_line_error(r, "error: give item ids or --all")


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_agents_lists_a_live_daemon(board_url: str, quiet_logs: None) -> None:
    name = unique_board()
    target = ("--url", board_url, "--board", name)
    async with (
        running_daemon(board_url, name, [greet, note]) as daemon,
        await Board.connect(board_url, board=name) as b,
    ):

        async def listed() -> list[presence.DaemonInfo]:
            return [d for d in await presence.daemons(b) if d.live and len(d.agents) == 2]

        await wait_for(listed)  # the daemon's heartbeat, with its agents

        r = await in_thread("agents", *target)
        assert r.exit_code == 0, r.output
        header, cells = table(r.stdout)
        assert header == ["daemon", "state", "agent", "consumes", "produces", "in flight", "done"]
        by_agent = {row[2]: row for row in cells}
        assert by_agent["greeter"] == [daemon.id, "live", "greeter", "hello.request", "hello.note", "0", "0"]
        assert by_agent["notetaker"][:5] == [daemon.id, "live", "notetaker", "hello.note", ""]

        r = await in_thread("agents", "--json", *target)
        assert r.exit_code == 0, r.output
        [shown] = json.loads(r.stdout)
        assert shown["id"] == daemon.id and shown["live"] is True and shown["pid"] == os.getpid()
        consumes = {a["name"]: a["consumes"] for a in shown["agents"]}
        assert consumes == {"greeter": ["hello.request"], "notetaker": ["hello.note"]}

    # after a clean shutdown the daemon has left the board
    r = await in_thread("agents", "--json", *target)
    assert r.exit_code == 0 and json.loads(r.stdout) == []


# -- init, run and settings -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_init_writes_a_project_and_refuses_to_overwrite(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    r = cli("init", str(project))
    assert r.exit_code == 0, r.output
    written = {"blackboard.toml", "agents/hello.py", "policies/README.md", "policies/example.yaml"}
    assert {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()} == written
    for rel in written:
        assert f"wrote {project / rel}" in r.stdout
    assert 'agents = ["agents"]' in (project / "blackboard.toml").read_text()
    assert '@agent(name="greeter"' in (project / "agents" / "hello.py").read_text()

    # Again, with one file gone: refuses because the others exist, and writes nothing.
    (project / "policies" / "README.md").unlink()
    (project / "blackboard.toml").write_text("# mine\n")
    r = cli("init", str(project))
    assert r.exit_code == 1
    one_line_error(r, f"error: {project / 'blackboard.toml'} already exists; nothing was written")
    assert (project / "blackboard.toml").read_text() == "# mine\n"
    assert not (project / "policies" / "README.md").exists()


@pytest.mark.timeout(45)
def test_an_initialised_project_runs_its_example_agent(tmp_path: Path, redis_url: str) -> None:
    project = tmp_path / "proj"
    assert cli("init", str(project)).exit_code == 0
    name = unique_board()
    goal = on(redis_url, name, lambda b: b.post("hello.request", {"name": "Ada"}))

    out = subprocess_cli(
        "run",
        "--port",
        "0",
        "--until-idle",
        "--log-level",
        "info",
        cwd=project,
        timeout=40,
        BLACKBOARD_URL=redis_url,
        BLACKBOARD_BOARD=name,
    )
    assert out.returncode == 0, out.stderr
    started = next(json.loads(line) for line in out.stderr.splitlines() if '"daemon started"' in line)
    assert started["agents"] == ["greeter", "notetaker"] and started["board"] == name
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert len(lines) > 3 and all(r["board"] == name and r["daemon"] == started["daemon"] for r in lines)
    # strict: the example policy was loaded and lets the example agents do their work
    loaded = next(json.loads(line) for line in out.stderr.splitlines() if '"policy loaded"' in line)
    assert loaded["files"] == ["policies/example.yaml"]

    async def check(b: Board) -> None:
        tree = await b.tree(goal.id)
        assert tree.item.status is Status.DONE and tree.item.result == {"greeting": "Hello, Ada!"}
        [child] = tree.children
        assert child.item.kind == "hello.note" and child.item.result == "noted: greeted Ada"

    on(redis_url, name, check)


@pytest.mark.timeout(30)
def test_run_help_documents_every_setting() -> None:
    r = cli("run", "--help")
    assert r.exit_code == 0, r.output
    squashed = re.sub(r"\s+", "", r.stdout)
    flags = {
        "url": "--url",
        "board": "--board",
        "agents": "--agents",
        "grace": "--grace",
        "host": "--host",
        "port": "--port",
        "api_token": "--api-token",
        "http": "--http",
        "reload": "--reload",
        "strict": "--strict",
        "log_format": "--log-format",
        "log_level": "--log-level",
    }
    for field, flag in flags.items():
        assert re.search(rf"^\s+{flag}\b", r.stdout, re.M), flag
        description = Settings.model_fields[field].description
        assert description and re.sub(r"\s+", "", description) in squashed, field
    assert re.search(r"^\s+--config\b", r.stdout, re.M) and "--until-idle" in r.stdout
    assert "BLACKBOARD_" in r.stdout  # says where else settings come from


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for field in Settings.model_fields:
        monkeypatch.delenv(f"BLACKBOARD_{field.upper()}", raising=False)
    return monkeypatch


@pytest.mark.timeout(30)
def test_settings_precedence_flags_then_env_then_toml(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    config = tmp_path / "custom.toml"
    config.write_text(
        'url = "redis://file:6379"\nboard = "fileboard"\ngrace = 5.0\nport = 9000\nlog_level = "warning"'
    )
    s = load_settings(config)
    assert (s.url, s.board, s.grace, s.port) == ("redis://file:6379", "fileboard", 5.0, 9000)
    assert s.log_level == "warning"
    assert s.host == "127.0.0.1" and s.reload is True  # defaults fill the rest

    clean_env.setenv("BLACKBOARD_BOARD", "envboard")
    clean_env.setenv("BLACKBOARD_GRACE", "7")
    s = load_settings(config)
    assert (s.board, s.grace, s.url) == ("envboard", 7.0, "redis://file:6379")  # env over the file

    s = load_settings(config, grace=1.0, board=None, port=0)  # a flag over both; None = not given
    assert (s.grace, s.board, s.port) == (1.0, "envboard", 0)

    # without --config, ./blackboard.toml is read when present
    clean_env.chdir(tmp_path)
    assert load_settings().port == 8420
    (tmp_path / "blackboard.toml").write_text('port = 1234\nboard = "cwdboard"\n')
    assert (load_settings().port, load_settings().board) == (1234, "envboard")
    clean_env.delenv("BLACKBOARD_BOARD")
    assert load_settings().board == "cwdboard"


@pytest.mark.timeout(30)
def test_run_takes_file_env_and_flags_together(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """End to end through `run`: the URL only the file gives, the board only the environment
    gives (over the file's), and the agents folder only a flag gives (over the file's)."""
    url, name = f"memory://cli-run-{os.getpid()}", unique_board()
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "hello.py").write_text(EXAMPLE_AGENT)
    config = tmp_path / "cfg.toml"
    config.write_text(f'url = "{url}"\nboard = "not-this-one"\nagents = ["nowhere"]\nhttp = false\n')
    clean_env.setenv("BLACKBOARD_BOARD", name)
    goal = on(url, name, lambda b: b.post("hello.request", {"name": "Env"}))

    agents = str(tmp_path / "agents")
    r = cli(
        "run",
        "--config",
        str(config),
        "--agents",
        agents,
        "--no-reload",
        "--until-idle",
        "--log-level",
        "warning",
    )
    assert r.exit_code == 0, r.output
    assert on(url, name, lambda b: b.get(goal.id)).result == {"greeting": "Hello, Env!"}


@pytest.mark.timeout(30)
def test_run_rejects_bad_settings(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    r = cli("run", "--config", str(tmp_path / "missing.toml"))
    assert r.exit_code == 2
    one_line_error(r, "error: --config: no such file")

    r = cli("run", "--host", "0.0.0.0", "--port", "0", "--no-reload", "--url", "memory://bind-check")
    assert r.exit_code == 2
    one_line_error(r, "error: host: binding to 0.0.0.0 needs an API token")

    (tmp_path / "bad.toml").write_text('board = "no spaces allowed"\n')
    r = cli("run", "--config", str(tmp_path / "bad.toml"))
    assert r.exit_code == 2
    one_line_error(r, "error: board: ")

    r = cli("run", "--log-level", "loud")
    assert r.exit_code == 2
    one_line_error(r, "error: log_level: ")

    clean_env.setenv("BLACKBOARD_GRACE", "-1")
    r = cli("run")
    assert r.exit_code == 2
    one_line_error(r, "error: grace: ")


# -- as real processes ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_post_then_ls_as_processes(redis_url: str) -> None:
    target = ("--url", redis_url, "--board", unique_board())
    out = subprocess_cli("post", "process.job", "--data", '{"from": "a process"}', *target)
    assert out.returncode == 0, out.stderr
    item_id = out.stdout.strip()
    assert ULID.match(item_id)

    out = subprocess_cli("ls", "--json", *target)
    assert out.returncode == 0, out.stderr
    [item] = json.loads(out.stdout)
    assert (item["id"], item["payload"], item["status"]) == (item_id, {"from": "a process"}, "open")

    out = subprocess_cli("post", "Bad Kind", *target)  # a user error: one line, no traceback
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: kind: ")

    out = subprocess_cli("show", item_id, "--url", "redis://127.0.0.1:1", "--board", "x", timeout=30)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: Redis at redis://127.0.0.1:1 unreachable")


@pytest.mark.timeout(30)
def test_watch_prints_a_goals_events_until_interrupted(redis_url: str) -> None:
    name = unique_board()
    goal = on(redis_url, name, lambda b: b.post("watch.goal"))
    watch = ["watch", "--root", goal.id, "--json", "--url", redis_url, "--board", name]
    proc = subprocess.Popen(
        [sys.executable, "-m", "blackboard", *watch],
        cwd=ROOT,
        env=env_with(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        # `watch` starts from "now", so post probes under the goal until one shows up.
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline, "watch printed nothing"
            on(redis_url, name, lambda b: b.post("watch.probe", parent=goal.id))
            with contextlib.suppress(queue.Empty):
                first = json.loads(lines.get(timeout=0.2))
                break
        assert (first["type"], first["kind"], first["root"]) == ("posted", "watch.probe", goal.id)

        async def other_goal_then_cancel(b: Board) -> None:
            await b.post("watch.other")  # another goal: filtered out
            await b.cancel(goal.id, "enough")

        on(redis_url, name, other_goal_then_cancel)
        seen: list[dict[str, Any]] = []
        while not any(e["id"] == goal.id and e["type"] == "cancelled" for e in seen):
            seen.append(json.loads(lines.get(timeout=10)))
        assert all(e["root"] == goal.id for e in seen) and {e["kind"] for e in seen} <= {
            "watch.goal",
            "watch.probe",
        }
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr


def test_run_help_has_a_flag_for_every_setting() -> None:
    from blackboard.settings import Settings

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in result.output, name


def test_run_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["run", "--port", str(port), "--agents", str(tmp_path), "--no-reload"]
        )
    assert result.exit_code == 2
    assert f"error: port: cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
