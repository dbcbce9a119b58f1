"""Guarded kinds: the board itself makes items of a guarded kind wait for a review item."""

from __future__ import annotations

import pytest

from blackboard import Board, Status
from blackboard.errors import InvalidInput
from blackboard.models import ModelCall
from tests.support.invariants import check_invariants

pytestmark = pytest.mark.anyio


async def test_a_guarded_item_waits_for_its_review_posted_in_the_same_step(board: Board) -> None:
    await board.guard("draft", "review.draft")
    assert await board.guards() == {"draft": "review.draft"}
    goal = await board.post("job")
    [claim] = await board.claim("writer", ["job"])
    [draft] = await board.complete(claim, "wrote", [{"kind": "draft", "payload": {"text": "hi"}}])
    assert draft.status is Status.WAITING and draft.pending == 1
    review = await board.get(f"{draft.id}:review")
    assert review.kind == "review.draft" and review.status is Status.OPEN
    assert review.payload == {"target": draft.id, "kind": "draft"}
    assert review.parent == goal.id and review.root == goal.id  # a sibling: cancelling draft spares it
    assert await board.claim("reader", ["draft"]) == []
    await check_invariants(board)

    [rc] = await board.claim("critic", ["review.draft"])
    await board.complete(rc, {"approved": True})
    assert (await board.get(draft.id)).status is Status.OPEN
    [dc] = await board.claim("reader", ["draft"])
    assert dc.item.payload == {"text": "hi"}
    await check_invariants(board)


async def test_every_poster_is_guarded_and_a_dead_review_cancels_the_item(board: Board) -> None:
    await board.guard("draft", "review.draft")
    goal = await board.post("draft", {"text": "posted directly"}, max_attempts=1)
    assert goal.status is Status.WAITING
    review = await board.get(f"{goal.id}:review")
    assert review.parent == goal.id  # a goal has no producer: its review is its child
    [rc] = await board.claim("critic", ["review.draft"])
    assert await board.fail(rc, "rejected for good", retry=False) is Status.DEAD
    after = await board.get(goal.id)
    assert after.status is Status.CANCELLED and "dead" in (after.reason or "")
    await check_invariants(board)


async def test_unguarding_stops_new_reviews_and_bad_guards_write_nothing(board: Board) -> None:
    await board.guard("draft", "review.draft")
    await board.unguard("draft")
    assert (await board.post("draft")).status is Status.OPEN
    with pytest.raises(InvalidInput, match="review_kind"):
        await board.guard("draft", "draft")
    with pytest.raises(InvalidInput, match="kind"):
        await board.guard("no spaces", "review.x")
    assert await board.guards() == {}


async def test_model_calls_are_recorded_on_the_item_and_summed_per_goal(board: Board) -> None:
    goal = await board.post("job", max_attempts=3)
    call = ModelCall(model="m/a", prompt_tokens=10, completion_tokens=5, cost=0.5, latency_ms=3.0)
    [c1] = await board.claim("w", ["job"])
    await board.fail(c1, "try again", retry=0, usage=[call, call.model_copy(update={"error": "boom"})])
    [c2] = await board.claim("w", ["job"])
    [kid] = await board.complete(
        c2, "ok", [{"kind": "step"}], usage=[call.model_copy(update={"model": "m/b"})]
    )
    [c3] = await board.claim("w", ["step"])
    await board.complete(c3, "ok", usage=[call])
    item = await board.get(goal.id)
    assert [c.model for c in item.usage] == ["m/a", "m/a", "m/b"] and item.usage[1].error == "boom"
    totals = await board.usage(goal.id)
    assert (totals.calls, totals.errors, totals.prompt_tokens, totals.completion_tokens) == (4, 1, 40, 20)
    assert totals.cost == pytest.approx(2.0) and totals.tokens == 60
    assert totals.by_model["m/a"].calls == 3 and totals.by_model["m/b"].calls == 1
    assert (await board.get(kid.id)).usage == (call,)
    assert (await board.usage("no-such-goal")).calls == 0
    await check_invariants(board)
