"""Finishing claims: complete with outputs, fail with retries, release, reap, fencing."""

from __future__ import annotations

import pytest

from blackboard import Backoff, Board, LeaseLost, NewItem, Status

pytestmark = pytest.mark.anyio


async def test_complete_stores_result_and_posts_outputs_as_children(board: Board) -> None:
    goal = await board.post("g", {"n": 2})
    [claim] = await board.claim("w", ["g"])
    outs = await board.complete(claim, {"total": 2}, outputs=[NewItem(kind="x", payload=i) for i in range(2)])
    done = await board.get(goal.id)
    assert done.status is Status.DONE and done.result == {"total": 2} and done.lease_token is None
    assert done.handled_by == "w" and done.lease_owner is None
    assert [o.payload for o in outs] == [0, 1]
    assert all(o.parent == goal.id and o.root == goal.id and o.status is Status.OPEN for o in outs)


async def test_repeated_completion_posts_nothing_twice(board: Board) -> None:
    await board.post("g")
    [claim] = await board.claim("w", ["g"])
    outs = await board.complete(claim, 1, outputs=[NewItem(kind="x"), NewItem(kind="x")])
    again = await board.complete(claim, 1, outputs=[NewItem(kind="x"), NewItem(kind="x")])
    assert sorted(o.id for o in again) == sorted(o.id for o in outs)
    assert (await board.stats()).kinds["x"].by_status == {Status.OPEN: 2}


async def test_stale_token_is_fenced_out_and_changes_nothing(board: Board, clock) -> None:
    item = await board.post("k")
    [old] = await board.claim("w1", ["k"], lease=1)
    clock.advance(2)
    [new] = await board.claim("w2", ["k"], lease=30)  # the expired lease is taken over
    assert new.token != old.token
    before = await board.get(item.id)
    with pytest.raises(LeaseLost, match="no longer current"):
        await board.complete(old, "late")
    with pytest.raises(LeaseLost):
        await board.fail(old, "late")
    [hb] = await board.heartbeat([old])
    assert isinstance(hb, LeaseLost) and hb.status == "claimed"
    [rel] = await board.release([old])
    assert isinstance(rel, LeaseLost)
    assert await board.get(item.id) == before
    await board.complete(new, "on time")
    assert (await board.get(item.id)).result == "on time"


async def test_fail_retries_with_backoff_then_dead_letters_keeping_the_error(board: Board, clock) -> None:
    board.backoff = Backoff(base=2, factor=2, cap=100, jitter=0)
    item = await board.post("k", max_attempts=2)
    [c1] = await board.claim("w", ["k"])
    assert await board.fail(c1, "boom 1") is Status.FAILED
    got = await board.get(item.id)
    assert got.error == "boom 1" and got.not_before == pytest.approx(clock.now * 1000 + 2000, abs=2)
    assert await board.claim("w", ["k"]) == []  # backing off
    clock.advance(2.1)
    [c2] = await board.claim("w", ["k"])
    assert c2.item.attempts == 2
    assert await board.fail(c2, "boom 2") is Status.DEAD
    dead = await board.get(item.id)
    assert dead.status is Status.DEAD and dead.error == "boom 2"
    assert [d.id for d in (await board.dead_letters()).items] == [item.id]


async def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    b = Backoff(base=1, factor=2, cap=10, jitter=0.5)
    for attempt, full in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        delays = [b.delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > 0  # jittered


async def test_fail_without_retry_dead_letters_now_and_requeue_revives(board: Board) -> None:
    item = await board.post("k", max_attempts=5)
    [claim] = await board.claim("w", ["k"])
    assert await board.fail(claim, "fatal", retry=False) is Status.DEAD
    assert await board.requeue([item.id]) == 1
    got = await board.get(item.id)
    assert got.status is Status.OPEN and got.attempts == 0
    assert len(await board.claim("w", ["k"])) == 1


async def test_fail_with_explicit_delay(board: Board, clock) -> None:
    item = await board.post("k")
    [claim] = await board.claim("w", ["k"])
    await board.fail(claim, "later", retry=60)
    assert (await board.get(item.id)).not_before == pytest.approx(clock.now * 1000 + 60_000, abs=2)


async def test_release_gives_back_without_counting_an_attempt(board: Board) -> None:
    item = await board.post("k")
    [claim] = await board.claim("w", ["k"])
    assert await board.release([claim]) == [None]
    got = await board.get(item.id)
    assert got.status is Status.OPEN and got.attempts == 0 and got.lease_owner is None


async def test_reap_returns_expired_leases_then_dead_letters_at_max_attempts(board: Board, clock) -> None:
    item = await board.post("k", max_attempts=2)
    await board.claim("w", ["k"], lease=1)
    clock.advance(1.5)
    assert await board.reap() == {"expired": 1, "promoted": 0}
    got = await board.get(item.id)
    assert got.status is Status.OPEN and got.attempts == 1 and "lease expired" in (got.error or "")
    await board.claim("w", ["k"], lease=1)
    clock.advance(1.5)
    await board.reap()
    dead = await board.get(item.id)
    assert dead.status is Status.DEAD and "lease expired" in (dead.error or "")


async def test_reap_from_many_callers_handles_each_lease_once(board: Board, clock) -> None:
    import anyio

    await board.post_many([NewItem(kind="k") for _ in range(20)])
    await board.claim("w", ["k"], n=20, lease=1)
    clock.advance(2)
    totals = []

    async def reap() -> None:
        totals.append((await board.reap())["expired"])

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(reap)
    assert sum(totals) == 20
    assert (await board.stats()).kinds["k"].by_status == {Status.OPEN: 20}


async def test_lease_expiry_is_reported_per_kind_by_claim_and_reap(board: Board, clock) -> None:
    seen: list[tuple[str, int]] = []
    board.on_lease_expired = lambda kind, n: seen.append((kind, n))
    await board.post_many([NewItem(kind="a"), NewItem(kind="a"), NewItem(kind="b")])
    await board.claim("w", ["a", "b"], n=3, lease=1)
    clock.advance(2)
    await board.claim("w", ["a"], n=0 + 1, lease=30)  # finds kind a's two expired leases
    await board.reap()  # and the reaper finds b's
    # Counted per kind (on a sharded board each shard reports its own: sum them).
    totals: dict[str, int] = {}
    for kind, n in seen:
        totals[kind] = totals.get(kind, 0) + n
    assert totals == {"a": 2, "b": 1}


async def test_ready_at_records_when_an_item_became_claimable(board: Board, clock) -> None:
    item = await board.post("k", delay=5)
    assert item.ready_at is None
    clock.advance(6)
    [claim] = await board.claim("w", ["k"])
    assert claim.item.ready_at == pytest.approx(clock.now * 1000, abs=2)


async def test_complete_without_reading_outputs_back(board: Board) -> None:
    await board.post("g")
    [claim] = await board.claim("w", ["g"])
    assert await board.complete(claim, 1, [NewItem(kind="x")], fetch_outputs=False) == []
    assert (await board.stats()).kinds["x"].by_status == {Status.OPEN: 1}
