"""Queries with paging, lineage trees, stats and the event stream."""

from __future__ import annotations

import anyio
import pytest

from blackboard import Board, NewItem, Status

pytestmark = pytest.mark.anyio


async def test_query_by_kind_and_status_pages_through_everything(board: Board) -> None:
    posted = await board.post_many([NewItem(kind="a") for _ in range(25)] + [NewItem(kind="b")])
    await board.claim("w", ["a"], n=5)
    seen, cursor = [], None
    while True:
        page = await board.query(kind="a", status="open", limit=7, cursor=cursor)
        seen += [i.id for i in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert len(seen) == 20 and len(set(seen)) == 20
    assert {i.id for i in posted if i.kind == "a"} > set(seen)
    assert len((await board.query(kind="a", limit=100)).items) == 25  # every status
    assert len((await board.query(status=Status.CLAIMED)).items) == 5
    assert len((await board.query(limit=1000)).items) == 26


async def test_query_by_root_and_parent(board: Board) -> None:
    goal = await board.post("g")
    kids = [await board.post("c", parent=goal.id) for _ in range(3)]
    await board.post("d", parent=kids[0].id)
    await board.post("g")  # another goal
    assert len((await board.query(root=goal.id)).items) == 5
    assert {i.id for i in (await board.query(parent=goal.id)).items} == {k.id for k in kids}
    assert len((await board.query(root=goal.id, kind="d")).items) == 1


async def test_tree_shows_the_whole_lineage(board: Board) -> None:
    goal = await board.post("g")
    [claim] = await board.claim("w", ["g"])
    await board.complete(claim, None, outputs=[NewItem(kind="c", payload=i) for i in range(3)])
    [c0, *_] = await board.claim("w", ["c"], n=3)
    await board.complete(c0, None, outputs=[NewItem(kind="d")])
    tree = await board.tree(goal.id)
    assert tree.item.id == goal.id and len(tree.children) == 3
    assert sum(len(c.children) for c in tree.children) == 1
    assert [i.kind for i in tree.walk()].count("d") == 1
    sub = await board.tree(c0.id)
    assert sub.item.id == c0.id and [c.item.kind for c in sub.children] == ["d"]


async def test_stats_count_by_kind_and_status(board: Board) -> None:
    await board.post_many([NewItem(kind="a") for _ in range(3)])
    await board.post("b", delay=60)
    await board.claim("w", ["a"], n=1)
    stats = await board.stats()
    assert stats.kinds["a"].by_status == {Status.OPEN: 2, Status.CLAIMED: 1}
    assert (stats.kinds["a"].ready, stats.kinds["a"].leased) == (2, 1)
    assert stats.kinds["b"].delayed == 1 and stats.dead_letters == 0


async def test_events_stream_every_state_change_in_order(board: Board) -> None:
    since = await board.last_event_id()
    item = await board.post("k")
    [claim] = await board.claim("w", ["k"])
    await board.complete(claim, None)
    events, _ = await board.read_events(since)
    assert [(e.type, e.id, e.status) for e in events] == [
        ("posted", item.id, Status.OPEN),
        ("claimed", item.id, Status.CLAIMED),
        ("done", item.id, Status.DONE),
    ]
    assert events[1].data["agent"] == "w"


async def test_events_iterator_blocks_until_a_change(live_board: Board) -> None:
    board = live_board
    got = []

    async def listen() -> None:
        async for ev in board.events():
            got.append(ev)
            return

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        await anyio.wait_all_tasks_blocked()
        item = await board.post("k")
    assert [e.id for e in got] == [item.id]


async def test_wait_returns_when_item_finishes(live_board: Board) -> None:
    board = live_board
    item = await board.post("k")

    async def finish() -> None:
        await anyio.wait_all_tasks_blocked()
        [claim] = await board.claim("w", ["k"])
        await board.complete(claim, 42)

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish)
        with anyio.fail_after(10):
            done = await board.wait(item.id, timeout=10)
    assert done.status is Status.DONE and done.result == 42
