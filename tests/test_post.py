"""Posting: ids, idempotency, lineage fields, delays, kinds registry."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from blackboard import Board, NewItem, Status

pytestmark = pytest.mark.anyio


async def test_post_then_get_round_trips_every_field(board: Board) -> None:
    item = await board.post(
        "research.task",
        {"q": "why"},
        priority=7,
        max_attempts=5,
        tags=("a", "b"),
        idempotency_key="k1",
        actor="alice",
    )
    got = await board.get(item.id)
    assert got == item
    assert (got.kind, got.payload, got.priority, got.max_attempts) == ("research.task", {"q": "why"}, 7, 5)
    assert got.status is Status.OPEN
    assert got.tags == ("a", "b") and got.idempotency_key == "k1" and got.created_by == "alice"
    assert got.root == got.id and got.parent is None and got.depth == 0 and got.is_goal
    assert got.attempts == 0 and got.created_at > 0


async def test_children_carry_root_parent_and_depth(board: Board) -> None:
    goal = await board.post("g")
    child = await board.post("c", parent=goal.id)
    grandchild = await board.post("c", parent=child.id)
    assert (child.root, child.parent, child.depth) == (goal.id, goal.id, 1)
    assert (grandchild.root, grandchild.parent, grandchild.depth) == (goal.id, child.id, 2)


async def test_same_idempotency_key_returns_the_same_item_and_writes_nothing(board: Board) -> None:
    first = await board.post("k", {"n": 1}, idempotency_key="once")
    before = await board.stats()
    again = await board.post("k", {"n": 2}, idempotency_key="once")
    assert again.id == first.id and again.payload == {"n": 1}
    assert await board.stats() == before


async def test_same_id_posted_twice_is_written_once(board: Board) -> None:
    a = await board.post("k", {"n": 1}, id="fixed-id")
    b = await board.post("k", {"n": 2}, id="fixed-id")
    assert a == b
    assert (await board.stats()).total(Status.OPEN) == 1


@pytest.mark.unsharded  # items wait on other goals' items
async def test_post_many_is_one_batch_with_in_batch_dependencies(board: Board) -> None:
    items = [
        NewItem(kind="step", id="s1"),
        NewItem(kind="join", id="j", after=("s1", "s2")),
        NewItem(kind="step", id="s2"),
    ]
    posted = await board.post_many(items)
    assert [p.id for p in posted] == ["s1", "j", "s2"]
    assert [p.status for p in posted] == [Status.OPEN, Status.WAITING, Status.OPEN]
    assert posted[1].pending == 2 and posted[1].reason == "dependencies"


async def test_delayed_post_is_claimable_only_after_its_time(board: Board, clock) -> None:
    item = await board.post("later", delay=10)
    assert item.status is Status.OPEN and item.not_before == pytest.approx(clock.now * 1000 + 10_000, abs=2)
    assert await board.claim("w", ["later"]) == []
    clock.advance(10.5)
    [claim] = await board.claim("w", ["later"])
    assert claim.id == item.id


async def test_registered_pydantic_schema_normalises_payloads(board: Board) -> None:
    class Task(BaseModel):
        question: str
        depth: int = 1

    await board.register_kind("research.task", Task)
    item = await board.post("research.task", {"question": "q"})
    assert item.payload == {"question": "q", "depth": 1}


async def test_json_schema_is_shared_through_the_board(board: Board, board_url: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    await board.register_kind("count", schema)
    other = await Board.connect(board_url, board=board.name, strict=True)
    try:
        assert "count" in other.registry
        assert (await other.post("count", {"n": 3})).payload == {"n": 3}
    finally:
        await other.close()


async def test_kinds_lists_every_posted_kind_and_globs_expand(board: Board) -> None:
    await board.post("research.task")
    await board.post("research.finding")
    await board.post("other")
    assert await board.kinds() == ["other", "research.finding", "research.task"]
    assert await board.expand_kinds(["research.*"]) == ["research.finding", "research.task"]
