"""`after` dependencies: joins, and what happens when a dependency will never be done."""

from __future__ import annotations

import pytest

from blackboard import Board, Status

pytestmark = pytest.mark.anyio


async def _finish(board: Board, kind: str, result: object = None) -> None:
    for claim in await board.claim("w", [kind], n=100):
        await board.complete(claim, result)


@pytest.mark.unsharded  # items wait on other goals' items
async def test_join_opens_only_after_all_dependencies_are_done(board: Board) -> None:
    a = await board.post("part")
    b = await board.post("part")
    join = await board.post("join", after=[a.id, b.id])
    assert join.status is Status.WAITING and join.pending == 2
    [first, second] = await board.claim("w", ["part"], n=2)
    await board.complete(first, 1)
    assert (await board.get(join.id)).pending == 1
    assert await board.claim("w", ["join"]) == []
    await board.complete(second, 2)
    opened = await board.get(join.id)
    assert opened.status is Status.OPEN and opened.pending == 0 and opened.reason is None
    [claim] = await board.claim("w", ["join"])
    deps = await board.get_many(list(claim.item.after))
    assert sorted(d.result for d in deps if d) == [1, 2]


async def test_dependency_already_done_counts_as_met(board: Board) -> None:
    a = await board.post("part")
    await _finish(board, "part")
    join = await board.post("join", after=[a.id])
    assert join.status is Status.OPEN


async def test_dead_dependency_cancels_dependants_transitively(board: Board) -> None:
    a = await board.post("part", max_attempts=1)
    j1 = await board.post("join", after=[a.id])
    j2 = await board.post("final", after=[j1.id])
    [claim] = await board.claim("w", ["part"])
    await board.fail(claim, "broken")
    for item_id, dep in [(j1.id, a.id), (j2.id, j1.id)]:
        got = await board.get(item_id)
        assert got.status is Status.CANCELLED and got.reason == f"dependency {dep} " + (
            "dead" if dep == a.id else "cancelled"
        )


async def test_posting_after_a_dead_dependency_is_cancelled_at_once(board: Board) -> None:
    a = await board.post("part", max_attempts=1)
    [claim] = await board.claim("w", ["part"])
    await board.fail(claim, "x")
    late = await board.post("join", after=[a.id])
    assert late.status is Status.CANCELLED and late.reason == f"dependency {a.id} dead"


async def test_cancelled_dependency_cancels_dependant(board: Board) -> None:
    a = await board.post("part")
    j = await board.post("join", after=[a.id])
    assert await board.cancel(a.id) == 2
    assert (await board.get(j.id)).status is Status.CANCELLED
