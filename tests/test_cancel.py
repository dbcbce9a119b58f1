"""Cancel cascades down a goal's tree; claimed items are fenced out at their next write."""

from __future__ import annotations

import pytest

from blackboard import Board, ItemNotFound, LeaseLost, Status

pytestmark = pytest.mark.anyio


async def test_cancel_goal_cancels_open_waiting_and_claimed_descendants(board: Board) -> None:
    goal = await board.post("g")
    [gc] = await board.claim("w", ["g"])
    await board.complete(gc, None)
    running = await board.post("step", parent=goal.id)
    queued = await board.post("step", parent=goal.id)
    waiting = await board.post("join", parent=goal.id, after=[running.id])
    grandchild = await board.post("deep", parent=queued.id)
    [claim] = await board.claim("w", ["step"])
    assert await board.cancel(goal.id, "user asked") == 4
    statuses = {
        i.id: i.status for i in await board.get_many([running.id, queued.id, waiting.id, grandchild.id]) if i
    }
    assert set(statuses.values()) == {Status.CANCELLED}
    assert (await board.get(goal.id)).status is Status.DONE  # finished work stays finished
    assert (await board.get(queued.id)).reason == "user asked"
    with pytest.raises(LeaseLost, match="cancelled"):
        await board.complete(claim, "too late")
    assert await board.claim("w", ["step", "join", "deep"], n=10) == []
    stats = await board.stats()
    assert stats.total(Status.CANCELLED) == 4 and stats.total(Status.OPEN) == 0


async def test_cancel_unknown_item(board: Board) -> None:
    with pytest.raises(ItemNotFound):
        await board.cancel("nope")
