"""Human approval gates: items a policy rule marks wait, unclaimable, until a principal decides.

A rule in a policy file (`approvals: [{kind, when?, timeout_seconds?, on_timeout?}]`) makes
matching posts wait with reason `approval` (the post script counts the approval as one more
thing the item waits for, like a dependency). `approve` lets it go on (to its dependencies, or
open); `reject` dead-letters it with the note. Both are one script (`lua/approve.lua`), need the
policy's `approve` grant on the kind, and leave their audit record with the principal and note.
A rule's timeout is decided by the daemon's reaper: `reject`, or `escalate` (it waits on; an
`escalated` event says it waited too long).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from blackboard import policy
from blackboard.board import Board
from blackboard.errors import InvalidInput, InvalidState, ItemNotFound
from blackboard.keys import Keyspace
from blackboard.models import Item

Verdict = Literal["approve", "reject"]


async def decide(
    board: Board, item_id: str, verdict: Verdict, note: str = "", *, actor: str | None = None
) -> Item:
    """Approve or reject one item waiting for approval; returns it as it is now. Raises
    `ItemNotFound`, `InvalidState` (not waiting for approval) or `PolicyDenied`."""
    if verdict not in ("approve", "reject"):
        raise InvalidInput("verdict", f"expected approve or reject, got {verdict!r}")
    item = await board.get(item_id)
    await policy.enforce(board, actor, "approve", [item.kind])
    decision = [{"id": item_id, "verdict": verdict, "note": note}]
    result = (await _run(board, board.keys_of(item_id), decision, [item.kind], actor))[0]
    if result.get("err") == "not_found":
        raise ItemNotFound(item_id)
    if "err" in result:
        raise InvalidState(item_id, str(result.get("status")), "waiting for approval")
    return await board.get(item_id)


async def approve(board: Board, item_id: str, note: str = "", *, actor: str | None = None) -> Item:
    return await decide(board, item_id, "approve", note, actor=actor)


async def reject(board: Board, item_id: str, note: str, *, actor: str | None = None) -> Item:
    return await decide(board, item_id, "reject", note, actor=actor)


async def pending(board: Board, limit: int = 1000) -> list[tuple[Item, float | None]]:
    """Items waiting for approval, oldest deadline first, with their deadline (unix s) if any."""

    async def read(keys: Keyspace) -> list[tuple[Any, float]]:
        return list(
            await board.retrying(lambda: board.redis.zrange(keys.approvals, 0, limit - 1, withscores=True))
        )

    # By deadline, then id (creation), as one shard's zset orders them.
    raw = sorted(
        (pair for found in await board.each_shard(read) for pair in found), key=lambda p: (p[1], p[0])
    )
    raw = raw[:limit]
    items = await board.get_many([i.decode() if isinstance(i, bytes) else i for i, _ in raw])
    return [
        (it, score / 1000 if score < 2**53 - 1 else None)
        for it, (_, score) in zip(items, raw, strict=True)
        if it
    ]


async def pop_waits(board: Board, count: int = 1000) -> list[tuple[str, float]]:
    """(verdict, seconds waited) of approvals decided since the last pop, oldest first. Each is
    popped once, by whichever daemon gets it, so the daemons' histograms add up to the board's."""

    async def pop(keys: Keyspace) -> list[Any]:
        return list(await board.retrying(lambda: board.redis.lpop(keys.waits, count)) or ())

    out = []
    for entry in (e for found in await board.each_shard(pop) for e in found):
        verdict, _, ms = (entry.decode() if isinstance(entry, bytes) else entry).partition(":")
        out.append((verdict, int(ms) / 1000))
    return out


async def decide_due(board: Board, limit: int = 100) -> int:
    """Decide the approvals whose timeout has passed, as their rules say. Safe from many
    daemons at once: the script decides each only while it is still due. Returns how many."""
    top = int((board.clock() if board.clock else time.time()) * 1000)

    async def due(keys: Keyspace) -> int:
        raw = await board.retrying(
            lambda: board.redis.zrangebyscore(keys.approvals, "-inf", top, start=0, num=limit)
        )
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw]
        decisions = [{"id": i, "verdict": "timeout", "note": "approval timed out"} for i in ids]
        out = await _run(board, keys, decisions, [], "reaper") if decisions else []
        return sum(1 for r in out if "ok" in r)

    return sum(await board.each_shard(due))


async def _run(
    board: Board, keys: Keyspace, decisions: list[dict[str, Any]], kinds: list[str], actor: str | None
) -> Any:
    return (await board._run(board._scripts.approve, kinds, {"decisions": decisions}, actor, keys=keys))["ok"]
