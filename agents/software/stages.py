"""The test run and the publisher: plain Python stages of the software pipeline."""

from __future__ import annotations

import re
from typing import Any

from blackboard import Context, Item, agent

HUNK = re.compile(r"^--- a/(\S+)\n\+\+\+ b/(\S+)\n@@ [^\n]* @@\n(-[^\n]*\n)+\+[^\n]*(\n\+[^\n]*)*\n?$")
MAX_TEST_ROUNDS = 2


@agent(
    name="test-runner", consumes=["software.fix"], produces=["software.docs_request", "software.fix_request"]
)
async def run_tests(item: Item, ctx: Context) -> dict[str, Any]:
    """'Runs the tests' deterministically: the patch must be a well-formed diff of a file of the bug.
    A failing fix goes back to the developer (a new fix request with the failure), twice at most."""
    fix = item.payload
    m = HUNK.match(fix["patch"])
    problems = []
    if m is None:
        problems.append("the patch is not a well-formed unified diff")
    elif m.group(1) != m.group(2) or m.group(1) not in fix["bug"]["files"]:
        problems.append(f"the patch touches {m.group(1)}, not a file of the bug")
    report = {"passed": not problems, "details": problems or ["diff applies to " + fix["file"]]}
    if report["passed"]:
        await ctx.post("software.docs_request", {"title": fix["bug"]["title"], "fix": fix["summary"]})
    elif fix.get("round", 0) < MAX_TEST_ROUNDS:
        await ctx.post(
            "software.fix_request",
            {
                "bug": fix["bug"],
                "analysis": fix["analysis"],
                "round": fix.get("round", 0) + 1,
                "test_failure": "; ".join(problems),
            },
        )
    return report


@agent(name="publisher", consumes=["software.docs"])
async def publish(item: Item, ctx: Context) -> dict[str, Any]:
    """Only reviewed docs get here (docs-critic guards them)."""
    return {"published": True, "title": item.payload["title"], "entry": item.payload["entry"]}
