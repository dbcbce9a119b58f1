"""`Memory`: an agent's private scratch store on the board (`ctx.memory`).

One hash per agent under the board's hash tag (`{bb:B}:memory:<agent>`): values are JSON, kept
across items and attempts and shared by the agent's handlers in every daemon, and an agent's
context addresses only its own hash, so through the runtime no other agent can read it. (Code
that opens its own Redis connection is bounded by the board's ACL user, not per agent: see
`blackboard.acl`.)
"""

from __future__ import annotations

import json
from typing import Any

from blackboard.board import Board
from blackboard.codec import dumps


class Memory:
    def __init__(self, board: Board, agent: str) -> None:
        self.board = board
        self.key = board.keys.memory(agent)

    async def get(self, name: str, default: Any = None) -> Any:
        raw = await self.board.retrying(lambda: self.board.redis.hget(self.key, name))
        return json.loads(raw) if raw is not None else default

    async def set(self, name: str, value: Any) -> None:
        """Keep `value` (JSON data) under `name`; `InvalidInput` naming `memory.NAME` if it isn't."""
        text = dumps(value, f"memory.{name}", self.board.max_payload_bytes)
        await self.board.retrying(lambda: self.board.redis.hset(self.key, name, text))

    async def delete(self, name: str) -> bool:
        return bool(await self.board.retrying(lambda: self.board.redis.hdel(self.key, name)))

    async def items(self) -> dict[str, Any]:
        raw = await self.board.retrying(lambda: self.board.redis.hgetall(self.key))
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
