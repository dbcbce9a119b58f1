"""Claiming: order (priority, marks, age), batches, leases, wake-ups."""

from __future__ import annotations

import anyio
import pytest

from blackboard import Board, NewItem, Status

pytestmark = pytest.mark.anyio


async def test_claim_leases_with_token_deadline_and_attempt(board: Board, clock) -> None:
    item = await board.post("k")
    [claim] = await board.claim("w1", ["k"], lease=5)
    assert claim.id == item.id and claim.agent == "w1"
    assert claim.deadline == pytest.approx(clock.now * 1000 + 5000, abs=2)
    got = await board.get(item.id)
    assert got.status is Status.CLAIMED and got.attempts == 1
    assert (got.lease_owner, got.lease_token) == ("w1", claim.token)
    assert await board.claim("w2", ["k"]) == []  # one worker at a time


@pytest.mark.unsharded  # claim order, tokens and requests are per shard
async def test_each_claim_gets_a_fresh_increasing_token(board: Board) -> None:
    await board.post_many([NewItem(kind="k") for _ in range(3)])
    tokens = [c.token for c in await board.claim("w", ["k"], n=3)]
    assert len(set(tokens)) == 3 and tokens == sorted(tokens, key=int)


@pytest.mark.unsharded  # claim order, tokens and requests are per shard
async def test_higher_priority_first_then_oldest_first(board: Board) -> None:
    low = await board.post("k", priority=0)
    high = await board.post("k", priority=5)
    low2 = await board.post("k", priority=0)
    got = [c.id for c in await board.claim("w", ["k"], n=3)]
    assert got == [high.id, low.id, low2.id]


@pytest.mark.unsharded  # claim order is per shard
async def test_batch_claim_across_kinds_takes_the_best_overall(board: Board) -> None:
    a = await board.post("a", priority=1)
    b = await board.post("b", priority=9)
    await board.post("c", priority=100)  # not asked for
    got = [c.id for c in await board.claim("w", ["a", "b"], n=5)]
    assert got == [b.id, a.id]


async def test_glob_kinds_claim_matching_kinds_only(board: Board) -> None:
    await board.post("research.task")
    await board.post("research.finding")
    await board.post("support.request")
    got = sorted(c.item.kind for c in await board.claim("w", ["research.*"], n=10))
    assert got == ["research.finding", "research.task"]


@pytest.mark.unsharded  # claim order, tokens and requests are per shard
async def test_marks_raise_claim_order_and_decay(board: Board, clock) -> None:
    first = await board.post("k")
    weak = await board.post("k")
    strong = await board.post("k")
    await board.mark(weak.id, 1.0)
    assert await board.mark(strong.id, 3.0) == pytest.approx(3.0)
    # Reinforcing adds to what is left after decay: one half-life later, 3 -> 1.5 (+1).
    clock.advance(board.half_life)
    assert await board.mark(strong.id, 1.0) == pytest.approx(2.5)
    got = [c.id for c in await board.claim("w", ["k"], n=3)]
    assert got == [strong.id, weak.id, first.id]


@pytest.mark.unsharded  # claim order is per shard
async def test_old_marks_lose_to_fresh_ones_of_equal_strength(board: Board, clock) -> None:
    old = await board.post("k")
    new = await board.post("k")
    await board.mark(old.id, 1.0)
    clock.advance(board.half_life * 3)  # old mark is now 1/8
    await board.mark(new.id, 0.5)
    got = [c.id for c in await board.claim("w", ["k"], n=2)]
    assert got == [new.id, old.id]


async def test_heartbeat_extends_only_current_leases(board: Board, clock) -> None:
    await board.post("k")
    [claim] = await board.claim("w", ["k"], lease=5)
    clock.advance(4)
    [renewed] = await board.heartbeat([claim], lease=5)
    assert renewed.deadline == pytest.approx(clock.now * 1000 + 5000, abs=2)
    clock.advance(4)  # past the first deadline, inside the renewed one
    assert await board.claim("other", ["k"]) == []
    await board.reap()
    assert (await board.get(claim.id)).status is Status.CLAIMED


async def test_waiting_claimer_wakes_on_post(live_board: Board) -> None:
    board = live_board
    woke = anyio.Event()

    async def worker() -> None:
        assert await board.wait_for_work(["wake.me"], timeout=10)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        await board.post("wake.me")
        with anyio.fail_after(5):
            await woke.wait()
    assert len(await board.claim("w", ["wake.me"])) == 1


async def test_wait_for_work_times_out_when_nothing_comes(live_board: Board) -> None:
    with anyio.fail_after(5):
        assert await live_board.wait_for_work(["nothing.here"], timeout=0.2) is False


async def test_claim_due_reports_when_delayed_work_comes(board: Board, clock) -> None:
    await board.post("k", delay=30)
    claims, due = await board.claim_with_due("w", ["k"])
    assert claims == [] and due == pytest.approx(clock.now + 30, abs=0.01)


@pytest.mark.unsharded  # claim order, tokens and requests are per shard
async def test_a_resent_claim_request_returns_the_same_claims_and_takes_nothing_new(board: Board) -> None:
    # What a retry after a lost reply does: the same request (same id) reaches Redis twice.
    await board.post_many([NewItem(kind="k") for _ in range(5)])
    request = [f"{board.keys.tag}:claimreq:fixed-request"]
    args = {"agent": "w", "n": 2, "lease_ms": 30_000, "kinds": ["k"]}
    first = await board._run(board._scripts.claim, ["k"], args, "w", extra_keys=request)
    again = await board._run(board._scripts.claim, ["k"], args, "w", extra_keys=request)
    ids_tokens = lambda raw: [(raw[i], raw[i + 3]) for i in range(2, len(raw), 4)]  # noqa: E731
    assert len(ids_tokens(first)) == 2 and ids_tokens(again) == ids_tokens(first)
    stats = await board.stats()
    assert stats.kinds["k"].by_status == {Status.CLAIMED: 2, Status.OPEN: 3}
    # An item the request no longer holds (here: cancelled) is not handed out by a replay.
    gone, kept = (raw.decode() for raw, _ in ids_tokens(first))
    await board.cancel(gone)
    replay = await board._run(board._scripts.claim, ["k"], args, "w", extra_keys=request)
    assert [raw.decode() for raw, _ in ids_tokens(replay)] == [kept]


async def test_an_empty_claim_leaves_no_request_record(board: Board) -> None:
    for _ in range(3):
        assert await board.claim("idle", ["nothing.here"]) == []
    assert [k async for k in board.redis.scan_iter(match=f"{board.keys.tag}:claimreq:*")] == []
