"""Redis restarts (AOF, fsync always): nothing posted or claimed is lost, and a Board rides out
the outage by reconnecting."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from blackboard import Board, LeaseLost, Status
from tests.conftest import unique_board
from tests.support import redis_server
from tests.support.redis_server import RedisServer
from tests.support.worker import wait_for
from tests.test_race import post_items

pytestmark = pytest.mark.anyio

KIND = "restart.job"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    redis_server.require()
    srv = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield srv
    srv.stop()


async def drain(
    board: Board,
    agent: str,
    *,
    lease: float = 30.0,
    n: int = 10,
    out: list[str] | None = None,
    fenced: list[LeaseLost] | None = None,
) -> list[str]:
    """Claim and complete until nothing of KIND is open or claimed; the ids completed.

    Completed ids go to `out` as they happen; a refused completion goes to `fenced` (raises
    when that is None).
    """
    out = [] if out is None else out
    while True:
        claims, due = await board.claim_with_due(agent, [KIND], n=n, lease=lease)
        for c in claims:
            try:
                await board.complete(c, {"by": agent})
            except LeaseLost as e:
                if fenced is None:
                    raise
                fenced.append(e)
            else:
                out.append(c.id)
        if claims:
            continue
        if due is None:
            return out
        # A claim whose reply was lost in the restart holds its item until the lease runs out.
        await board.wait_for_work([KIND], timeout=min(1.0, max(0.01, due - time.time())))


async def assert_all_done(board: Board, ids: list[str], attempts: int = 1) -> None:
    items = await board.get_many(ids)
    assert {(it.status, it.attempts) for it in items if it} == {(Status.DONE, attempts)}
    stats = await board.stats()
    assert stats.kinds[KIND].by_status == {Status.DONE: len(ids)}
    assert (stats.kinds[KIND].ready, stats.kinds[KIND].leased) == (0, 0)


@pytest.mark.timeout(60)
async def test_posted_items_survive_a_restart(server: RedisServer) -> None:
    async with await Board.connect(server.url, board=unique_board()) as board:
        # Given 200 posted items
        ids = await post_items(board, 200, KIND)
        pid = server.proc.pid if server.proc else None
        # When Redis restarts
        server.restart()
        assert server.proc is not None and server.proc.pid != pid
        # Then every item is still there, open, and can be claimed and completed once
        items = await board.get_many(ids)
        assert {it.status for it in items if it} == {Status.OPEN}
        assert len([it for it in items if it]) == 200
        with anyio.fail_after(30):
            completed = await drain(board, "after-restart")
        assert sorted(completed) == sorted(ids)
        await assert_all_done(board, ids)


@pytest.mark.timeout(60)
async def test_claims_survive_a_restart(server: RedisServer) -> None:
    async with await Board.connect(server.url, board=unique_board()) as board:
        # Given 100 items, 40 of them claimed
        ids = await post_items(board, 100, KIND)
        claims = await board.claim("before", [KIND], n=40, lease=60)
        assert len(claims) == 40
        # When Redis restarts
        server.restart()
        # Then the leases are still held: heartbeats and completions with the old tokens work
        beats = await board.heartbeat(claims, lease=60)
        assert [b for b in beats if isinstance(b, LeaseLost)] == []
        outcomes = await board.complete_many([(c, {"by": "before"}, ()) for c in claims])
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        # And the other 60 are still open for the taking
        with anyio.fail_after(30):
            rest = await drain(board, "after")
        assert sorted(rest + [c.id for c in claims]) == sorted(ids)
        await assert_all_done(board, ids)
        firsts = await board.get_many([c.id for c in claims])
        assert {it.result["by"] for it in firsts if it} == {"before"}


@pytest.mark.timeout(60)
async def test_board_reconnects_when_redis_restarts_mid_run(server: RedisServer) -> None:
    async with await Board.connect(server.url, board=unique_board(), reconnect_timeout=30) as board:
        # Given 1,000 items and four loops claiming and completing them
        n = 1000
        ids = await post_items(board, n, KIND)
        completed: list[str] = []
        # A lease that ran out in the outage is re-claimed by another loop and its completion
        # refused (fencing): allowed, as long as the item is then completed once by someone.
        fenced: list[LeaseLost] = []

        with anyio.fail_after(45):
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(
                        partial(drain, board, f"loop-{i}", lease=5, n=2, out=completed, fenced=fenced)
                    )
                # When Redis restarts while the loops run
                await wait_for(lambda: len(completed) >= 100, 20, "the loops to get going")
                before = len(completed)
                await anyio.to_thread.run_sync(server.restart)
        # Then they carried on through the outage and finished everything
        assert before < n, "the loops finished before the restart; it tested nothing"
        assert len(completed) > before
        done = Counter(completed)
        assert set(done) == set(ids)
        assert [i for i, times in done.items() if times != 1] == []
        items = await board.get_many(ids)
        assert {it.status for it in items if it} == {Status.DONE}
        stats = await board.stats()
        assert stats.kinds[KIND].by_status == {Status.DONE: n}
        assert (stats.kinds[KIND].ready, stats.kinds[KIND].leased) == (0, 0)
        # (a claim whose reply the restart swallowed is re-claimed after its lease: attempt 2)
        assert {it.attempts for it in items if it} <= {1, 2}
        by_id = {it.id: it for it in items if it}
        assert all(by_id[e.item_id].attempts == 2 for e in fenced)
