"""MCP tools for LLM agents: the MCP servers an agent's YAML names, connected once per agent.

    mcp_servers:
      calc: {command: python, args: [calc_server.py], env: {CALC_MODE: exact}}   # stdio
      search: {url: "http://127.0.0.1:9000/mcp", headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}}
    tools: [calc.add, "search.*"]       # SERVER.TOOL entries (TOOL may be a glob)

The model sees each MCP tool as a function named `SERVER__TOOL` (`calc__add`: providers allow
only letters, digits, `_` and `-` in function names; other characters of the tool's name become
`_`). The policy, the audit log, the metrics and the item's records name it `SERVER.TOOL`.

Lifecycle. `McpConnections` is started by the agent's `setup` and closed by its `teardown`; the
runner calls both from its own task, inside the daemon's task group, so the connections live in
a task group under the runner and no longer than it. One supervisor task per server connects
(stdio: starts the process; HTTP: opens a streamable HTTP session), initialises, lists the tools
and then holds the session, which the agent's concurrent handlers share (an MCP session carries
concurrent requests). When the connection dies (a call finds it closed, or a ping every
`PING_INTERVAL` seconds fails) the supervisor closes it (stopping the process) and connects again
after a capped, jittered back-off; each reconnection after the first connection is a restart
(logged, and counted in `restarts`). A call made while a server is down waits for it up to the
server's `connect_timeout`. A server that is unreachable, goes away mid-call or does not answer
within its `timeout` fails the attempt (`McpUnavailable`: the item is retried); an error the
tool itself reports is the model's to read, like a Python tool's.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from blackboard.backoff import Backoff
from blackboard.errors import BlackboardError
from blackboard.llm.spec import ENV_REF, McpServerSpec

if TYPE_CHECKING:
    from mcp import ClientSession

log = structlog.get_logger("blackboard.llm.mcp")

SEP = "__"  # between the server's name and the tool's in the name the model sees
PING_INTERVAL = 15.0  # seconds between liveness pings of an idle connection
PING_TIMEOUT = 10.0
RECONNECT = Backoff(base=0.2, factor=2.0, cap=30.0, jitter=0.5)  # delay before reconnecting
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ERROR = "error: "


class McpUnavailable(BlackboardError):
    """An MCP server could not be reached, went away during a call, or did not answer in time.
    It fails the attempt (the board's retry rules apply), not the daemon."""


@dataclass(frozen=True)
class McpTool:
    """One tool of one MCP server, as offered to the model."""

    server: str
    name: str  # the server's name for it
    offered: str  # the function name the model sees: SERVER__TOOL
    description: str
    schema: dict[str, Any]

    @property
    def qualified(self) -> str:
        """SERVER.TOOL: its name in the agent's `tools`, the policy's grants, audit and metrics."""
        return f"{self.server}.{self.name}"

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style tool description litellm passes to any provider."""
        return {
            "type": "function",
            "function": {"name": self.offered, "description": self.description, "parameters": self.schema},
        }


def offered_name(server: str, tool: str) -> str:
    return (server + SEP + _UNSAFE.sub("_", tool))[:64]


def _expand(value: str) -> str:
    """`${VAR}` replaced by the daemon's environment variable (checked when the file loaded)."""
    return ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), value)


def _describe(e: BaseException) -> str:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"[:300]


class _Server:
    """One server's connection state, shared by the supervisor and the calls."""

    def __init__(self, name: str, spec: McpServerSpec) -> None:
        self.name, self.spec = name, spec
        self.session: ClientSession | None = None
        self.tools: dict[str, McpTool] = {}  # by offered name; the last listing (kept while down)
        self.error: str | None = None  # why the last connection failed or ended
        self.connects = 0
        self.tried = anyio.Event()  # the first connection attempt has ended (either way)
        self._changed = anyio.Event()
        self._lost = anyio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def up(self, session: ClientSession, tools: dict[str, McpTool]) -> None:
        self.session, self.tools, self.error = session, tools, None
        self._lost = anyio.Event()
        self.connects += 1
        self.tried.set()
        self.changed()

    def lost(self, session: ClientSession, why: str) -> None:
        """`session` is dead: stop handing it out, and wake the supervisor to reconnect."""
        if session is self.session:
            self.session, self.error = None, why
            self._lost.set()
            self.changed()

    async def wait_lost(self) -> None:
        await self._lost.wait()

    async def wait_session(self) -> ClientSession:
        """The live session, waiting up to `connect_timeout` for one."""
        with anyio.move_on_after(self.spec.connect_timeout):
            while self.session is None:
                await self._changed.wait()
        if self.session is None:
            why = f": {self.error}" if self.error else ""
            raise McpUnavailable(
                f"MCP server {self.name!r} is not connected after {self.spec.connect_timeout:g}s{why}"
            )
        return self.session


class McpConnections:
    """The MCP servers of one agent: connected, supervised and closed together.

    Start with `start()` and close with `aclose()` from the same task (the runner's), the
    connections' task group nesting around whatever that task runs in between."""

    def __init__(self, agent: str, servers: dict[str, McpServerSpec], base: Path) -> None:
        self.agent = agent
        self.base = base
        self.servers = {name: _Server(name, spec) for name, spec in servers.items()}
        self.restarts: Counter[str] = Counter()  # reconnections after a connection was lost, by server
        self._stack: AsyncExitStack | None = None

    async def start(self) -> None:
        """Start one supervisor per server; return once each has connected or failed once
        (a server that is down is retried in the background, it does not fail the start)."""
        if self._stack is not None:
            raise BlackboardError(f"MCP connections of {self.agent} are already started")
        stack = AsyncExitStack()
        try:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)  # on close: the supervisors first
            self._stack = stack
            for server in self.servers.values():
                tg.start_soon(self._supervise, server)
            with anyio.move_on_after(max(s.spec.connect_timeout for s in self.servers.values())):
                for server in self.servers.values():
                    await server.tried.wait()
        except BaseException:
            self._stack = None
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise

    async def aclose(self) -> None:
        """Cancel the supervisors; each closes its session (stopping a stdio server's process)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> McpConnections:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- what the model is offered and calls ------------------------------------------------

    async def tools(self, servers: Iterable[str]) -> list[McpTool]:
        """The tools of `servers`, waiting for each to be connected (`McpUnavailable` if not)."""
        out: list[McpTool] = []
        for name in servers:
            server = self.servers[name]
            await server.wait_session()
            out += server.tools.values()
        return out

    def find(self, offered: str) -> McpTool | None:
        """The tool the model means by `offered` (SERVER__TOOL), if its server lists it."""
        server = self.servers.get(offered.partition(SEP)[0])
        return server.tools.get(offered) if server is not None else None

    async def call(self, tool: McpTool, arguments: str) -> tuple[str, str | None]:
        """Call `tool` with the model's JSON arguments: (what the model reads, the tool's error
        or None). Raises `McpUnavailable` when its server can't be reached, goes away during
        the call, or does not answer within its `timeout`."""
        from mcp.shared.exceptions import MCPError
        from mcp.types.jsonrpc import CONNECTION_CLOSED

        try:
            args = json.loads(arguments or "{}")
        except ValueError as e:
            return _error(f"invalid arguments for {tool.offered}: not JSON ({e})")
        if not isinstance(args, dict):
            return _error(f"invalid arguments for {tool.offered}: expected a JSON object")
        server = self.servers[tool.server]
        session = await server.wait_session()
        timeout = server.spec.timeout
        try:
            with anyio.fail_after(timeout):
                result = await session.call_tool(tool.name, args)
        except TimeoutError:
            raise McpUnavailable(
                f"MCP server {server.name!r} did not answer {tool.qualified} within {timeout:g}s"
            ) from None
        except MCPError as e:
            if e.code != CONNECTION_CLOSED:
                return _error(f"{tool.qualified}: {e.message}")
            server.lost(session, f"connection closed during {tool.qualified}")
            raise McpUnavailable(
                f"MCP server {server.name!r} went away during {tool.qualified} (connection closed); "
                "it is being restarted"
            ) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
            server.lost(session, _describe(e))
            raise McpUnavailable(
                f"MCP server {server.name!r} went away during {tool.qualified} ({_describe(e)})"
            ) from None
        except Exception as e:  # anything else the SDK raises is the model's to read
            return _error(f"{tool.qualified}: {_describe(e)}")
        text = _text(result)
        if result.is_error:
            return _error(text)
        return text, None

    # -- supervision ------------------------------------------------------------------------

    async def _supervise(self, server: _Server) -> None:
        """Keep `server` connected until cancelled: connect, hold, reconnect with back-off.
        Never raises (an exception here would cancel the runner the task group nests in)."""
        failures = 0
        while True:
            try:
                async with self._connect(server) as (session, tools):
                    restart = server.connects > 0
                    server.up(session, tools)
                    failures = 0
                    if restart:
                        self.restarts[server.name] += 1
                        log.warning(
                            "MCP server restarted",
                            agent=self.agent,
                            server=server.name,
                            restarts=self.restarts[server.name],
                        )
                    else:
                        log.info(
                            "MCP server connected", agent=self.agent, server=server.name, tools=len(tools)
                        )
                    await self._hold(server, session)
                    log.warning(
                        "MCP server connection lost; reconnecting",
                        agent=self.agent,
                        server=server.name,
                        error=server.error,
                    )
            except Exception as e:
                failures += 1
                server.error = _describe(e)
                log.warning(
                    "MCP server connection failed",
                    agent=self.agent,
                    server=server.name,
                    error=server.error,
                    failures=failures,
                )
            finally:
                server.session = None
                server.tried.set()
                server.changed()
            await anyio.sleep(RECONNECT.delay(max(1, failures)))

    async def _hold(self, server: _Server, session: ClientSession) -> None:
        """Return once the connection is lost: a call saw it closed, or a ping failed."""
        while True:
            with anyio.move_on_after(PING_INTERVAL):
                await server.wait_lost()
                return
            try:
                with anyio.fail_after(PING_TIMEOUT):
                    await session.send_ping()
            except Exception as e:
                server.lost(session, f"ping failed: {_describe(e)}")
                return

    @asynccontextmanager
    async def _connect(self, server: _Server) -> AsyncIterator[tuple[ClientSession, dict[str, McpTool]]]:
        """A session with `server`, initialised, and its tools."""
        from mcp import ClientSession

        spec = server.spec
        async with AsyncExitStack() as stack:
            if spec.command is not None:
                from mcp.client.stdio import StdioServerParameters, stdio_client

                params = StdioServerParameters(
                    command=_expand(spec.command),
                    args=[_expand(a) for a in spec.args],
                    env={k: _expand(v) for k, v in spec.env.items()} or None,
                    cwd=self.base / _expand(spec.cwd) if spec.cwd else self.base,
                )
                read, write = await stack.enter_async_context(stdio_client(params))
            else:
                assert spec.url is not None
                from mcp.client.streamable_http import streamable_http_client
                from mcp.shared._httpx_utils import create_mcp_http_client

                headers = {k: _expand(v) for k, v in spec.headers.items()}
                client = await stack.enter_async_context(create_mcp_http_client(headers=headers))
                read, write = await stack.enter_async_context(
                    streamable_http_client(_expand(spec.url), http_client=client)
                )
            session = await stack.enter_async_context(ClientSession(read, write))
            with anyio.fail_after(spec.connect_timeout):
                await session.initialize()
                tools = await self._list(server, session)
            yield session, tools

    async def _list(self, server: _Server, session: ClientSession) -> dict[str, McpTool]:
        from mcp.types import PaginatedRequestParams

        tools: dict[str, McpTool] = {}
        cursor: str | None = None
        while True:
            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            for t in page.tools:
                offered = offered_name(server.name, t.name)
                if offered in tools:
                    log.warning(
                        "MCP tool names collide once made function names; offering the first",
                        agent=self.agent,
                        server=server.name,
                        tool=t.name,
                        offered=offered,
                    )
                    continue
                schema = dict(t.input_schema or {}) or {"type": "object", "properties": {}}
                tools[offered] = McpTool(server.name, t.name, offered, t.description or t.name, schema)
            cursor = page.next_cursor
            if not cursor:
                return tools


def _error(problem: str) -> tuple[str, str]:
    return _ERROR + problem, problem[:300]


def _text(result: Any) -> str:
    """What the model reads of a tool's result: its text parts, else its structured content."""
    parts = [
        c.text if getattr(c, "type", None) == "text" else f"[{getattr(c, 'type', 'unknown')} content]"
        for c in result.content or ()
    ]
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, default=str, ensure_ascii=False)
    return "\n".join(parts)
