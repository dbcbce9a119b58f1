"""Races on the claim protocol: many claimers, in tasks and in processes, each item done once."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from blackboard import Board, Claim, LeaseLost, NewItem, Status
from tests.conftest import unique_board
from tests.support.worker import spawn, stop_all, unfinished, wait_for

pytestmark = pytest.mark.anyio

KIND = "race.job"
ITEMS = 2000


async def post_items(board: Board, n: int, kind: str = KIND) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 500):
        batch = [NewItem(kind=kind, payload={"n": i}) for i in range(start, min(n, start + 500))]
        ids += [it.id for it in await board.post_many(batch)]
    assert len(set(ids)) == n
    return ids


async def assert_each_done_once(
    board: Board,
    ids: list[str],
    completions: list[tuple[str, str]],
    lost: list[LeaseLost],
    kind: str,
) -> None:
    """No completion was refused, each item was completed once, and the board agrees."""
    assert lost == []
    done = Counter(item_id for item_id, _ in completions)
    assert set(done) == set(ids)
    assert [i for i, times in done.items() if times != 1] == []
    assert len({token for _, token in completions}) == len(ids)  # a fencing token per claim
    items = await board.get_many(ids)
    assert {(it.status, it.attempts) for it in items if it} == {(Status.DONE, 1)}
    assert all(it and it.result["by"].startswith("claimer-") for it in items)
    stats = await board.stats()
    assert list(stats.kinds) == [kind]
    ks = stats.kinds[kind]
    assert ks.by_status == {Status.DONE: len(ids)}
    assert (ks.ready, ks.delayed, ks.leased, stats.dead_letters) == (0, 0, 0, 0)


@dataclass
class Tally:
    """What the claimers saw; a refused or repeated completion stops the race at once."""

    scope: anyio.CancelScope
    completions: list[tuple[str, str]] = field(default_factory=list)  # (id, token) accepted
    lost: list[LeaseLost] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def record(self, c: Claim, out: object) -> None:
        if isinstance(out, LeaseLost):
            self.lost.append(out)
        else:
            assert out == [], out
            self.completions.append((c.id, c.token))
        if isinstance(out, LeaseLost) or c.id in self.seen:
            self.scope.cancel()  # the protocol is broken: stop here and let the asserts say how
        self.seen.add(c.id)


async def claimer(board: Board, kind: str, i: int, tally: Tally) -> None:
    """Claim 1-10 at a time and complete them until nothing of `kind` is left unfinished."""
    agent, rng = f"claimer-{i}", random.Random(i)
    while True:
        claims = await board.claim(agent, [kind], n=rng.randint(1, 10), lease=300)
        # memory:// commands never suspend, so without a checkpoint one task would run
        # alone and no cancel scope (fail_after, an early stop) could ever reach it.
        await anyio.lowlevel.checkpoint()
        if not claims:
            if await unfinished(board, kind) == 0:
                return
            await board.wait_for_work([kind], timeout=0.2)
        elif i % 2:  # half the claimers finish their batch in one step
            outcomes = await board.complete_many([(c, {"by": agent}, ()) for c in claims])
            for c, out in zip(claims, outcomes, strict=True):
                tally.record(c, out)
        else:
            for c in claims:
                try:
                    tally.record(c, await board.complete(c, {"by": agent}))
                except LeaseLost as e:
                    tally.record(c, e)
                await anyio.lowlevel.checkpoint()


async def race(board: Board, claimers: int = 50, n: int = ITEMS, kind: str = KIND) -> None:
    """Post `n` items, drain them with `claimers` concurrent tasks, assert each was done once."""
    ids = await post_items(board, n, kind)
    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            tally = Tally(tg.cancel_scope)
            for i in range(claimers):
                tg.start_soon(claimer, board, kind, i, tally)
    await assert_each_done_once(board, ids, tally.completions, tally.lost, kind)


@pytest.mark.timeout(120)
async def test_concurrent_claimers_complete_each_item_once(live_board: Board) -> None:
    await race(live_board)


@pytest.mark.timeout(120)
async def test_worker_processes_complete_each_item_once(redis_url: str, tmp_path: Path) -> None:
    name = unique_board()
    async with await Board.connect(redis_url, board=name) as board:
        # Given four worker processes blocked waiting for work on a real Redis
        outs = [tmp_path / f"w{i}.out" for i in range(4)]
        ready = [tmp_path / f"w{i}.ready" for i in range(4)]
        procs = [
            spawn(
                "drain",
                tmp_path / f"w{i}.log",
                url=redis_url,
                board=name,
                kind=KIND,
                out=outs[i],
                ready=ready[i],
                expect=ITEMS,
                batch=1 + 3 * i,
                lease=300,
            )
            for i in range(4)
        ]
        try:
            await wait_for(lambda: all(r.exists() for r in ready), 30, "workers to connect")
            # When 2,000 items are posted
            ids = await post_items(board, ITEMS)
            # (a worker that fails stops the wait: the others may never finish then)
            await wait_for(
                lambda: all(p.poll() is not None for p in procs) or any(p.poll() for p in procs),
                60,
                "the workers to drain the board",
            )
            codes = [p.poll() for p in procs]
        finally:
            stop_all(procs)
        logs = "\n".join((tmp_path / f"w{i}.log").read_text() for i in range(4))
        assert codes == [0, 0, 0, 0], logs
        # Then every item was completed by exactly one worker, once
        lines = [line.split() for out in outs for line in out.read_text().splitlines()]
        done = Counter(item_id for item_id, _ in lines)
        assert set(done) == set(ids)
        assert [i for i, times in done.items() if times != 1] == []
        assert len({token for _, token in lines}) == ITEMS
        assert sum(1 for out in outs if out.read_text()) >= 2, "one worker did all the work"
        stats = await board.stats()
        assert stats.kinds[KIND].by_status == {Status.DONE: ITEMS}
        assert stats.kinds[KIND].leased == 0
        items = await board.get_many(ids)
        assert {(it.status, it.attempts) for it in items if it} == {(Status.DONE, 1)}
