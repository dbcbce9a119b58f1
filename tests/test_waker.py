"""Wake-ups: one blocking read per board handle serves every idle waiter."""

from __future__ import annotations

import time

import anyio
import pytest

from blackboard import Board

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_many_waiters_leave_the_board_usable_and_all_wake(live_board: Board) -> None:
    board = live_board
    woke: list[int] = []

    async def waiter(n: int) -> None:
        if await board.wait_for_work(["many"], timeout=15):
            woke.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(300):  # more than redis-py's default pool of 100 connections
            tg.start_soon(waiter, n)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):  # commands still get a connection
            await board.post("many")
    assert sorted(woke) == list(range(300))


async def test_waiters_use_one_blocking_connection(redis_url: str) -> None:
    from tests.conftest import unique_board

    board = await Board.connect(redis_url, board=unique_board())
    try:
        before = len(await board.redis.client_list())
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(board.wait_for_work, ["conn.count"], 3)
            await anyio.wait_all_tasks_blocked()
            during = len(await board.redis.client_list())
            await board.post("conn.count")
        assert during - before <= 2  # the leader's BLPOP and the CLIENT LIST call itself
    finally:
        await board.close()


async def test_a_new_kind_interrupts_the_running_read(live_board: Board) -> None:
    board = live_board
    took: list[float] = []
    woke = anyio.Event()

    async def late_waiter() -> None:
        start = time.monotonic()
        assert await board.wait_for_work(["second"], timeout=10)
        took.append(time.monotonic() - start)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(board.wait_for_work, ["first"], 5)  # becomes the leader, blocking on "first"
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(late_waiter)
        await anyio.wait_all_tasks_blocked()
        await board.post("second")
        with anyio.fail_after(5):
            await woke.wait()
        tg.cancel_scope.cancel()
    assert took[0] < 0.5  # well under the leader's 1 s block


async def test_a_post_before_anyone_waits_wakes_the_next_waiter_at_once(live_board: Board) -> None:
    await live_board.post("early")  # the wake token waits in Redis
    start = time.monotonic()
    assert await live_board.wait_for_work(["early"], timeout=5)
    assert time.monotonic() - start < 0.5


async def test_a_token_read_for_nobody_goes_back_to_redis(live_board: Board) -> None:
    key = live_board.keys.wake("orphaned")
    await live_board.waker._deliver(key)  # the leader read it; no waiter here wants it any more
    assert await live_board.redis.llen(key) == 1  # so another process can still take it
    start = time.monotonic()
    assert await live_board.wait_for_work(["orphaned"], timeout=5)
    assert time.monotonic() - start < 0.5


async def test_a_lingering_watch_does_not_steal_another_process_wakeup(board_url: str) -> None:
    from tests.conftest import unique_board

    name = unique_board()
    here = await Board.connect(board_url, board=name)
    there = await Board.connect(board_url, board=name)
    try:
        async with anyio.create_task_group() as tg:
            # "here" waited on k.shared a moment ago, so its leader still watches it...
            assert not await here.wait_for_work(["k.shared"], timeout=0.05)
            tg.start_soon(here.wait_for_work, ["k.other"], 5)
            await anyio.wait_all_tasks_blocked()
            # ...while "there" (another process) waits on k.shared now.
            start = time.monotonic()
            with anyio.fail_after(5):
                async with anyio.create_task_group() as inner:
                    inner.start_soon(there.wait_for_work, ["k.shared"], 5)
                    await anyio.wait_all_tasks_blocked()
                    await here.post("k.shared")
            assert time.monotonic() - start < 1.0  # woken by the token, not by its timeout
            tg.cancel_scope.cancel()
    finally:
        await here.close()
        await there.close()


async def test_a_worker_coming_back_does_not_restart_the_read(live_board: Board) -> None:
    board = live_board
    assert not await board.wait_for_work(["again"], timeout=0.05)  # just finished an item
    async with anyio.create_task_group() as tg:
        tg.start_soon(board.wait_for_work, ["other"], 3)  # a leader watching "other" and "again"
        await anyio.wait_all_tasks_blocked()
        interrupts = await board.redis.llen(board.waker.control)
        tg.start_soon(board.wait_for_work, ["again"], 3)
        await anyio.wait_all_tasks_blocked()
        assert await board.redis.llen(board.waker.control) == interrupts == 0
        assert "again" in board.waker.watching
        tg.cancel_scope.cancel()


async def test_timeout_without_a_signal(live_board: Board) -> None:
    start = time.monotonic()
    assert await live_board.wait_for_work(["silent"], timeout=0.3) is False
    assert 0.25 < time.monotonic() - start < 2
