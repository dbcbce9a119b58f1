"""A small MCP server for the LLM agents' MCP tests, run over stdio (or streamable HTTP).

Tools: `add(a, b)`, `secret()` (an agent must never be allowed it), `whoami()` (the
Authorization header the client sent over HTTP) and `crash()` (the process exits mid-call).
Every call first appends its tool's name and the server's pid to `$MCP_CALLS_FILE` (when set),
so a test can prove which tools ran, on which process, and which never did.

    python tests/support/mcp_tools_server.py            # stdio
    python tests/support/mcp_tools_server.py http PORT  # streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import os
import sys

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

server = MCPServer("blackboard-test-tools")


def _called(name: str) -> None:
    path = os.environ.get("MCP_CALLS_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{name} {os.getpid()}\n")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    _called("add")
    return a + b


@server.tool()
def secret() -> str:
    """Reveal the secret (no agent should ever be allowed this)."""
    _called("secret")
    return "the-secret-is-42"


@server.tool()
def whoami(ctx: Context) -> str:
    """The Authorization header the client sent (over HTTP; empty over stdio)."""
    _called("whoami")
    request = ctx.request_context.request
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("authorization", ""))


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    _called("crash")
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
