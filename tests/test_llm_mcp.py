"""MCP tools for LLM agents: servers named in the YAML, their tools offered through litellm's
tool calling under the agent's allow-list (and the policy), calls recorded, connections owned by
the daemon and restarted when they die.

The MCP server is tests/support/mcp_tools_server.py (the SDK's MCPServer), started by the agent
over stdio (or run over streamable HTTP); it appends every call to a file, so a test can prove a
refused tool never ran. The model is the scripted litellm provider of tests/test_llm.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from blackboard import Board, audit
from blackboard.daemon import Daemon
from blackboard.llm.agent import LLMAgent
from blackboard.llm.tools import args_hash
from blackboard.models import Status
from blackboard.plugins import load_file
from tests.conftest import unique_board
from tests.support.packs import daemon_settings, run_pack
from tests.test_llm import OUT, SCRIPTS, agent_file, calls_tools_then_answers
from tests.test_llm import scripted_provider as scripted_provider  # registers the scripted model

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

SERVER = Path(__file__).parent / "support" / "mcp_tools_server.py"


def calc(calls: Path) -> dict[str, Any]:
    """The test server over stdio, logging its calls to `calls`."""
    return {"command": sys.executable, "args": [str(SERVER)], "env": {"MCP_CALLS_FILE": str(calls)}}


def ran(calls: Path) -> list[tuple[str, int]]:
    """(tool, server pid) of every call the server ran, in order."""
    if not calls.exists():
        return []
    return [(t, int(pid)) for t, pid in (line.split() for line in calls.read_text().splitlines())]


async def test_an_allowed_mcp_tool_is_called_and_a_disallowed_one_refused_and_audited(
    board_url: str, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    SCRIPTS["mcp-calc"] = calls_tools_then_answers(("calc__add", {"a": 2, "b": 3}), ("calc__secret", {}))
    agent_file(
        tmp_path,
        "calculator",
        model="scripted/mcp-calc",
        output={"schema": OUT},
        tools=["calc.add"],
        mcp_servers={"calc": calc(calls)},
    )
    run = await run_pack(board_url, [tmp_path], "t.goal", {"q": "2+3"})
    assert run.goal.status is Status.DONE, run.goal.error
    answer = run.goal.result["answer"]
    # The tool's result reached the model and its output; the refusal lists only what was offered.
    assert answer.startswith("5 | ") and "'calc__secret' is not available" in answer
    assert "allowed: ['calc__add']" in answer and "the-secret-is-42" not in answer
    assert [t for t, _ in ran(calls)] == ["add"]  # secret never ran on the server
    first, second = run.goal.usage
    assert first.tools == ("calc.add", "!calc.secret") and second.tool_calls == ()
    add, secret = first.tool_calls
    assert add.tool == "calc.add" and add.error is None and add.duration_ms > 0
    assert add.args_hash == args_hash(json.dumps({"b": 3, "a": 2}))  # canonical: key order is irrelevant
    assert secret.tool == "calc.secret" and secret.error == "refused: not in the agent's tools"
    assert secret.duration_ms == 0
    assert run.metric("blackboard_llm_tool_calls_total", tool="calc.add", outcome="called") == 1
    assert run.metric("blackboard_llm_tool_calls_total", tool="calc.secret", outcome="refused") == 1
    assert run.metric("blackboard_llm_tool_duration_seconds_count", tool="calc.add") == 1
    async with await Board.connect(board_url, board=run.board) as b:
        [denied] = [r for r in await audit.tail(b, 50) if r.op == "denied"]
    assert denied.actor == "calculator" and denied.id == run.goal.id
    assert denied.detail == "tool calc.secret: not in the agent's tools"


async def test_under_a_policy_an_mcp_tool_needs_a_grant_too(board_url: str, tmp_path: Path) -> None:
    """The file allows every tool of the server (`calc.*`); the policy grants only `calc.add`:
    `secret` is neither offered nor run, and its refusal is audited as a policy denial."""
    calls = tmp_path / "calls.log"
    SCRIPTS["mcp-injected"] = calls_tools_then_answers(("calc__secret", {}), ("calc__add", {"a": 1, "b": 1}))
    agent_file(
        tmp_path,
        "teller",
        model="scripted/mcp-injected",
        output={"schema": OUT},
        tools=["calc.*"],
        mcp_servers={"calc": calc(calls)},
    )
    rules = tmp_path / "policies"
    rules.mkdir()
    (rules / "p.yaml").write_text(
        "roles:\n  teller: {claim: [t.goal], tools: [calc.add]}\n  op: {post: ['*']}\n"
        "principals:\n  teller: [teller]\n  cli: [op]\n"
    )
    run = await run_pack(board_url, [tmp_path], "t.goal", {"q": "x"}, actor="cli", policies=[rules])
    answer = run.goal.result["answer"]
    assert "'calc__secret' is not available" in answer and "allowed: ['calc__add']" in answer
    assert answer.endswith(" | 2") and "the-secret-is-42" not in answer
    assert [t for t, _ in ran(calls)] == ["add"]
    secret = run.goal.usage[0].tool_calls[0]
    assert secret.tool == "calc.secret" and (secret.error or "").startswith("refused: default deny")
    async with await Board.connect(board_url, board=run.board) as b:
        [denied] = [r for r in await audit.tail(b, 50) if r.op == "denied"]
    assert denied.actor == "teller" and denied.detail.startswith("tool calc.secret: default deny")


async def test_the_offline_model_is_offered_only_the_allowed_mcp_tools(tmp_path: Path) -> None:
    """The offline model calls every tool it is offered once: with `calc.add` allowed, it is
    offered (and calls) `add` alone, never `secret` or `crash`."""
    calls = tmp_path / "calls.log"
    agent_file(
        tmp_path,
        "offline-calc",
        model="offline/calc",
        output={"schema": OUT},
        tools=["calc.a*"],  # a glob over the server's tool names
        mcp_servers={"calc": calc(calls)},
    )
    run = await run_pack(f"memory://mcp-{os.getpid()}", [tmp_path], "t.goal", {"q": "sum"})
    assert run.goal.status is Status.DONE, run.goal.error
    assert [t for t, _ in ran(calls)] == ["add"]
    assert [t.tool for t in run.goal.usage[0].tool_calls] == ["calc.add"]
    assert run.goal.usage[0].tool_calls[0].error is None


@asynccontextmanager
async def daemon_on(board_url: str, folder: Path) -> AsyncIterator[tuple[Daemon, Board]]:
    """A daemon running `folder`'s agents, and a board client; the daemon stops on exit."""
    name = unique_board()
    daemon = Daemon(daemon_settings(board_url, name, [folder], grace=5))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        async with await Board.connect(board_url, board=name) as board:
            yield daemon, board
        daemon.stop()


def crash_once_then_add() -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """The first conversation asks for `crash`; every later one asks for `add` with its item's
    numbers, then answers with the result."""
    state = {"crashed": False}

    def script(messages: list[dict[str, Any]]) -> dict[str, Any]:
        results = [m["content"] for m in messages if m.get("role") == "tool"]
        if results:
            return {"role": "assistant", "content": json.dumps({"answer": results[-1]})}
        if not state["crashed"]:
            state["crashed"] = True
            call = {"name": "calc__crash", "arguments": "{}"}
        else:
            q = json.loads(next(m["content"] for m in messages if m["role"] == "user").removeprefix("Q: "))
            call = {"name": "calc__add", "arguments": json.dumps(q)}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": call}],
        }

    return script


async def test_a_crashing_server_fails_the_attempt_and_is_restarted_for_later_calls(
    board_url: str, tmp_path: Path
) -> None:
    """One server process serves the agent's concurrent handlers; when it dies mid-call that
    attempt fails with a clear error and is retried, the daemon carries on, the server is
    restarted and later calls succeed on the new process; stopping the daemon stops it."""
    calls = tmp_path / "calls.log"
    SCRIPTS["mcp-crash"] = crash_once_then_add()
    agent_file(
        tmp_path,
        "adder",
        model="scripted/mcp-crash",
        prompt="Q: {{ payload.q | tojson }}",
        output={"schema": OUT},
        tools=["calc.add", "calc.crash"],
        mcp_servers={"calc": calc(calls)},
        concurrency=4,
    )
    async with daemon_on(board_url, tmp_path) as (daemon, board):
        agent = daemon.slots["adder"].runner.agent
        assert isinstance(agent, LLMAgent) and agent.mcp is not None
        first = await board.post("t.goal", {"q": {"a": 1, "b": 2}})
        done = await board.wait(first.id, timeout=30)
        assert done.status is Status.DONE and done.result == {"answer": "3"} and done.attempts == 2
        crashed, asked, answered = done.usage  # attempt 1: one call; attempt 2: the tool call, the answer
        assert (crashed.attempt, asked.attempt, answered.attempt) == (1, 2, 2)
        assert [t.tool for t in asked.tool_calls] == ["calc.add"] and asked.tool_calls[0].error is None
        [crash] = crashed.tool_calls
        assert crash.tool == "calc.crash"
        assert "McpUnavailable: MCP server 'calc' went away during calc.crash" in (crash.error or "")
        assert agent.mcp.restarts["calc"] == 1
        # Later items, handled concurrently, share the restarted server's one process.
        later = [await board.post("t.goal", {"q": {"a": n, "b": 10}}) for n in range(4)]
        for n, it in enumerate(later):
            got = await board.wait(it.id, timeout=30)
            assert got.status is Status.DONE and got.result == {"answer": str(n + 10)} and got.attempts == 1
        assert daemon.ready and daemon.slots["adder"].runner.in_flight == 0
        log = ran(calls)
        assert [t for t, _ in log] == ["crash"] + ["add"] * 5
        (_, dead), *after = log
        assert len({pid for _, pid in after}) == 1 and after[0][1] != dead
        assert agent.mcp.restarts["calc"] == 1
        live = after[0][1]
    assert not _alive(live), "stopping the daemon stops the MCP server"
    assert agent.mcp.servers["calc"].session is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent, this test process, reaps it later).
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_streamable_http_server_with_headers_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP MCP server (started after the daemon: the agent keeps trying to connect)."""
    calls = tmp_path / "calls.log"
    port = _free_port()
    monkeypatch.setenv("CALC_TOKEN", "t0ken")
    SCRIPTS["mcp-http"] = calls_tools_then_answers(("calc__add", {"a": 20, "b": 22}), ("calc__whoami", {}))
    agent_file(
        tmp_path,
        "remote",
        model="scripted/mcp-http",
        output={"schema": OUT},
        tools=["calc.add", "calc.whoami"],
        mcp_servers={
            "calc": {
                "url": f"http://127.0.0.1:{port}/mcp",
                "headers": {"Authorization": "Bearer ${CALC_TOKEN}"},
                "connect_timeout": 30,
            }
        },
    )
    env = {**os.environ, "MCP_CALLS_FILE": str(calls)}
    async with daemon_on(f"memory://mcp-{os.getpid()}", tmp_path) as (daemon, board):
        goal = await board.post("t.goal", {"q": "x"})
        async with await anyio.open_process(
            [sys.executable, str(SERVER), "http", str(port)], env=env, stderr=subprocess.DEVNULL
        ) as server:
            try:
                done = await board.wait(goal.id, timeout=40)
            finally:
                server.terminate()
        assert daemon.ready
    assert done.status is Status.DONE, done.error
    assert done.result == {"answer": "42 | Bearer t0ken"}  # the header, with the variable expanded
    assert [t for t, _ in ran(calls)] == ["add", "whoami"]
    assert [t.tool for t in done.usage[0].tool_calls] == ["calc.add", "calc.whoami"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"mcp_servers": {"calc": {}}}, "bad.yaml.mcp_servers.calc: Value error, expected exactly one of"),
        ({"mcp_servers": {"calc": {"command": "x", "url": "http://h/mcp"}}}, "exactly one of 'command'"),
        ({"mcp_servers": {"calc": {"url": "ftp://h/mcp"}}}, "bad.yaml.mcp_servers.calc.url"),
        ({"mcp_servers": {"calc": {"url": "http://h/mcp", "env": {"A": "b"}}}}, "are for a 'command' server"),
        (
            {"mcp_servers": {"c__x": {"command": "x"}}},
            "bad.yaml.mcp_servers: Value error, server name 'c__x'",
        ),
        ({"mcp_servers": {"calc": {"command": "x", "timeout": 0}}}, "bad.yaml.mcp_servers.calc.timeout"),
        ({"tools": ["nope.add"], "mcp_servers": {"calc": {"command": "x"}}}, "bad.yaml.tools[0]: expected"),
        ({"tools": ["calc"], "mcp_servers": {"calc": {"command": "x"}}}, "mcp_servers (calc); got 'calc'"),
        (
            {"mcp_servers": {"s": {"url": "http://h/mcp", "headers": {"A": "${NO_SUCH_VAR_FOR_MCP}"}}}},
            "headers.A: environment variable NO_SUCH_VAR_FOR_MCP is not set",
        ),
    ],
)
def test_a_bad_mcp_config_fails_the_plugin_with_its_field(
    tmp_path: Path, fields: dict[str, Any], problem: str
) -> None:
    plugin = load_file(agent_file(tmp_path, "bad", model="offline/x", **fields))
    assert not plugin.ok and problem in (plugin.error or ""), plugin.error


async def test_a_server_that_never_starts_fails_attempts_not_the_daemon(
    board_url: str, tmp_path: Path
) -> None:
    SCRIPTS["mcp-none"] = calls_tools_then_answers(("calc__add", {"a": 1, "b": 1}))
    agent_file(
        tmp_path,
        "stranded",
        model="scripted/mcp-none",
        output={"schema": OUT},
        tools=["calc.add"],
        mcp_servers={"calc": {"command": str(tmp_path / "no-such-server"), "connect_timeout": 0.5}},
    )
    async with daemon_on(board_url, tmp_path) as (daemon, board):
        goal = await board.post("t.goal", {"q": "x"}, max_attempts=1)
        done = await board.wait(goal.id, timeout=30)
        assert done.status is Status.DEAD and daemon.ready
        assert "McpUnavailable: MCP server 'calc' is not connected after 0.5s" in (done.error or "")
