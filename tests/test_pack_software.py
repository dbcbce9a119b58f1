"""The software pack through a real daemon on the offline model."""

from __future__ import annotations

import itertools
import json

import pytest

from blackboard import Item, Status
from tests.support.packs import PACKS, PackRun, run_pack

pytestmark = pytest.mark.anyio

GOAL = json.loads((PACKS / "software" / "goal.json").read_text())


def reviews(run: PackRun, kind: str) -> dict[str, Item]:
    return {r.payload["target"]: r for r in run.of_kind(f"review.{kind}")}


async def test_stages_run_in_order_and_critics_send_work_back(board_url: str) -> None:
    run = await run_pack(board_url, [PACKS / "software"], GOAL["kind"], GOAL["payload"])
    assert run.goal.status is Status.DONE and run.goal.result["file"] in GOAL["payload"]["files"]

    for kind, consumer in (("software.fix", "test-runner"), ("software.docs", "publisher")):
        items, by_target = run.of_kind(kind), reviews(run, kind)
        assert set(by_target) == {i.id for i in items}  # every guarded item was reviewed
        for i in items:
            review = by_target[i.id]
            if i.handled_by == consumer:  # downstream took it only after an approving review
                assert review.result["approved"] is True and i.claimed_at >= (review.finished_at or 0)
            else:  # rejected: cancelled, and its producer's input came back with the critique
                assert i.status is Status.CANCELLED and review.result["approved"] is False
                (revision,) = [x for x in run.items if x.parent == review.id]
                assert revision.payload["critique"] == review.result["critique"]
                assert revision.payload["revision"] >= 1

    # each stage started after the one before it finished
    chain = []
    (published,) = [d for d in run.of_kind("software.docs") if d.handled_by == "publisher"]
    node: Item | None = published
    by_id = {i.id: i for i in run.items}
    while node is not None:
        chain.append(node)
        node = by_id.get(node.parent) if node.parent else None
    stages = [i for i in reversed(chain) if not i.kind.startswith("review.")]
    assert stages[0].kind == "software.bug" and stages[-1] is published
    assert {"software.fix_request", "software.fix", "software.docs_request"} <= {s.kind for s in stages}
    for before, after in itertools.pairwise(stages):
        assert (after.claimed_at or 0) >= (before.finished_at or 0)

    assert published.result == {
        "published": True,
        "title": GOAL["payload"]["title"],
        "entry": published.payload["entry"],
    }
    tested = [f for f in run.of_kind("software.fix") if f.handled_by == "test-runner"]
    assert tested and tested[-1].result["passed"] is True
    # the offline run exercises both critics' rejections (deterministic for this goal)
    assert any(r.result["approved"] is False for r in reviews(run, "software.fix").values())
    assert any(r.result["approved"] is False for r in reviews(run, "software.docs").values())
    docs_reviews = list(reviews(run, "software.docs").values())
    assert all(r.usage and r.usage[0].model == "offline/docs-critic" for r in docs_reviews)
    assert run.usage.errors == 0 and run.usage.cost > 0
    assert {"offline/analyst", "offline/developer", "offline/docs-writer", "offline/docs-critic"} == set(
        run.usage.by_model
    )
