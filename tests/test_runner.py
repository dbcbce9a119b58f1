"""One agent's runner: outcomes of handlers, limits, leases, draining."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from blackboard import Agent, Board, Context, Item, NewItem, Retry, Status, agent
from blackboard.metrics import Metrics
from blackboard.runner import AgentRunner

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll a condition on the board until it holds, failing after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - the condition lives in Redis, not in an Event
            await anyio.sleep(0.01)


async def settled(board: Board, *ids: str) -> bool:
    return all(i is not None and i.terminal for i in await board.get_many(list(ids)))


@pytest.fixture
async def run(live_board: Board) -> AsyncIterator[Callable[[Agent], AgentRunner]]:
    """Start runners for agents on the live board; stop them all at the end."""
    runners: list[AgentRunner] = []
    async with anyio.create_task_group() as tg:

        def start(a: Agent) -> AgentRunner:
            runner = AgentRunner(live_board, a, Metrics(), sweep=0.5)
            runners.append(runner)
            tg.start_soon(runner.run)
            return runner

        yield start
        for r in runners:
            await r.drain(1)


async def test_results_and_outputs_are_written_back(live_board: Board, run: Any) -> None:
    @agent(consumes=["job"], produces=["job.part"])
    async def split(item: Item, ctx: Context) -> int:
        for i in range(item.payload["n"]):
            await ctx.post("job.part", {"i": i})
        return item.payload["n"]

    run(split)
    job = await live_board.post("job", {"n": 3})
    await until(lambda: settled(live_board, job.id))
    done = await live_board.get(job.id)
    assert done.result == 3 and done.handled_by == "split"
    parts = (await live_board.query(parent=job.id)).items
    assert sorted(p.payload["i"] for p in parts) == [0, 1, 2]


@pytest.mark.parametrize(
    ("handler_body", "error_part"),
    [
        ("raise", "ValueError: broken"),
        ("unserialisable", "result: expected JSON-serialisable"),
        ("bad output", "may post only"),
    ],
)
async def test_failures_fail_that_claim_only(
    live_board: Board, run: Any, handler_body: str, error_part: str
) -> None:
    @agent(consumes=["bad", "good"])
    async def worker(item: Item, ctx: Context) -> Any:
        if item.kind == "good":
            return "fine"
        if handler_body == "raise":
            raise ValueError("broken")
        if handler_body == "unserialisable":
            return {"when": object()}
        await ctx.post("not.declared")

    runner = run(worker)
    bad = await live_board.post("bad", max_attempts=1)
    good = await live_board.post("good")
    await until(lambda: settled(live_board, bad.id, good.id))
    assert (await live_board.get(good.id)).result == "fine"
    dead = await live_board.get(bad.id)
    assert dead.status is Status.DEAD and error_part in (dead.error or "")
    assert runner.metrics.dead.labels("bad", "worker")._value.get() == 1


async def test_handler_timeout_fails_the_attempt(live_board: Board, run: Any) -> None:
    @agent(consumes=["slow"], timeout=0.2)
    async def slow(item: Item, ctx: Context) -> None:
        await anyio.sleep(30)

    run(slow)
    item = await live_board.post("slow", max_attempts=1)
    await until(lambda: settled(live_board, item.id))
    got = await live_board.get(item.id)
    assert got.status is Status.DEAD and got.error == "handler timed out after 0.2s"


async def test_retry_asks_for_a_delay(live_board: Board, run: Any) -> None:
    @agent(consumes=["later"])
    async def later(item: Item, ctx: Context) -> str:
        if item.attempts == 1:
            raise Retry(0.05, "not yet")
        return "second time"

    run(later)
    item = await live_board.post("later")
    await until(lambda: settled(live_board, item.id))
    got = await live_board.get(item.id)
    assert got.result == "second time" and got.attempts == 2


async def test_heartbeats_keep_a_long_handler_lease(live_board: Board, run: Any) -> None:
    @agent(consumes=["long"], lease=0.3)
    async def long(item: Item, ctx: Context) -> str:
        await anyio.sleep(1.2)  # four lease periods
        return "kept"

    run(long)
    item = await live_board.post("long")
    await until(lambda: settled(live_board, item.id))
    got = await live_board.get(item.id)
    assert got.result == "kept" and got.attempts == 1  # never expired, never re-claimed


async def test_concurrency_limit_is_respected(live_board: Board, run: Any) -> None:
    running, peak = 0, 0

    @agent(consumes=["c"], concurrency=3, batch=3)
    async def worker(item: Item, ctx: Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.05)
        running -= 1

    run(worker)
    posted = await live_board.post_many([NewItem(kind="c") for _ in range(12)])
    await until(lambda: settled(live_board, *(p.id for p in posted)))
    assert peak == 3


async def test_drain_lets_handlers_finish_then_releases_the_rest(live_board: Board) -> None:
    release = anyio.Event()

    @agent(consumes=["quick"])
    async def quick(item: Item, ctx: Context) -> str:
        await release.wait()
        return "finished"

    @agent(consumes=["stuck"])
    async def stuck(item: Item, ctx: Context) -> None:
        await anyio.sleep(60)

    a = await live_board.post("quick")
    b = await live_board.post("stuck")
    runners = [AgentRunner(live_board, x, Metrics(), sweep=0.5) for x in (quick, stuck)]
    async with anyio.create_task_group() as tg:
        for r in runners:
            tg.start_soon(r.run)
        await until(lambda: _all_claimed(live_board, a.id, b.id))
        release.set()
        with anyio.fail_after(5):
            for r in runners:
                await r.drain(0.5)
    assert (await live_board.get(a.id)).result == "finished"
    back = await live_board.get(b.id)
    assert back.status is Status.OPEN and back.attempts == 0 and back.lease_token is None


async def _all_claimed(board: Board, *ids: str) -> bool:
    return all(i is not None and i.status is Status.CLAIMED for i in await board.get_many(list(ids)))


async def test_cancelled_item_stops_its_handler(live_board: Board, run: Any) -> None:
    stopped = anyio.Event()

    @agent(consumes=["cancel.me"], lease=0.3)
    async def worker(item: Item, ctx: Context) -> None:
        try:
            await anyio.sleep(60)
        finally:
            stopped.set()

    run(worker)
    item = await live_board.post("cancel.me")
    await until(lambda: _all_claimed(live_board, item.id))
    await live_board.cancel(item.id)
    with anyio.fail_after(5):
        await stopped.wait()  # the next heartbeat saw the lease was gone
    assert (await live_board.get(item.id)).status is Status.CANCELLED


async def test_two_agents_on_one_kind_share_the_work(live_board: Board, run: Any) -> None:
    gate = anyio.Event()

    def make(name: str) -> Agent:
        @agent(name=name, consumes=["shared"], concurrency=2)
        async def worker(item: Item, ctx: Context) -> str:
            await gate.wait()  # hold each claim until both agents have some
            return name

        return worker

    run(make("left"))
    run(make("right"))
    posted = await live_board.post_many([NewItem(kind="shared") for _ in range(4)])
    await until(lambda: _all_claimed(live_board, *(p.id for p in posted)))
    gate.set()
    await until(lambda: settled(live_board, *(p.id for p in posted)))
    done_by = [i.handled_by for i in await live_board.get_many([p.id for p in posted]) if i]
    assert sorted(done_by) == ["left", "left", "right", "right"]


async def test_reclaim_after_an_expired_lease_is_counted(live_board: Board, run: Any) -> None:
    item = await live_board.post("orphan")
    await live_board.claim("crashed-worker", ["orphan"], lease=0.05)  # and never comes back

    @agent(consumes=["orphan"])
    async def rescuer(item: Item, ctx: Context) -> str:
        return "rescued"

    runner = run(rescuer)
    await until(lambda: settled(live_board, item.id))
    got = await live_board.get(item.id)
    assert got.result == "rescued" and got.attempts == 2 and got.handled_by == "rescuer"
    assert runner.metrics.reclaims.labels("orphan")._value.get() == 1
