"""The research pack through a real daemon on the offline model, and its citation checker alone."""

from __future__ import annotations

from typing import Any

import pytest

from blackboard import Fail, Item, Status
from tests.support.packs import PACKS, pack_module, run_pack

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
    assert check.parent == synthesis.id
    assert check.status is Status.DONE and check.handled_by == "citation-checker"
    assert check.result == {"ok": True, "claims": len(synthesis.result["claims"]), "uncited": []}
    # usage: the lead once, each researcher twice (a search tool round, then its answer), synthesis once
    assert run.usage.calls == 1 + 2 * len(questions) + 1 and run.usage.errors == 0
    assert set(run.usage.by_model) == {"offline/research-lead", "offline/researcher", "offline/synthesiser"}
    assert run.usage.tokens > 0 and run.usage.cost > 0
    assert all(c.tools == ("search",) for q in questions for c in q.usage[:1])


# -- the citation checker on hand-made items ------------------------------------------------


def _checker() -> Any:
    return pack_module("research", "check.py").check_citations


def _item(id: str, kind: str, payload: Any = None, **fields: Any) -> Item:
    return Item(id=id, kind=kind, payload=payload, status=Status.DONE, created_at=0, root="g", **fields)


class _Board:
    """Stands in for the handler's context: `get` answers from a dict."""

    def __init__(self, *items: Item) -> None:
        self.items = {it.id: it for it in items}

    async def get(self, item_id: str) -> Item:
        return self.items[item_id]


SYNTHESIS = _item("s", "research.synthesis", after=("q1", "q2"))


def _check(claims: list[dict[str, Any]], parent: str | None = "s") -> Item:
    return _item("c", "research.check", {"claims": claims}, parent=parent)


async def test_checker_reports_claims_that_cite_nothing() -> None:
    claims = [{"text": "bees dance", "cites": ["q1"]}, {"text": "unsupported", "cites": []}]
    result = await _checker()(_check(claims), _Board(SYNTHESIS))
    assert result == {"ok": False, "claims": 2, "uncited": ["unsupported"]}


async def test_checker_fails_for_good_on_a_citation_that_is_not_a_finding_of_the_synthesis() -> None:
    claims = [{"text": "bees dance", "cites": ["q1", "q9"]}]
    with pytest.raises(Fail, match=r"\['q9'\]"):
        await _checker()(_check(claims), _Board(SYNTHESIS))


async def test_checker_trusts_only_a_synthesis_as_the_source_of_findings() -> None:
    claims = [{"text": "bees dance", "cites": ["q1"]}]
    with pytest.raises(Fail, match=r"posted by a research\.synthesis"):
        await _checker()(_check(claims, parent=None), _Board())
    with pytest.raises(Fail, match=r"not research\.goal"):
        await _checker()(_check(claims, parent="g"), _Board(_item("g", "research.goal", after=("q1",))))
