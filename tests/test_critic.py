"""The stock critic: error containment at a handoff, and its other paths."""

from __future__ import annotations

import pytest

from blackboard import Status
from tests.support.packs import ROOT, run_pack

pytestmark = pytest.mark.anyio

DATA = ROOT / "tests" / "data" / "critic"
TASKS = 30


async def test_without_a_critic_invalid_outputs_reach_the_final_stage(board_url: str) -> None:
    run = await run_pack(board_url, [DATA / "pipeline"], "cc.goal", {"tasks": TASKS})
    finals = [o for o in run.of_kind("cc.output") if o.status is Status.DONE]
    invalid = [o for o in finals if not o.result["valid"]]
    print(f"without critic: {len(invalid)} of {len(finals)} outputs reaching the final stage are invalid")
    assert len(finals) == TASKS and 2 <= len(invalid) <= TASKS // 2  # about one in five


async def test_with_the_critic_no_invalid_output_reaches_the_final_stage(board_url: str) -> None:
    run = await run_pack(board_url, [DATA / "pipeline", DATA / "review"], "cc.goal", {"tasks": TASKS})
    outputs = run.of_kind("cc.output")
    finals = [o for o in outputs if o.handled_by == "cc-final"]
    rejected = [r for r in run.of_kind("review.cc.output") if r.result and r.result["approved"] is False]
    print(f"with critic: {len(finals)} reached the final stage, all valid; {len(rejected)} sent back")
    assert all(o.result["valid"] for o in finals)
    assert sorted(o.payload["n"] for o in finals) == list(range(TASKS))  # every task still got through
    assert rejected  # some were sent back and revised
    for r in rejected:
        target = next(o for o in outputs if o.id == r.payload["target"])
        assert target.status is Status.CANCELLED and target.payload["value"] is None
        (revision,) = [t for t in run.of_kind("cc.task") if t.parent == r.id]
        assert revision.payload["critique"] == "value is missing" and revision.payload["revision"] >= 1
    assert all(o.status in (Status.DONE, Status.CANCELLED) for o in outputs)


async def test_a_rejected_goal_is_dead_lettered_through_its_review(board_url: str) -> None:
    run = await run_pack(board_url, [DATA / "review"], "cc.output", {"n": 1, "value": None})
    assert run.goal.status is Status.CANCELLED and "dead" in (run.goal.reason or "")
    (review,) = run.of_kind("review.cc.output")
    assert review.status is Status.DEAD and "value is missing" in (review.error or "")


async def test_an_llm_judge_records_its_usage_on_the_review(board_url: str) -> None:
    run = await run_pack(board_url, [DATA / "review"], "cc.judged", {"text": "is this sound?"})
    (review,) = run.of_kind("review.cc.judged")
    assert [c.model for c in review.usage] == ["offline/critic"] and run.usage.calls == 1
    if review.status is Status.DONE:  # approved: the item opened and was used
        assert review.result["approved"] is True and run.goal.result == "used"
    else:  # rejected a goal: dead-lettered, the goal cancelled
        assert review.status is Status.DEAD and run.goal.status is Status.CANCELLED
