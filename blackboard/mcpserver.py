"""The board as an MCP server (the official SDK's `MCPServer`), for MCP clients: desktop apps,
IDEs, other agents' runtimes.

    tools      post_goal, get_item, wait_for_goal, goal_tree, list_kinds, list_agents, cancel_goal
    resources  blackboard://items/{id}, blackboard://goals/{id}/tree   (JSON)

Transports: stdio (`blackboard mcp`, one principal for the process, `mcp` by default) and
streamable HTTP at the daemon's `/mcp` (`HttpEndpoint`), where each request acts as the
principal of its bearer token, exactly like `/v1`. Either way the caller is held to the board's
policy: posts and cancels go through `Board` with `actor=principal`, reads through a
`ReadView`. Every failure the board reports (bad input, unknown kind, policy denial, unknown
id, timeout) comes back as a tool error (`isError`) or resource error naming the problem, never
as a crash of the server.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import Tool as MCPTool
from mcp_types import ToolAnnotations
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from blackboard import __version__, policy, posting, presence
from blackboard.board import Board
from blackboard.display import final_item, finished, traced
from blackboard.errors import BlackboardError, InvalidInput, ItemNotFound
from blackboard.guard import MAX_BODY, media_type
from blackboard.kinds import is_glob
from blackboard.models import TERMINAL_STATUSES, Item, TreeNode
from blackboard.views import ReadView

if TYPE_CHECKING:
    from blackboard.daemon import Daemon

__all__ = ["DEFAULT_PRINCIPAL", "HttpEndpoint", "build"]

DEFAULT_PRINCIPAL = "mcp"  # who a stdio client acts as under the board's policy
REFRESH = 2.0  # seconds a process without a daemon keeps the board's policy and schemas
MAX_WAIT = 3600.0
CANCELLED = "cancelled over MCP"
ITEM_URI, TREE_URI = "blackboard://items/{id}", "blackboard://goals/{id}/tree"
SCHEMA_CHARS = 1500  # a kind's schema in post_goal's description is cut after this many characters
INSTRUCTIONS = """\
A blackboard: agents coordinate through items posted on a shared board. Post a goal (an item of
a kind some agent consumes; list_kinds shows the kinds, their payload schemas and who consumes
them), then wait_for_goal until its tree of work is finished and read the answer (`final`), or
look at the tree with goal_tree. You act as one principal under the board's policy: a denied
action comes back as an error naming the rule."""

Principal = Callable[[Context[Any, Any]], str]
Id = Annotated[str, Field(description="An item id, e.g. a goal id that post_goal returned.")]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def describe(e: BlackboardError) -> str:
    """The problem in one line: the error's type, the field at fault and what was expected."""
    if isinstance(e, InvalidInput):
        return f"{type(e).__name__}: {e.field}: {e.problem}"
    if isinstance(e, ItemNotFound):
        return f"ItemNotFound: id: {e}"
    return f"{type(e).__name__}: {e}"  # PolicyDenied names principal, action, kind and rule


@contextmanager
def tool_errors() -> Iterator[None]:
    try:
        yield
    except BlackboardError as e:
        raise ToolError(describe(e)) from None


@contextmanager
def resource_errors() -> Iterator[None]:
    try:
        yield
    except (ItemNotFound, InvalidInput) as e:
        raise ResourceNotFoundError(describe(e)) from None
    except BlackboardError as e:
        raise ResourceError(describe(e)) from None


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


class Service:
    """What the tools and resources share: the board, who the caller is, fresh rules."""

    def __init__(
        self,
        board: Board,
        principal: str | Principal,
        *,
        follow_policy: bool = False,
        on_posted: Callable[[Item], None] | None = None,
    ) -> None:
        self.board = board
        self._principal = principal
        self.follow_policy = follow_policy
        self.on_posted = on_posted
        self._fresh_at = time.monotonic()

    def principal(self, ctx: Context[Any, Any]) -> str:
        return self._principal if isinstance(self._principal, str) else self._principal(ctx)

    async def fresh(self) -> Board:
        """The board, with the kind schemas (and, with `follow_policy`: the policy) it has now,
        at most `REFRESH` seconds old. A daemon keeps its board's policy itself; a stdio server
        has no daemon, so it follows the policy stored on the board."""
        if time.monotonic() - self._fresh_at > REFRESH:
            await self.board.load_kinds()
            if self.follow_policy:
                self.board.policy = await policy.fetch(self.board)
            self._fresh_at = time.monotonic()
        return self.board

    async def view(self, ctx: Context[Any, Any]) -> ReadView:
        return ReadView(await self.fresh(), self.principal(ctx))

    async def kinds(self, principal: str | None = None) -> list[dict[str, Any]]:
        """Kinds with a registered schema or a live consumer: schema, consumers, and (with a
        principal, under a policy) whether the principal may post it."""
        board = await self.fresh()
        schemas = board.registry.kinds()
        consumers: dict[str, list[str]] = {}
        for d in await presence.daemons(board):
            for a in d.agents if d.live else ():
                for pattern in a.consumes:
                    consumers.setdefault(pattern, [])
                    if a.name not in consumers[pattern]:
                        consumers[pattern].append(a.name)
        out = []
        for kind in sorted(set(schemas) | set(consumers)):
            entry: dict[str, Any] = {
                "kind": kind,
                "schema": schemas.get(kind),
                "consumed_by": consumers.get(kind, []),
            }
            if principal is not None and board.policy is not None and not is_glob(kind):
                entry["may_post"] = board.policy.decide(principal, "post", kind).allowed
            out.append(entry)
        return out


class BoardServer(MCPServer[Any]):
    """`MCPServer` whose post_goal description lists the board's kinds as they are now."""

    def __init__(self, service: Service) -> None:
        with _root_logging_kept():  # the SDK configures the root logger; the daemon has its own
            super().__init__(
                "blackboard", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
            )
        self.service = service

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        try:
            catalog = kinds_text(await self.service.kinds())
        except BlackboardError as e:
            catalog = f"\n\n(kinds unavailable: {describe(e)}; call list_kinds)"
        return [
            t.model_copy(update={"description": (t.description or "") + catalog})
            if t.name == "post_goal"
            else t
            for t in tools
        ]


def kinds_text(kinds: list[dict[str, Any]]) -> str:
    if not kinds:
        return "\n\nNo kind has a registered schema or a live consumer yet (list_kinds shows them)."
    lines = ["\n\nKinds on this board (payload JSON schema; consumed by):"]
    for k in kinds:
        schema = "no schema" if k["schema"] is None else json.dumps(k["schema"], separators=(",", ":"))
        if len(schema) > SCHEMA_CHARS:
            schema = schema[:SCHEMA_CHARS] + "... (cut: list_kinds has it whole)"
        by = ", ".join(k["consumed_by"]) or "no live agent"
        lines.append(f"- {k['kind']}: {schema}; consumed by {by}")
    return "\n".join(lines)


def progress_of(tree: TreeNode) -> tuple[int, int]:
    items = tree.walk()
    return sum(1 for i in items if i.status in TERMINAL_STATUSES), len(items)


class Tools(Service):
    """The tools and resources, as methods (their signatures and docstrings are what clients see)."""

    async def post_goal(
        self,
        ctx: Context[Any, Any],
        kind: Annotated[str, Field(description="The goal's kind, e.g. 'wordcount.goal' (see below).")],
        payload: Annotated[
            Any, Field(description="The goal's payload (JSON), valid for the kind's schema if it has one.")
        ] = None,
        priority: Annotated[int, Field(ge=0, le=1000, description="0-1000, higher is claimed first.")] = 0,
        idempotency_key: Annotated[
            str | None, Field(description="Posting the same key again returns the first goal.")
        ] = None,
        tags: Annotated[list[str] | None, Field(description="Free labels.")] = None,
    ) -> dict[str, Any]:
        """Post a goal (a root item) for the board's agents to work on. Returns it as stored; its
        `id` is what wait_for_goal, goal_tree and cancel_goal take."""
        with tool_errors():
            fields: dict[str, Any] = {"priority": priority}
            if idempotency_key is not None:
                fields["idempotency_key"] = idempotency_key
            if tags:
                fields["tags"] = tags
            board = await self.fresh()
            item = await board.post(kind, payload, actor=self.principal(ctx), **fields)
            if self.on_posted is not None:
                self.on_posted(item)
            return item.model_dump(mode="json")

    async def get_item(self, ctx: Context[Any, Any], id: Id) -> dict[str, Any]:
        """One item: kind, payload, status, result or error, attempts, parent and root."""
        with tool_errors():
            posting.check_id(id, "id")
            return (await (await self.view(ctx)).get(id)).model_dump(mode="json")

    async def wait_for_goal(
        self,
        ctx: Context[Any, Any],
        id: Id,
        timeout: Annotated[
            float, Field(gt=0, le=MAX_WAIT, description="Seconds to wait before giving up (an error).")
        ] = 60.0,
    ) -> dict[str, Any]:
        """Wait until every item in the goal's tree is finished (done, dead or cancelled),
        reporting progress (items finished of items in the tree) as the tree grows. Returns the
        goal, its `final` item (the one that finished last: the answer) and the counts."""
        with tool_errors():
            posting.check_id(id, "id")
            progress = [0, 0]
            try:
                with anyio.fail_after(timeout):
                    tree = await self._follow(ctx, id, progress)
            except TimeoutError:
                raise ToolError(
                    f"Timeout: timeout: goal {id} is not finished after {timeout:g} s ({progress[0]} of "
                    f"{progress[1]} items finished); call wait_for_goal again to keep waiting"
                ) from None
            final = final_item(tree)
            return {
                "goal": tree.item.model_dump(mode="json"),
                "status": final.status.value,
                "final": final.model_dump(mode="json"),
                "items": progress[1],
                "finished": progress[0],
            }

    async def _follow(self, ctx: Context[Any, Any], goal_id: str, progress: list[int]) -> TreeNode:
        """The goal's tree once it is finished; reports progress whenever more items finished."""
        view = await self.view(ctx)
        cursor = await view.last_event_id()  # taken before the first look: no change is missed
        sent = -1
        while True:
            tree = await view.tree(goal_id)
            progress[:] = progress_of(tree)
            if progress[0] > sent:  # MCP progress must increase with each notification
                await ctx.report_progress(
                    progress[0], progress[1], f"{progress[0]} of {progress[1]} items finished"
                )
                sent = progress[0]
            if finished(tree):
                return tree
            changed = False
            while not changed:  # block on the event stream until something in this goal changes
                events, cursor = await view.read_events(cursor, block=5.0)
                changed = any(e.root == tree.item.root for e in events)

    async def goal_tree(self, ctx: Context[Any, Any], id: Id) -> dict[str, Any]:
        """The lineage tree under an item (a goal's whole tree): each node's item and children,
        plus the goal's model usage (`usage`); the same JSON as `blackboard trace --json`."""
        with tool_errors():
            posting.check_id(id, "id")
            return await traced(await self.view(ctx), id)

    async def list_kinds(self, ctx: Context[Any, Any]) -> dict[str, Any]:
        """Kinds on this board that have a registered payload schema or a live consumer: the JSON
        schema (null: none), the agents consuming it, and, under a policy, whether you may post it.
        On a strict board only kinds with a schema can be posted."""
        with tool_errors():
            who = self.principal(ctx)
            return {"strict": self.board.strict, "principal": who, "kinds": await self.kinds(who)}

    async def list_agents(
        self,
        include_dead: Annotated[bool, Field(description="Also list daemons that stopped beating.")] = False,
    ) -> dict[str, Any]:
        """Agents running on the board's live daemons: what each consumes and produces, how many
        items it has in flight and has completed."""
        with tool_errors():
            found = [d for d in await presence.daemons(await self.fresh()) if d.live or include_dead]
            agents = [
                {"daemon": d.id, "live": d.live, **a.model_dump(mode="json")} for d in found for a in d.agents
            ]
            return {
                "agents": agents,
                "daemons": [d.model_dump(mode="json", exclude={"agents"}) for d in found],
            }

    async def cancel_goal(
        self,
        ctx: Context[Any, Any],
        id: Id,
        reason: Annotated[str, Field(max_length=500, description="Why; kept on the items.")] = CANCELLED,
    ) -> dict[str, Any]:
        """Cancel an item (a goal) and all its unfinished descendants. Returns how many were cancelled."""
        with tool_errors():
            posting.check_id(id, "id")
            board = await self.fresh()
            return {"cancelled": await board.cancel(id, reason, actor=self.principal(ctx))}

    async def item_resource(self, id: str, ctx: Context[Any, Any]) -> str:
        """One item, as get_item returns it."""
        with resource_errors():
            posting.check_id(id, "id")
            return dumps((await (await self.view(ctx)).get(id)).model_dump(mode="json"))

    async def tree_resource(self, id: str, ctx: Context[Any, Any]) -> str:
        """A goal's lineage tree with its model usage, as goal_tree returns it."""
        with resource_errors():
            posting.check_id(id, "id")
            return dumps(await traced(await self.view(ctx), id))


def build(
    board: Board,
    principal: str | Principal = DEFAULT_PRINCIPAL,
    *,
    follow_policy: bool = False,
    on_posted: Callable[[Item], None] | None = None,
) -> BoardServer:
    """The MCP server for `board`. `principal`: who callers act as (a name, or a function of
    the request's context); `follow_policy`: re-read the board's policy (no daemon does it)."""
    tools = Tools(board, principal, follow_policy=follow_policy, on_posted=on_posted)
    server = BoardServer(tools)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    server.add_tool(tools.post_goal, annotations=writes)
    for read in (tools.get_item, tools.wait_for_goal, tools.goal_tree, tools.list_kinds, tools.list_agents):
        server.add_tool(read, annotations=READ_ONLY)
    server.add_tool(tools.cancel_goal, annotations=writes.model_copy(update={"destructive_hint": True}))
    server.resource(ITEM_URI, name="item", mime_type="application/json")(tools.item_resource)
    server.resource(TREE_URI, name="goal-tree", mime_type="application/json")(tools.tree_resource)
    return server


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level


class HttpEndpoint:
    """The server over streamable HTTP: the ASGI app of the daemon's `/mcp` route.

    Stateless (each POST stands alone, its progress notifications on its own SSE response),
    so every request acts as the principal its bearer token names (`principal_of`, as for
    `/v1`), with nothing shared between the callers of different tokens. Host names and tokens
    are checked by the daemon's middleware before a request gets here; a POST must be JSON.
    `running()` is the session manager's lifetime: the daemon's HTTP server runs inside it.
    """

    def __init__(self, daemon: Daemon, principal_of: Callable[[Request], str]) -> None:
        def principal(ctx: Context[Any, Any]) -> str:
            request = ctx.request_context.request
            if not isinstance(request, Request):  # pragma: no cover - every HTTP message has one
                raise ToolError("no HTTP request to take the principal from")
            return principal_of(request)

        self.server = build(
            daemon.board, principal, on_posted=lambda item: daemon.metrics.posted.labels(item.kind).inc()
        )
        self.server.streamable_http_app(
            stateless_http=True,
            max_request_body_size=MAX_BODY,
            # The daemon's own middleware checks Host names (LoopbackOnly) or tokens (TokenAuth).
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager = self.server.session_manager

    def running(self) -> AbstractAsyncContextManager[None]:
        return self.manager.run()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        post = scope["type"] == "http" and scope["method"] == "POST"
        if post and (ctype := media_type(Request(scope))) != "application/json":  # as for /v1
            body = {
                "error": {
                    "type": "InvalidInput",
                    "field": "content-type",
                    "message": f"content-type: expected application/json, got {ctype or 'none'!r}",
                }
            }
            await JSONResponse(body, status_code=415)(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)
