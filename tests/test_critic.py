"""The stock critic: error containment at a handoff, and its other paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from blackboard import Board, Status
from blackboard.critic import Critic
from blackboard.daemon import Daemon
from blackboard.plugins import load_file, plugin_files
from blackboard.settings import Settings
from tests.conftest import unique_board
from tests.support.packs import ROOT, PackRun, run_pack

pytestmark = pytest.mark.anyio

DATA = ROOT / "tests" / "data" / "critic"
TASKS = 30


async def guard_like_the_daemon(board: Board, folders: list[Path]) -> None:
    """Set up the folders' critics on `board` (registers their guards), as a daemon does on load."""
    for path in (p for folder in folders for p in plugin_files(folder)):
        for critic in load_file(path).agents:
            if isinstance(critic, Critic):
                await critic.setup(board, None)


async def run_until_idle(board_url: str, board: str, folders: list[Path]) -> None:
    fields: dict[str, Any] = {"http": False, "entry_points": False, "reload": False, "log_level": "warning"}
    settings = Settings(url=board_url, board=board, agents=folders, **fields)
    with anyio.fail_after(50):
        await Daemon(settings, until_idle=True).run()


async def run_guarded_goal(board_url: str, folders: list[Path], kind: str, payload: Any) -> PackRun:
    """`run_pack` for a goal of a guarded kind: the guards are in place before the goal is posted.
    (A daemon reports itself started before its agents' setup has run, so a goal posted at once
    can beat the critic's guard and be claimed unreviewed; `run_pack` posts at once.)"""
    name = unique_board()
    async with await Board.connect(board_url, board=name) as board:
        await guard_like_the_daemon(board, folders)
        goal = await board.post(kind, payload)
    await run_until_idle(board_url, name, folders)
    async with await Board.connect(board_url, board=name) as board:
        tree = await board.tree(goal.id)
        return PackRun(tree.item, tree, await board.usage(goal.id))


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
    run = await run_guarded_goal(board_url, [DATA / "review"], "cc.output", {"n": 1, "value": None})
    assert run.goal.status is Status.CANCELLED and "dead" in (run.goal.reason or "")
    (review,) = run.of_kind("review.cc.output")
    assert review.status is Status.DEAD and "value is missing" in (review.error or "")


async def test_an_llm_judge_records_its_usage_on_the_review(board_url: str) -> None:
    run = await run_guarded_goal(board_url, [DATA / "review"], "cc.judged", {"text": "is this sound?"})
    (review,) = run.of_kind("review.cc.judged")
    assert [c.model for c in review.usage] == ["offline/critic"] and run.usage.calls == 1
    if review.status is Status.DONE:  # approved: the item opened and was used
        assert review.result["approved"] is True and run.goal.result == "used"
    else:  # rejected a goal: dead-lettered, the goal cancelled
        assert review.status is Status.DEAD and run.goal.status is Status.CANCELLED


async def test_a_guarded_item_posted_through_the_board_waits_for_review(board_url: str) -> None:
    """The board holds guarded items back, whoever posts them: here a script, with no agent running."""
    name = unique_board()
    async with await Board.connect(board_url, board=name) as board:
        await guard_like_the_daemon(board, [DATA / "review"])
        assert (await board.guards())["cc.output"] == "review.cc.output"
        good = await board.post("cc.output", {"n": 1, "value": 2}, actor="a-script")
        bad = await board.post("cc.output", {"n": 2, "value": None}, actor="a-script")
        for posted in (good, bad):
            assert posted.status is Status.WAITING and posted.pending == 1
            review = await board.get(f"{posted.id}:review")
            assert review.kind == "review.cc.output" and review.payload["target"] == posted.id
            assert review.created_by == "guard" and review.status is Status.OPEN
        assert await board.claim("a-rogue-consumer", ["cc.output"], n=10) == []  # nothing to take yet

    # a daemon with the critic and a consumer of cc.output works through them
    await run_until_idle(board_url, name, [DATA / "pipeline", DATA / "review"])
    async with await Board.connect(board_url, board=name) as board:
        good, bad = await board.get(good.id), await board.get(bad.id)
        approved, rejected = await board.get(f"{good.id}:review"), await board.get(f"{bad.id}:review")
    assert approved.result["approved"] is True and good.handled_by == "cc-final"
    assert good.claimed_at is not None and good.claimed_at >= (approved.finished_at or 0)
    assert good.result == {"n": 1, "valid": True}
    assert rejected.status is Status.DEAD and bad.status is Status.CANCELLED and bad.handled_by is None
