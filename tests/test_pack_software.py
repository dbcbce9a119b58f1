"""The software pack through a real daemon on the offline model."""

from __future__ import annotations

import itertools
import json
from types import ModuleType

import pytest

from blackboard import Item, Status
from tests.support.packs import PACKS, PackRun, pack_module, run_pack
from tests.test_critic import run_guarded_goal

GOAL = json.loads((PACKS / "software" / "goal.json").read_text())
FILES = GOAL["payload"]["files"]


def reviews(run: PackRun, kind: str) -> dict[str, Item]:
    return {r.payload["target"]: r for r in run.of_kind(f"review.{kind}")}


def check_reviews(run: PackRun, kind: str, consumer: str) -> None:
    """Downstream took only approved items; every rejected one was cancelled and sent back."""
    items, by_target = run.of_kind(kind), reviews(run, kind)
    assert set(by_target) == {i.id for i in items}  # every guarded item was reviewed
    for i in items:
        review = by_target[i.id]
        if i.handled_by == consumer:  # taken only after an approving review finished
            assert review.result["approved"] is True and (i.claimed_at or 0) >= (review.finished_at or 0)
        else:  # rejected: cancelled, and its producer's input came back with the critique
            assert i.status is Status.CANCELLED and review.result["approved"] is False
            (revision,) = [x for x in run.items if x.parent == review.id]
            assert revision.payload["critique"] == review.result["critique"]
            assert revision.payload["revision"] >= 1 and revision.payload["rejected"] == i.payload


def lineage(run: PackRun, last: Item) -> list[Item]:
    """The work items from the goal down to `last` (reviews, which sit between stages, left out)."""
    by_id, chain = {i.id: i for i in run.items}, []
    node: Item | None = last
    while node is not None:
        chain.append(node)
        node = by_id.get(node.parent) if node.parent else None
    return [i for i in reversed(chain) if not i.kind.startswith("review.")]


def published(run: PackRun) -> Item:
    (docs,) = [d for d in run.of_kind("software.docs") if d.handled_by == "publisher"]
    return docs


@pytest.mark.anyio
async def test_stages_run_in_order_and_critics_send_work_back(board_url: str) -> None:
    run = await run_pack(board_url, [PACKS / "software"], GOAL["kind"], GOAL["payload"])
    assert run.goal.status is Status.DONE and run.goal.result["file"] in FILES
    check_reviews(run, "software.fix", "test-runner")
    check_reviews(run, "software.docs", "publisher")

    docs = published(run)
    stages = lineage(run, docs)
    assert [kind for kind, _ in itertools.groupby(s.kind for s in stages)] == [  # revisions repeat a stage
        "software.bug",
        "software.fix_request",
        "software.fix",
        "software.docs_request",
        "software.docs",
    ]
    for before, after in itertools.pairwise(stages):  # each stage started after the one before finished
        assert after.claimed_at is not None and after.claimed_at >= (before.finished_at or 0)

    (tested,) = [f for f in run.of_kind("software.fix") if f.handled_by == "test-runner"]
    assert set(tested.payload) >= {"summary", "patch", "files_touched"}
    assert tested.payload["files_touched"] == [run.goal.result["file"]]
    assert tested.result["passed"] is True and tested.result["details"]
    # the final docs item: its schema, and what the publisher made of it
    assert set(docs.payload) == {"title", "files", "entry"} and len(docs.payload["entry"]) >= 10
    assert docs.payload["files"] == tested.payload["files_touched"]
    assert docs.result == {
        "published": True,
        "title": GOAL["payload"]["title"],
        "entry": docs.payload["entry"],
    }

    # the offline run exercises both critics' rejections (deterministic for this goal)
    assert any(r.result["approved"] is False for r in reviews(run, "software.fix").values())
    assert any(r.result["approved"] is False for r in reviews(run, "software.docs").values())
    docs_reviews = list(reviews(run, "software.docs").values())
    assert all(r.usage and r.usage[0].model == "offline/docs-critic" for r in docs_reviews)
    assert run.usage.errors == 0 and run.usage.cost > 0
    assert {"offline/analyst", "offline/developer", "offline/docs-writer", "offline/docs-critic"} == set(
        run.usage.by_model
    )
    llm_items = [i for i in run.items if i.handled_by in ("analyst", "developer", "docs-writer")]
    assert all(len(i.usage) == 1 for i in llm_items)  # each LLM stage's call recorded on its item


@pytest.mark.anyio
async def test_a_failed_test_run_sends_the_fix_back_to_the_developer(board_url: str) -> None:
    """A reviewed fix whose diff is malformed (the hunk promises two lines, has one) fails the test
    run; the developer gets the failure as a new fix request and the pipeline goes on to the docs."""
    bad_fix = {
        "bug": GOAL["payload"],
        "analysis": {"root_cause": "division by len([])", "file": "stats.py", "plan": "return 0.0"},
        "files_touched": ["stats.py"],
        "summary": "Return 0.0 from mean() when the list is empty, as documented.",
        "patch": "--- a/stats.py\n+++ b/stats.py\n@@ -2,2 +2,2 @@\n"
        "-    return sum(xs) / len(xs)\n+    return 0.0\n",
    }
    run = await run_guarded_goal(board_url, [PACKS / "software"], "software.fix", bad_fix)
    assert reviews(run, "software.fix")[run.goal.id].result["approved"] is True
    assert run.goal.handled_by == "test-runner" and run.goal.result["passed"] is False
    assert "promises -2 +2 lines and has -1 +1" in run.goal.result["details"][0]

    (again,) = [i for i in run.of_kind("software.fix_request") if i.parent == run.goal.id]
    assert again.payload["round"] == 1 and again.payload["test_failure"] in run.goal.result["details"][0]
    assert again.handled_by == "developer" and (again.claimed_at or 0) >= (run.goal.finished_at or 0)
    docs = published(run)
    (passed,) = [
        f for f in run.of_kind("software.fix") if f.handled_by == "test-runner" and f is not run.goal
    ]
    assert passed.result["passed"] is True and passed.payload["round"] == 1
    assert [s.kind for s in lineage(run, docs)][:2] == ["software.fix", "software.fix_request"]


def load_testrun() -> ModuleType:
    return pack_module("software", "testrun.py")


@pytest.mark.parametrize(
    ("patch", "files", "problem"),
    [
        ("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n", ["x.py"], None),
        ("--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n c\n-a\n+b\n c\n", ["x.py"], None),
        (
            "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n--- a/y.py\n+++ b/y.py\n@@ -4,0 +5 @@\n+c\n",
            ["x.py", "y.py"],
            None,
        ),
        ("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n--- a\n+b\n", ["x.py"], None),  # a removed "-- a"
        ("--- a/x.py\n+++ b/x.py\n@@ -1 +1,2 @@\n-a\n+b\n", ["x.py"], "promises -1 +2"),
        ("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n+c\n", ["x.py"], "line 6: expected"),
        ("--- a/x.py\n+++ b/y.py\n@@ -1 +1 @@\n-a\n+b\n", ["y.py"], "renames"),
        ("--- a/x.py\n+++ b/x.py\n", ["x.py"], "no hunk"),
        ("just change line 2", [], "expected a '--- a/<file>'"),
        ("", [], "empty"),
    ],
)
def test_the_test_run_checks_the_shape_of_the_diff(patch: str, files: list[str], problem: str | None) -> None:
    touched, problems = load_testrun().diff_problems(patch)
    assert touched == files
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]
