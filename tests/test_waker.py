"""Wake-ups: one blocking read per board handle serves every idle waiter."""

from __future__ import annotations

import time

import anyio
import pytest

from blackboard import Board, NewItem

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_many_waiters_leave_the_board_usable_and_a_burst_reaches_them_all(live_board: Board) -> None:
    board = live_board
    got: dict[int, str] = {}

    async def claimer(n: int) -> None:
        while n not in got:  # as an agent does: wait, claim, and wait again if beaten to it
            woken = await board.wait_for_work(["many"], timeout=15)
            if woken and (claims := await board.claim(f"w{n}", ["many"])):
                got[n] = claims[0].id

    async with anyio.create_task_group() as tg:
        for n in range(300):  # more than redis-py's default pool of 100 connections
            tg.start_soon(claimer, n)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(10):  # commands still get a connection, and the wake-ups chain
            posted = await board.post_many([NewItem(kind="many", payload=i) for i in range(300)])
    assert sorted(got) == list(range(300)) and sorted(got.values()) == sorted(p.id for p in posted)


async def test_one_token_wakes_a_few_waiters_not_all(live_board: Board) -> None:
    """10,000 idle agents of a kind must not all claim for one item: a token wakes
    WAKE_FANOUT of them; a claim that leaves work behind pushes the token on (claim.lua), and
    tokens that come in a burst wake more each time."""
    from blackboard.waker import WAKE_FANOUT, _Waiter

    waker = live_board.waker
    waiters = [_Waiter(["few"]) for _ in range(50)] + [_Waiter(["other"])]
    waker.waiters.update(waiters)
    await waker._deliver(waker.prefix + "few")
    woken = [w for w in waiters if w.signalled]
    assert len(woken) == WAKE_FANOUT and all("few" in w.kinds for w in woken)
    assert all(w.event.is_set() for w in woken) and not any(
        w.event.is_set() for w in waiters if not w.signalled
    )
    # The next token at once (a burst: claims found work left): twice as many, and not the ones
    # already woken and still on their way out.
    await waker._deliver(waker.prefix + "few")
    assert len([w for w in waiters if w.signalled]) == 3 * WAKE_FANOUT
    waker.delivered["few"] = (time.monotonic() - 1, 2 * WAKE_FANOUT)  # calm again: back to the few
    await waker._deliver(waker.prefix + "few")
    assert len([w for w in waiters if w.signalled]) == 4 * WAKE_FANOUT
    waker.waiters.clear()


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
