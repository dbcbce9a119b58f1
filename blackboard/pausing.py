"""Interrupts: stop new claims for one goal or the whole board, and resume.

Work in flight finishes; nothing new of the goal (or board) is claimed until it is resumed.
A paused goal's items that would become claimable (posted, opened by their dependencies,
retried, back from an expired lease) wait instead, with reason `paused`; resuming reopens
exactly those. A paused board claims nothing at all. Each change is one script
(`lua/pause.lua`) with its audit record; pausing a goal needs the policy's `cancel` grant on
its kind, pausing the board `cancel` on every kind (`*`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from blackboard import policy
from blackboard.board import Board
from blackboard.errors import ItemNotFound
from blackboard.keys import Keyspace


async def _set(board: Board, goal: str | None, pause: bool, note: str, actor: str | None) -> int:
    if goal is None:
        await policy.enforce(board, actor, "cancel", ["*"])
    else:
        await policy.enforce(board, actor, "cancel", [(await board.get(goal)).kind])
    args = {"pause": pause, "note": note, **({"goal": goal} if goal else {})}
    if goal is not None:
        out = await board._run(board._scripts.pause, (), args, actor, keys=board.keys_of(goal))
        if out.get("err") == "not_found":
            raise ItemNotFound(str(goal))
        return int(out["ok"])
    # The board: every shard, each in its own step (each with its own audit record).
    outs = await board.each_shard(lambda keys: board._run(board._scripts.pause, (), args, actor, keys=keys))
    return sum(int(out["ok"]) for out in outs)


async def pause(board: Board, goal: str | None = None, note: str = "", *, actor: str | None = None) -> int:
    """Pause `goal` (or, with None, the board). Returns how many open items of it now wait."""
    return await _set(board, goal, True, note, actor)


async def resume(board: Board, goal: str | None = None, note: str = "", *, actor: str | None = None) -> int:
    """Undo `pause`. Returns how many items of the goal were reopened."""
    return await _set(board, goal, False, note, actor)


async def paused(board: Board) -> tuple[bool, list[str]]:
    """Whether the board is paused (on any shard), and which goals are."""

    async def read(keys: Keyspace) -> tuple[Any, list[Any]]:
        return await board.retrying(
            lambda: _both(board.redis.hexists(keys.meta, "paused"), board.redis.hkeys(keys.paused))
        )

    found = await board.each_shard(read)
    goals = [g for _, gs in found for g in gs]
    return any(whole for whole, _ in found), sorted(
        g.decode() if isinstance(g, bytes) else str(g) for g in goals
    )


async def _both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    return await first, await second
