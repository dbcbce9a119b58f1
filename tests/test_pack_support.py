"""The support pack through a real daemon on the offline model, and its review rules alone."""

from __future__ import annotations

from typing import Any

import pytest

from blackboard import Item, Status
from tests.support.packs import PACKS, pack_module, run_pack

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
    # On this request the offline drafter's first draft is too short (deterministically), so the
    # loop runs; max_revisions is 2, so at most three drafts.
    assert 2 <= len(drafts) <= 3 and all(c.payload.get("revision", 0) <= 2 for c in composes)

    reply = sent[0].result
    assert set(reply) == {"to", "customer_id", "reply"}
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


# -- the review rules on hand-made drafts ----------------------------------------------------


def _review() -> Any:
    return pack_module("support", "_review.py").review


def _item(kind: str, payload: Any) -> Item:
    return Item(id=kind, kind=kind, payload=payload, status=Status.WAITING, created_at=0, root="g")


COMPOSE = _item("support.compose", REQUEST)
GOOD = {
    "customer_id": "C-1001",
    "to": "Ada",
    "body": "Your order O-81 is with UPS; we refunded the shipping.",
}


@pytest.mark.parametrize(
    ("change", "critique"),
    [
        ({}, None),
        ({"body": "  "}, "empty"),
        ({"to": ""}, "which customer"),
        ({"to": "Grace", "customer_id": "C-2002"}, "not to the customer who wrote"),
        ({"body": "It is on its way."}, "too short"),
        ({"body": GOOD["body"] + " We guarantee it."}, "guarantees"),
    ],
)
def test_review_rules(change: dict[str, Any], critique: str | None) -> None:
    verdict = _review()(_item("support.draft", GOOD | change), COMPOSE)
    assert verdict is None if critique is None else critique in verdict
