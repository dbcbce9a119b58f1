"""The support pack through a real daemon on the offline model."""

from __future__ import annotations

import pytest

from blackboard import Status
from tests.support.packs import PACKS, run_pack

pytestmark = pytest.mark.anyio

REQUEST = {
    "customer_id": "C-1001",
    "name": "Ada",
    "message": "My order O-81 is delayed for a week now. Where is it, and can I get the shipping refunded?",
}


async def test_lookups_run_in_parallel_the_drafter_joins_and_only_approved_drafts_are_sent(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKBOARD_OFFLINE_LATENCY", "0.2")
    run = await run_pack(board_url, [PACKS / "support"], "support.request", REQUEST)
    (history,) = run.of_kind("support.history")
    (kb,) = run.of_kind("support.kb")
    assert run.overlapping([history, kb])
    composes = run.of_kind("support.compose")
    first = next(c for c in composes if c.parent == run.goal.id)
    assert set(first.after) == {history.id, kb.id}
    assert first.claimed_at and first.claimed_at >= max(history.finished_at or 0, kb.finished_at or 0)

    drafts = run.of_kind("support.draft")
    reviews = {r.payload["target"]: r for r in run.of_kind("review.support.draft")}
    assert set(reviews) == {d.id for d in drafts}  # every draft was reviewed
    sent = [d for d in drafts if d.handled_by == "sender"]
    assert len(sent) == 1 and sent[0].status is Status.DONE
    assert reviews[sent[0].id].result["approved"] is True
    for d in drafts:
        if d is not sent[0]:  # rejected: cancelled, and the compose step came back with the critique
            assert d.status is Status.CANCELLED and d.handled_by is None
            review = reviews[d.id]
            assert review.result["approved"] is False
            revision = next(c for c in composes if c.parent == review.id)
            assert revision.payload["critique"] == review.result["critique"]
            assert set(revision.after) == {history.id, kb.id}  # the same inputs again
    assert len(composes) == len(drafts)

    reply = sent[0].result
    assert (
        reply["to"] == "Ada" and reply["customer_id"] == "C-1001" and reply["reply"].startswith("Dear Ada,")
    )
    # triage 1; history and kb each a tool round and an answer; the drafter once per draft
    assert run.usage.calls == 1 + 2 + 2 + len(drafts) and run.usage.errors == 0
    assert run.usage.cost > 0 and set(run.usage.by_model) == {
        "offline/support-triage",
        "offline/account-history",
        "offline/kb-search",
        "offline/drafter",
    }
    assert history.usage[0].tools == ("account_history",) and kb.usage[0].tools == ("search_kb",)
