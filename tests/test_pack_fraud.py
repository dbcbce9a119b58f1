"""The fraud pack through a real daemon on the offline model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest

from blackboard import Board, Status
from blackboard.daemon import Daemon
from blackboard.settings import Settings
from tests.conftest import unique_board
from tests.support.packs import PACKS, run_pack

pytestmark = pytest.mark.anyio

CASE = json.loads((PACKS / "fraud" / "goal.json").read_text())["payload"]
CHECKS = ("address", "distance", "history", "conversation", "tracking", "payment")


async def test_six_checks_run_in_parallel_and_the_verdict_joins_them(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKBOARD_OFFLINE_LATENCY", "0.2")
    run = await run_pack(board_url, [PACKS / "fraud"], "fraud.case", CASE)
    assert run.goal.status is Status.DONE and run.goal.handled_by == "fraud-intake"
    checks = [run.of_kind(f"fraud.check.{name}")[0] for name in CHECKS]
    assert [c.handled_by for c in checks] == [f"fraud-{name}" for name in CHECKS]
    assert run.overlapping(checks)
    for c in checks:
        assert 0 <= c.result["risk"] <= 1 and isinstance(c.result["signals"], list)
    (verdict,) = run.of_kind("fraud.verdict")
    assert set(verdict.after) == {c.id for c in checks}
    assert verdict.claimed_at and verdict.claimed_at >= max(c.finished_at or 0 for c in checks)
    assert verdict.result["verdict"] in ("approve", "review", "reject") and 0 <= verdict.result["risk"] <= 1
    conversation = checks[CHECKS.index("conversation")].result
    assert conversation["matched"] == ["box was empty", "refund to a different card"]
    # four checks call their tool and then answer; distance and conversation answer at once; the verdict
    assert run.usage.calls == 4 * 2 + 2 + 1 and run.usage.errors == 0
    assert run.usage.tokens > 0 and run.usage.cost > 0
    assert set(run.usage.by_model) == {f"offline/fraud-{name}" for name in (*CHECKS, "verdict")}
    assert [c.usage[0].tools for c in checks] == [
        ("address_lookup",),
        (),
        ("customer_history",),
        (),
        ("tracking_incidents",),
        ("payment_incidents",),
    ]


async def test_the_knowledge_file_can_be_edited_while_the_daemon_runs(board_url: str, tmp_path: Path) -> None:
    pack = tmp_path / "fraud"
    shutil.copytree(PACKS / "fraud", pack)
    settings = Settings(
        url=board_url,
        board=unique_board(),
        agents=[pack],
        http=False,
        entry_points=False,
        log_level="warning",
    )
    second = CASE | {
        "id": "CASE-2",
        "transcript": "Customer: the courier left it with my neighbour, I think.",
    }
    async with anyio.create_task_group() as tg:
        daemon = Daemon(settings)
        await tg.start(daemon.run)
        async with await Board.connect(board_url, board=settings.board) as board:

            async def conversation_check(case: dict[str, object]) -> dict[str, object]:
                goal = await board.post("fraud.case", case)
                await board.wait(goal.id, timeout=30)
                (verdict,) = (await board.query(root=goal.id, kind="fraud.verdict")).items
                await board.wait(verdict.id, timeout=30)
                (check,) = (await board.query(root=goal.id, kind="fraud.check.conversation")).items
                return dict(check.result)

            before = await conversation_check(second)
            assert before["matched"] == []
            with (pack / "knowledge" / "patterns.txt").open("a") as f:
                f.write("left it with my neighbour\n")
            after = await conversation_check(second | {"id": "CASE-3"})
            assert after["matched"] == ["left it with my neighbour"]
        daemon.stop()
