"""`blackboard mcp`: the board as an MCP server over stdio, for desktop and IDE clients."""

from __future__ import annotations

from typing import Annotated

import typer

from blackboard.cli.common import BoardName, Url, app, connect, run_async


@app.command("mcp")
def mcp_server(
    url: Url = "memory://",
    board: BoardName = "default",
    principal: Annotated[
        str,
        typer.Option(
            envvar="BLACKBOARD_MCP_PRINCIPAL",
            help="Who the MCP client acts as under the board's policy.",
        ),
    ] = "mcp",
    strict: Annotated[
        bool,
        typer.Option(
            "--strict/--open", envvar="BLACKBOARD_STRICT", help="Reject kinds with no registered schema."
        ),
    ] = False,
) -> None:
    """Serve the board to an MCP client over stdio (tools: post_goal, get_item, wait_for_goal,
    goal_tree, list_kinds, list_agents, cancel_goal; resources blackboard://items/{id} and
    blackboard://goals/{id}/tree). Logs go to stderr: stdout carries the protocol only."""
    from blackboard import logs, mcpserver

    logs.configure("json", "warning")  # stdout is the protocol's: nothing else may print there

    async def main() -> None:
        async with await connect(url, board) as b:
            b.strict = strict
            # No daemon here keeps the board's policy current: the server re-reads it.
            await mcpserver.build(b, principal, follow_policy=True).run_stdio_async()

    run_async(main)
