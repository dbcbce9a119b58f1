"""A2A (the Agent2Agent protocol, with the official `a2a-sdk`) in both directions.

- `blackboard.a2a.server`: the daemon *is* an A2A agent. It publishes a card at
  `/.well-known/agent-card.json` whose skills are the goal kinds its agents take, and serves
  JSON-RPC (with SSE streaming) at `/a2a`: a message becomes a goal on the board, and the A2A
  task follows the goal's tree to its result.
- `blackboard.a2a.remote`: a `remote` agent, declared in YAML, consumes board kinds and
  delegates each item to a remote A2A agent, writing the remote artifact back as its result.

Every module here imports the SDK by its absolute top-level name (`a2a...`); this package is
`blackboard.a2a`, so the two never shadow each other. Nothing here is imported until the HTTP
app is built or a `remote` plugin loads.
"""

from __future__ import annotations

from typing import Any


def plain(value: Any) -> Any:
    """JSON from a protobuf `Value`: whole numbers back to ints (protobuf keeps only doubles, so
    a payload's `3` arrives as `3.0`; a float that is whole comes back as an int)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
