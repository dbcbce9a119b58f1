"""The research pack through a real daemon on the offline model."""

from __future__ import annotations

import pytest

from blackboard import Status
from tests.support.packs import PACKS, run_pack

pytestmark = pytest.mark.anyio


async def test_lead_fans_out_researchers_run_in_parallel_synthesis_joins_and_is_checked(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKBOARD_OFFLINE_LATENCY", "0.2")
    run = await run_pack(board_url, [PACKS / "research"], "research.goal", {"question": "How do bees dance?"})
    assert run.goal.status is Status.DONE and run.goal.handled_by == "research-lead"
    questions = run.of_kind("research.question")
    assert 3 <= len(questions) == len(run.goal.result["sub_questions"]) <= 5
    assert all(q.status is Status.DONE and q.handled_by == "researcher" for q in questions)
    assert all(q.claimed_at and q.claimed_at >= (run.goal.finished_at or 0) for q in questions)
    assert run.overlapping(questions)  # researchers worked at the same time
    (synthesis,) = run.of_kind("research.synthesis")
    assert set(synthesis.after) == {q.id for q in questions}
    assert synthesis.claimed_at and synthesis.claimed_at >= max(q.finished_at or 0 for q in questions)
    cited = {c for claim in synthesis.result["claims"] for c in claim["cites"]}
    assert cited and cited <= {q.id for q in questions}
    (check,) = run.of_kind("research.check")
    assert check.status is Status.DONE and check.handled_by == "citation-checker"
    assert check.result == {"ok": True, "claims": len(synthesis.result["claims"]), "uncited": []}
    # usage: the lead once, each researcher twice (a search tool round, then its answer), synthesis once
    assert run.usage.calls == 1 + 2 * len(questions) + 1 and run.usage.errors == 0
    assert set(run.usage.by_model) == {"offline/research-lead", "offline/researcher", "offline/synthesiser"}
    assert run.usage.tokens > 0 and run.usage.cost > 0
    assert all(c.tools == ("search",) for q in questions for c in q.usage[:1])
