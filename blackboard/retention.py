"""Retention: finished goals are deleted, whole trees at once, once they are old enough.

A board keeps every item until it is purged: results, usage and the indexes stay in Redis, so
a long-running board grows without bound unless something deletes what nobody needs. `purge`
finds goals whose whole tree finished before a cutoff and deletes them (`lua/purge.lua`, one
script per batch of goals, each goal all or nothing, each with its `purged` audit record). The
daemon runs it on its reaper's beat when `retention` is set; `blackboard purge` runs it by hand.

Goals are found from the lineage index ("root|id", in the order of the goals' ids: for ULIDs,
their creation order), a page of `scan_limit` entries at a time: the daemon's sweep goes on
from where the last one stopped and starts over at the end, so each sweep's work is bounded
and every goal is looked at in turn. Goals still running stay, and are looked at next round.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from blackboard import policy
from blackboard.errors import InvalidInput
from blackboard.keys import Keyspace
from blackboard.models import TERMINAL_STATUSES, Status

if TYPE_CHECKING:
    from blackboard.board import Board

BATCH = 100  # goals per script call
SCAN_LIMIT = 10_000  # lineage entries one sweep looks at
DONE = "$"  # a shard's position once its sweep reached the end
MAX_ITEMS = 50_000  # the largest tree deleted in one script (a bigger one is left, and logged)


async def purge(
    board: Board,
    older_than: float,
    *,
    actor: str | None = None,
    cursor: str | None = None,
    scan_limit: int = SCAN_LIMIT,
) -> tuple[int, str | None]:
    """Delete the goals whose whole tree finished more than `older_than` seconds ago, looking
    at up to `scan_limit` entries of the lineage index from `cursor` (None: the start). Returns
    how many items went and where to go on (None: the end was reached). Under a policy, `actor`
    needs the grant that pausing the whole board needs (`cancel` on `*`); the daemon's own
    sweep runs as `retention` without a check."""
    if actor is not None:
        await policy.enforce(board, actor, "cancel", ["*"])
    if board.clock is not None:
        now_ms = board.clock() * 1000
    else:  # the clock the scripts stamp finished_at with
        seconds, micros = await board.retrying(board.redis.time)
        now_ms = int(seconds) * 1000 + int(micros) // 1000
    before = int(now_ms - older_than * 1000)
    # One position per shard, joined by ',' ("" = from the start, DONE = reached the end).
    positions = cursor.split(",") if cursor else [""] * board.shards
    if len(positions) != board.shards:
        raise InvalidInput("cursor", f"expected {board.shards} positions joined by ',', got {cursor!r}")

    async def sweep(keys: Keyspace) -> tuple[int, str]:
        at = positions[keys.index]
        if at == DONE:
            return 0, DONE
        roots, nxt = await _finished_roots(board, keys, before, at or None, scan_limit)
        purged = 0
        for i in range(0, len(roots), BATCH):
            args = {"roots": roots[i : i + BATCH], "before": before, "max_items": MAX_ITEMS}
            out = await board._run(board._scripts.purge, (), args, actor or "retention", keys=keys)
            purged += sum(int(r.get("n", 0)) for r in out["ok"])
        return purged, nxt or DONE

    swept = await board.each_shard(sweep)
    after = [nxt for _, nxt in swept]
    return sum(n for n, _ in swept), (None if all(p == DONE for p in after) else ",".join(after))


async def purge_all(board: Board, older_than: float, *, actor: str | None = None) -> int:
    """`purge` over the whole lineage index, one page after another; returns the items gone."""
    total, cursor = await purge(board, older_than, actor=actor)
    while cursor is not None:
        n, cursor = await purge(board, older_than, actor=actor, cursor=cursor)
        total += n
    return total


async def _finished_roots(
    board: Board, keys: Keyspace, before: int, cursor: str | None, scan_limit: int
) -> tuple[list[str], str | None]:
    """Goals whose own item finished before `before`, from the lineage index after `cursor`
    (their whole trees are checked by the script), and where the next scan starts."""
    roots: list[str] = []
    lo = b"(" + cursor.encode() if cursor else b"-"
    last = cursor.split("|", 1)[0] if cursor else ""  # a tree may span pages
    page = await board.retrying(lambda: board.redis.zrangebylex(keys.lineage, lo, b"+", 0, scan_limit))
    fresh = [r for r in dict.fromkeys(m.decode().split("|", 1)[0] for m in page) if r != last]
    if fresh:
        states = await board.retrying(lambda: board.redis.hmget(keys.state, fresh))
        for root, raw in zip(fresh, states, strict=True):
            st = json.loads(raw) if raw else None
            if (
                st
                and Status(st["status"]) in TERMINAL_STATUSES
                and (st.get("finished_at") or before + 1) <= before
            ):
                roots.append(root)
    return roots, (page[-1].decode() if len(page) == scan_limit else None)
