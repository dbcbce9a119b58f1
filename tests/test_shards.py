"""A board of several shards, in one process: goals stay whole on their shard, cross-shard
references are refused before anything is written, and what spans goals (claims, queries,
events, stats, pause) covers every shard. Each runs on memory:// and a real redis-server."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import anyio
import pytest

from blackboard import Board, InvalidInput, NewItem, Status, ids, pausing
from tests.conftest import unique_board
from tests.support.invariants import check_invariants, snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

K = 4


@pytest.fixture
async def sharded(board_url: str) -> AsyncIterator[Board]:
    b = await Board.connect(board_url, board=unique_board(), shards=K)
    yield b
    await b.close()


async def goals_on_every_shard(board: Board, per_shard: int = 2) -> list[str]:
    """Posts goals until every shard holds `per_shard` of them; returns their ids."""
    made: list[str] = []
    while min(Counter(board.keys_of(i).index for i in made).get(s, 0) for s in range(K)) < per_shard:
        made += [it.id for it in await board.post_many([NewItem(kind="g", payload=n) for n in range(8)])]
    return made


async def test_a_goal_with_fan_out_and_a_join_lives_on_its_shard(sharded: Board) -> None:
    board = sharded
    goals = await goals_on_every_shard(board)
    while claims := await board.claim("w", ["g"], n=50):
        outputs = [[NewItem(kind="step", payload=i) for i in range(3)] for _ in claims]
        done = await board.complete_many([(c, None, outs) for c, outs in zip(claims, outputs, strict=True)])
        for claim, children in zip(claims, done, strict=True):
            assert not isinstance(children, BaseException)
            join = await board.post("join", parent=claim.id, after=[c.id for c in children])
            shards = {board.keys_of(i).index for i in [claim.id, join.id, *(c.id for c in children)]}
            assert shards == {board.keys_of(claim.id).index}
    while claims := await board.claim("w", ["step", "join"], n=100):
        await board.complete_many([(c, None, ()) for c in claims])
    statuses = await check_invariants(board)  # per shard; every item where its id routes
    assert Counter(statuses.values()) == {"done": len(goals) * 5}
    trees = [await board.tree(g) for g in goals]
    assert all(len(t.children) == 4 for t in trees)  # three steps and the join, from one shard


async def test_cross_shard_references_are_refused_and_nothing_is_written(sharded: Board) -> None:
    board = sharded
    goals = await goals_on_every_shard(board, 1)
    by_shard = {board.keys_of(g).index: g for g in goals}
    here, there = by_shard[0], by_shard[1]
    before = await snapshot(board)
    with pytest.raises(InvalidInput) as caught:
        await board.post_many(
            [
                NewItem(kind="x", after=[here]),
                NewItem(kind="x", id=ids.id_on_shard(2, K), after=[there]),
            ]
        )
    assert caught.value.field == "items[1].after[0]" and "shard" in str(caught.value)
    with pytest.raises(InvalidInput) as caught:
        await board.post("x", after=[here, there])
    assert caught.value.field == "after[1]"
    assert await snapshot(board) == before
    # Left to choose its own id, an item follows its parent or first dependency.
    follower = await board.post("x", after=[here])
    assert board.keys_of(follower.id) == board.keys_of(here) and follower.status is Status.WAITING


async def test_an_idempotency_key_finds_its_goal_again(sharded: Board) -> None:
    first = [await sharded.post("order", {"n": n}, idempotency_key=f"order-{n}") for n in range(12)]
    again = [await sharded.post("order", {"n": n}, idempotency_key=f"order-{n}") for n in range(12)]
    assert [a.id for a in again] == [f.id for f in first]
    assert len({sharded.keys_of(f.id).index for f in first}) > 1  # the keys chose several shards
    assert (await sharded.stats()).kinds["order"].by_status == {Status.OPEN: 12}


async def test_queries_page_over_every_shard_in_one_order(sharded: Board) -> None:
    posted = {it.id for it in await sharded.post_many([NewItem(kind="q", payload=n) for n in range(57)])}
    seen: list[str] = []
    cursor = None
    while True:
        page = await sharded.query(kind="q", status="open", limit=10, cursor=cursor)
        seen += [it.id for it in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted(posted)  # each once, in id order across the shards
    stats = await sharded.stats()
    assert stats.kinds["q"].ready == 57 and await sharded.kinds() == ["q"]


async def test_events_of_every_shard_resume_from_any_cursor(sharded: Board) -> None:
    start = await sharded.last_event_id()
    assert len(start.split(",")) == K
    posted = [it.id for it in await sharded.post_many([NewItem(kind="e", payload=n) for n in range(40)])]
    events, end = await sharded.read_events(start)
    assert sorted(ev.id for ev in events) == sorted(posted)
    middle = events[len(events) // 2]
    rest, _ = await sharded.read_events(middle.cursor)  # from the middle: the rest, no repeats
    assert [ev.id for ev in rest] == [ev.id for ev in events[len(events) // 2 + 1 :]]
    # A blocked read wakes for a change on any shard.
    async with anyio.create_task_group() as tg:
        got: list[str] = []

        async def reader() -> None:
            batch, _ = await sharded.read_events(end, block=10)
            got.extend(ev.id for ev in batch)

        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):
            late = await sharded.post("e", {"late": True})
    assert got == [late.id]


async def test_claims_serve_every_shard_in_turn(sharded: Board) -> None:
    await goals_on_every_shard(sharded, 5)
    took = [sharded.keys_of(c.id).index for _ in range(2 * K) for c in await sharded.claim("w", ["g"])]
    assert set(took) == set(range(K))  # one claim each, every shard reached in 2K claims
    assert max(Counter(took).values()) <= 3


async def test_a_woken_claim_asks_the_shard_its_token_came_from_alone(
    sharded: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token wakes several waiters; each asking every shard would cost K claims per waiter."""
    asked: list[int] = []
    claim_shard = sharded._claim_shard

    async def counted(keys, *args):  # type: ignore[no-untyped-def]
        asked.append(keys.index)
        return await claim_shard(keys, *args)

    monkeypatch.setattr(sharded, "_claim_shard", counted)
    assert await sharded.claim("w", ["wake"]) == []
    assert sorted(asked) == list(range(K))  # not woken: every shard, in turn
    got: list[str] = []

    async def waiter() -> None:  # waits, then claims: the hint is the waiting task's own
        assert await sharded.wait_for_work(["wake"], timeout=10)
        got.extend(c.id for c in await sharded.claim("w", ["wake"]))

    for _ in range(3):
        asked.clear()
        got.clear()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            item = await sharded.post("wake", {})
        # The claim right after the wake-up goes to the item's shard and nowhere else...
        assert got == [item.id]
        assert asked == [sharded.keys_of(item.id).index]
    # ...the one after that (no wake-up in between) to every shard again.
    asked.clear()
    assert await sharded.claim("w", ["wake"]) == []
    assert sorted(asked) == list(range(K))


async def test_many_waiters_take_work_from_every_shard_on_wake_ups_alone(sharded: Board) -> None:
    """Woken claims ask one shard each, yet nothing is left behind: every shard's work has
    tokens of its own. The waits are long, so only wake-ups (not timeouts) can do this."""
    posted = await sharded.post_many([NewItem(kind="spread", payload=n) for n in range(60)])
    assert len({sharded.keys_of(i.id).index for i in posted}) == K
    taken: list[str] = []
    done = anyio.Event()

    async def agent(n: int) -> None:
        while not done.is_set():
            got = await sharded.claim(f"a{n}", ["spread"])
            taken.extend(c.id for c in got)
            if len(taken) == len(posted):
                done.set()
            if not got:
                with anyio.move_on_after(30):
                    await sharded.wait_for_work(["spread"], timeout=30)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(agent, n)
            await done.wait()
            tg.cancel_scope.cancel()
    assert sorted(taken) == sorted(i.id for i in posted)


async def test_a_guarded_item_and_its_review_share_a_shard(sharded: Board) -> None:
    """The review item the post script makes (`<id>:review`) is found on the item's shard, and
    approving it releases the item, on every shard."""
    await sharded.guard("g.draft", "g.review")
    drafts = await sharded.post_many([NewItem(kind="g.draft", payload=n) for n in range(24)])
    assert {sharded.keys_of(d.id).index for d in drafts} == set(range(K))
    for draft in drafts:
        review = await sharded.get(f"{draft.id}:review")
        assert review.payload == {"target": draft.id, "kind": "g.draft"}
        assert sharded.keys_of(review.id) == sharded.keys_of(draft.id)
    reviews = await sharded.claim("critic", ["g.review"], n=len(drafts))
    await sharded.complete_many([(c, {"approved": True}, ()) for c in reviews])
    assert {(await sharded.get(d.id)).status for d in drafts} == {Status.OPEN}


async def test_pausing_the_board_pauses_every_shard(sharded: Board) -> None:
    await goals_on_every_shard(sharded, 1)
    await pausing.pause(sharded, note="maintenance")
    assert await sharded.claim("w", ["g"], n=100) == []
    assert (await pausing.paused(sharded))[0] is True
    await pausing.resume(sharded)
    assert len(await sharded.claim("w", ["g"], n=100)) >= K


async def test_the_shard_count_is_fixed_once_the_board_exists(board_url: str) -> None:
    name = unique_board()
    async with await Board.connect(board_url, board=name, shards=K) as board:
        await board.post("g")
    for wrong in (1, K + 1):
        with pytest.raises(InvalidInput, match=f"created with {K} shard"):
            await Board.connect(board_url, board=name, shards=wrong)
    async with await Board.connect(board_url, board=name) as found:  # None: the board's own count
        assert found.shards == K and (await found.stats()).kinds["g"].by_status == {Status.OPEN: 1}
    plain = unique_board()
    async with await Board.connect(board_url, board=plain) as one:
        await one.post("g")
    with pytest.raises(InvalidInput, match="created with 1 shard"):
        await Board.connect(board_url, board=plain, shards=K)
