"""The board-wide figures every daemon reports on its presence beat.

They are the board's own state (the same on every daemon of a board; aggregate them with `max`):
live daemons and agents, items by kind and status, which kinds have consumers, how old the
oldest due open item of each kind and the longest-waiting approval are, and the audit chain's
length. One more, approval wait times, is popped (each wait by one daemon), so it adds up.
"""

from __future__ import annotations

import fnmatch
import json
import time
from typing import TYPE_CHECKING

from blackboard import approvals, audit, presence
from blackboard.models import Status

if TYPE_CHECKING:
    from blackboard.board import Board
    from blackboard.keys import Keyspace
    from blackboard.metrics import Metrics

# Open ids per kind (and pending approvals) whose creation times the age gauges read each beat.
OLDEST_SAMPLE = 100


async def report(board: Board, metrics: Metrics) -> None:
    """Set every board gauge from the board as it is now (a few round trips per kind)."""
    name = board.name
    live = [d for d in await presence.daemons(board) if d.live]
    metrics.live_daemons.labels(name).set(len(live))
    metrics.live_agents.labels(name).set(sum(len(d.agents) for d in live))

    async def approvals_of(keys: Keyspace) -> tuple[int, float]:
        waiting = await board.retrying(lambda: board.redis.zcard(keys.approvals))
        pending = await board.retrying(lambda: board.redis.zrange(keys.approvals, 0, OLDEST_SAMPLE - 1))
        return waiting, await _oldest(board, keys, [i.decode() for i in pending])

    found = await board.each_shard(approvals_of)
    metrics.approvals_pending.labels(name).set(sum(n for n, _ in found))
    metrics.oldest_approval.labels(name).set(max(age for _, age in found))
    for verdict, seconds in await approvals.pop_waits(board):
        metrics.approval_wait.labels(verdict).observe(seconds)
    metrics.audit_records.labels(name).set(sum(h.seq for h in await audit.heads(board)))
    # Per kind: counts by status, the live agents that consume it, and the age of its oldest
    # due open item. Open ids sort by their goal's creation (a child keeps its goal's
    # timestamp), so the first OLDEST_SAMPLE of the status index are the oldest goals' open
    # items: exact up to that many open items of a kind, a lower bound past it.
    patterns = [a.consumes for d in live for a in d.agents]
    for kind, ks in (await board.stats()).kinds.items():
        for status in Status:
            metrics.items.labels(name, kind, status.value).set(ks.by_status.get(status, 0))
        consumers = sum(any(fnmatch.fnmatchcase(kind, p) for p in ps) for ps in patterns)
        metrics.kind_consumers.labels(name, kind).set(consumers)
        age = (
            max(await board.each_shard(lambda keys: _oldest_open(board, keys, kind)))  # noqa: B023
            if ks.by_status.get(Status.OPEN)
            else 0
        )
        metrics.oldest_open.labels(name, kind).set(age)


async def _oldest_open(board: Board, keys: Keyspace, kind: str) -> float:
    lo = f"[open|{kind}|".encode()
    got = await board.retrying(
        lambda: board.redis.zrangebylex(keys.status, lo, lo + b"\xff", 0, OLDEST_SAMPLE)
    )
    return await _oldest(board, keys, [m.decode().rsplit("|", 1)[1] for m in got], due=True)


async def _oldest(board: Board, keys: Keyspace, ids: list[str], *, due: bool = False) -> float:
    """Seconds since the earliest `created_at` of `ids` (0: none), by this host's clock (the
    board's, if it has one). With `due`, items whose `not_before` is ahead (a delayed post, a
    retry's back-off) don't count."""
    if not ids:
        return 0.0
    states = await board.retrying(lambda: board.redis.hmget(keys.state, ids))
    now = (board.clock or time.time)() * 1000
    created = [
        st["created_at"]
        for st in (json.loads(raw) for raw in states if raw)
        if not (due and (st.get("not_before") or 0) > now)
    ]
    return max(0.0, now - min(created)) / 1000 if created else 0.0
