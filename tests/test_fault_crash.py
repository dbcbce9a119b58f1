"""A worker process killed (-9) mid-handler: its lease expires, another worker finishes the item,
and the dead worker's late writes are fenced out."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from blackboard import Board, Claim, LeaseLost, Status
from tests.conftest import unique_board
from tests.support import redis_server
from tests.support.redis_server import RedisServer
from tests.support.worker import spawn, stop_all, wait_for

pytestmark = pytest.mark.anyio

KIND = "crash.job"
LEASE = 1.5


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    redis_server.require()
    srv = RedisServer(tmp_path / "redis").start()
    yield srv
    srv.stop()


async def claim_when_due(board: Board, agent: str, timeout: float) -> Claim:
    """Claim one item of KIND, waiting for posts and for leases to come due (no fixed sleeps)."""
    with anyio.fail_after(timeout):
        while True:
            claims, due = await board.claim_with_due(agent, [KIND], n=1, lease=30)
            if claims:
                return claims[0]
            wait = 1.0 if due is None else max(0.01, due - time.time())
            await board.wait_for_work([KIND], timeout=min(wait, 1.0))


async def snapshot(board: Board, item_id: str) -> tuple[object, ...]:
    """The item, its stored result and the board's event count: what a write would change."""
    events, _ = await board.read_events("0-0", count=100_000)
    result = await board.redis.hget(board.keys.results, item_id)
    return await board.get(item_id), result, len(events), await board.stats()


async def assert_fenced(board: Board, stale: Claim, status: Status) -> None:
    """Every write with the `stale` claim is refused as LeaseLost and changes nothing."""
    before = await snapshot(board, stale.id)
    with pytest.raises(LeaseLost) as lost:
        await board.complete(stale, {"by": "the dead"})
    assert (lost.value.item_id, lost.value.token, lost.value.status) == (
        stale.id,
        stale.token,
        status,
    )
    with pytest.raises(LeaseLost):
        await board.fail(stale, "late failure")
    with pytest.raises(LeaseLost):
        await board.fail(stale, "late failure", retry=False)
    [beat] = await board.heartbeat([stale], lease=60)
    assert isinstance(beat, LeaseLost)
    [released] = await board.release([stale])
    assert isinstance(released, LeaseLost)
    assert await snapshot(board, stale.id) == before


@pytest.mark.timeout(60)
async def test_killed_worker_item_is_reclaimed_and_its_late_writes_fenced(
    server: RedisServer, tmp_path: Path
) -> None:
    name = unique_board()
    async with await Board.connect(server.url, board=name) as board:
        item = await board.post(KIND, {"job": 1})
        # Given a worker process that claimed the item and hangs in its handler
        out = tmp_path / "hung.out"
        proc = spawn(
            "hang", tmp_path / "hung.log", url=server.url, board=name, kind=KIND, out=out, lease=LEASE
        )
        try:
            await wait_for(out.exists, 30, "the worker to claim the item")
            item_id, old_token = out.read_text().split()
            assert item_id == item.id
            held = await board.get(item.id)
            assert (held.status, held.lease_token, held.attempts) == (Status.CLAIMED, old_token, 1)
            assert held.lease_owner == f"hung-{proc.pid}"
            # When it is killed with SIGKILL (no chance to release its lease)
            os.kill(proc.pid, signal.SIGKILL)
            assert await anyio.to_thread.run_sync(proc.wait, 10) == -signal.SIGKILL
        finally:
            stop_all([proc])

        # Then a second worker claims the item once its lease has expired
        second = await claim_when_due(board, "second", timeout=20)
        assert second.id == item.id
        assert second.token != old_token
        assert (second.item.attempts, second.item.lease_owner) == (2, "second")
        assert held.lease_deadline and second.item.claimed_at
        assert second.item.claimed_at >= held.lease_deadline  # not a moment before it expired
        stale = Claim(item=held, token=old_token, agent=held.lease_owner or "", deadline=0)
        # And the dead worker's late writes while the second one holds it change nothing
        await assert_fenced(board, stale, Status.CLAIMED)
        assert (await board.get(item.id)).lease_token == second.token
        # And the second worker completes it, exactly once
        await board.complete(second, {"by": "second"})
        done = await board.get(item.id)
        assert (done.status, done.attempts, done.result) == (Status.DONE, 2, {"by": "second"})
        events, _ = await board.read_events("0-0", count=10_000)
        assert [(ev.type, ev.data.get("actor")) for ev in events if ev.id == item.id] == [
            ("posted", None),
            ("claimed", f"hung-{proc.pid}"),
            ("expired", "second"),
            ("claimed", "second"),
            ("done", "second"),
        ]
        # And its late writes after the completion change nothing either
        await assert_fenced(board, stale, Status.DONE)
        stats = await board.stats()
        assert stats.kinds[KIND].by_status == {Status.DONE: 1}
        assert (stats.kinds[KIND].leased, stats.kinds[KIND].ready) == (0, 0)
