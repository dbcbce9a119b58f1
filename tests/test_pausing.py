"""Interrupts: a paused goal (or board) gets no new claims, its in-flight work finishes, and
resuming reopens exactly what was held; every index stays consistent throughout."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from blackboard import Board, NewItem, audit, pausing
from blackboard.cli import app
from blackboard.models import Status
from tests.conftest import FakeClock, unique_board
from tests.support.invariants import check_invariants

pytestmark = pytest.mark.anyio


@pytest.mark.unsharded  # claims the older goal first: claim order is per shard
async def test_a_paused_goal_gets_no_claims_and_resuming_reopens_what_was_held(
    board: Board, clock: FakeClock
) -> None:
    paused_goal = await board.post("p.goal", {"g": 1})
    other_goal = await board.post("p.goal", {"g": 2})
    [claim] = await board.claim("w", ["p.goal"])  # one of them is in flight
    assert claim.id == paused_goal.id
    work = await board.post_many(
        [NewItem(kind="p.task", payload={"n": i}, parent=paused_goal.id) for i in range(3)]
    )
    retried = await board.post_many([NewItem(kind="p.retry", payload={}, parent=paused_goal.id)])
    [retry_claim] = await board.claim("w", ["p.retry"])

    held = await pausing.pause(board, paused_goal.id, "incident 42", actor="cli:ops")
    assert held == 3  # the three open tasks; the claimed ones run on
    assert await pausing.paused(board) == (False, [paused_goal.id])
    assert [it.reason for it in await board.get_many([w.id for w in work]) if it] == ["paused"] * 3

    # in flight finishes; its children, a retry and a new post of the goal are held too
    await board.complete(claim, "planned", outputs=[NewItem(kind="p.task", payload={"late": True})])
    await board.fail(retry_claim, "flaky", retry=1.0)
    clock.advance(2)
    await board.reap()
    await board.post_many([NewItem(kind="p.task", payload={"n": 9}, parent=paused_goal.id)])
    assert await board.claim("w", ["p.task", "p.retry"], n=10) == []
    [other] = await board.claim("w", ["p.goal"])  # another goal is not affected
    assert other.id == other_goal.id
    await check_invariants(board)

    reopened = await pausing.resume(board, paused_goal.id, actor="cli:ops")
    assert reopened == 6  # three tasks, the late child, the retry, the new post
    claimed = await board.claim("w", ["p.task", "p.retry"], n=10)
    assert len(claimed) == 6 and retried[0].id in {c.id for c in claimed}
    await check_invariants(board)
    ops = [(r.op, r.actor, r.detail) for r in await audit.tail(board, 40) if r.op in ("paused", "resumed")]
    assert ops == [("paused", "cli:ops", "incident 42"), ("resumed", "cli:ops", "")]


async def test_a_paused_board_claims_nothing_until_resumed(board: Board) -> None:
    first = await board.post("b.task", {"n": 1})
    [claim] = await board.claim("w", ["b.task"])
    await pausing.pause(board, note="maintenance", actor="cli")
    await board.post("b.task", {"n": 2})
    assert await board.claim("w", ["b.task", "other.kind"], n=5) == []
    await board.complete(claim, "done")  # in-flight work still finishes
    assert (await board.get(first.id)).status is Status.DONE
    assert (await pausing.paused(board))[0]
    await pausing.resume(board, actor="cli")
    assert len(await board.claim("w", ["b.task"], n=5)) == 1
    for shard in board.shard_keys:  # each shard pauses in its own step, with its own record
        ops = [r.op for r in await audit.tail(board, 20, keys=shard) if r.op.startswith("board_")]
        assert ops == ["board_paused", "board_resumed"]


async def test_a_blocked_claimer_is_woken_by_resume(board_url: str) -> None:
    async with await Board.connect(board_url, board=unique_board()) as board:
        await pausing.pause(board)
        await board.post("w.task", {})
        got: list[str] = []

        async def worker() -> None:
            while not got:
                claims = await board.claim("w", ["w.task"])
                if claims:
                    got.append(claims[0].id)
                else:
                    await board.wait_for_work(["w.task"], timeout=30)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker)
                await anyio.sleep(0.2)  # the worker is blocked now (nothing to wait on: a pause)
                assert not got
                await pausing.resume(board)
        assert got


def test_cli_pause_and_resume(tmp_path: Path) -> None:
    url, name = f"memory://pause-{unique_board()}", unique_board()
    where = ["--url", url, "--board", name]

    async def post() -> str:
        async with await Board.connect(url, board=name) as b:
            goal = await b.post("c.goal", {})
            return goal.id

    goal = anyio.run(post)
    runner = CliRunner()
    r = runner.invoke(app, ["pause", goal, "--note", "hold on", *where])
    assert r.exit_code == 0 and f"paused {goal}: 1 item(s) held" in r.output, r.output
    r = runner.invoke(app, ["resume", goal, *where])
    assert r.exit_code == 0 and f"resumed {goal}: 1 item(s) reopened" in r.output, r.output
    r = runner.invoke(app, ["pause", "--all", *where])
    assert r.exit_code == 0 and f"paused board {name}" in r.output, r.output
    r = runner.invoke(app, ["pause", *where])
    assert r.exit_code == 2 and "a goal id or --all" in r.output


async def test_http_pause_and_resume(board_url: str) -> None:
    from tests.test_http import client_for, running

    async with running(board_url) as daemon, client_for(daemon) as c:
        goal = await daemon.board.post("h.goal", {})
        r = await c.post(f"/v1/goals/{goal.id}/pause", json={"note": "wait"})
        assert r.status_code == 200 and r.json() == {"paused": 1}, r.text
        assert (await daemon.board.get(goal.id)).reason == "paused"
        r = await c.post(f"/v1/goals/{goal.id}/resume")
        assert r.status_code == 200 and r.json() == {"resumed": 1}, r.text
        r = await c.post("/v1/goals/NOPE/pause")
        assert r.status_code in (404, 422), r.text
        assert (await c.post("/v1/pause")).status_code == 200
        assert (await pausing.paused(daemon.board))[0]
        assert (await c.post("/v1/resume")).status_code == 200
        assert not (await pausing.paused(daemon.board))[0]
