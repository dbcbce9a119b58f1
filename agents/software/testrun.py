"""The test run: a plain Python stage of the software pipeline, deterministic, executing nothing."""

from __future__ import annotations

import re
from typing import Any

from blackboard import Context, Item, agent

HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
MAX_TEST_ROUNDS = 2  # failed runs sent back to the developer before the pipeline gives up


def diff_problems(patch: str) -> tuple[list[str], list[str]]:
    """The files a unified diff touches and what is wrong with its shape (nothing: it is well formed).
    Hunk line counts are checked against their headers, which is what `patch` would reject first."""
    files: list[str] = []
    problems: list[str] = []
    lines = patch.splitlines()
    i = 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            problems.append(f"line {i + 1}: expected a '--- a/<file>' and '+++ b/<file>' header")
            break
        old, new = lines[i][4:].strip(), lines[i + 1][4:].strip()
        name = new.removeprefix("b/") if new != "/dev/null" else old.removeprefix("a/")
        if old != "/dev/null" and new != "/dev/null" and old.removeprefix("a/") != name:
            problems.append(f"line {i + 1}: the header renames {old} to {new}")
        files.append(name)
        i += 2
        hunks = 0
        while i < len(lines) and (m := HUNK.match(lines[i])):
            hunks += 1
            want_old, want_new = int(m.group(1) or 1), int(m.group(2) or 1)
            i += 1
            got_old = got_new = 0
            while i < len(lines) and lines[i][:1] in (" ", "-", "+", "\\"):  # the hunk's body
                if lines[i][:1] != "\\" and (got_old, got_new) == (want_old, want_new):
                    break  # complete: what follows is the next hunk or file ("--- " may be either)
                tag = lines[i][:1]
                got_old += tag in (" ", "-")
                got_new += tag in (" ", "+")
                i += 1
            if (got_old, got_new) != (want_old, want_new):
                problems.append(
                    f"{name}: a hunk promises -{want_old} +{want_new} lines and has -{got_old} +{got_new}"
                )
        if hunks == 0:
            problems.append(f"{name}: no hunk")
            break
    if not lines:
        problems.append("the patch is empty")
    return files, problems


@agent(
    name="test-runner", consumes=["software.fix"], produces=["software.docs_request", "software.fix_request"]
)
async def run_tests(item: Item, ctx: Context) -> dict[str, Any]:
    """'Runs the tests' deterministically: the patch must be a well-formed unified diff that touches
    exactly the files it declares, all of them files of the bug. Nothing is applied or executed.
    A pass hands the fix to the docs writer; a failure goes back to the developer with the details
    (as a new fix request), MAX_TEST_ROUNDS times at most."""
    fix = item.payload
    bug_files = set(fix["bug"]["files"])
    files, problems = diff_problems(fix["patch"])
    if unknown := sorted(set(files) - bug_files):
        problems.append(f"the patch touches {', '.join(unknown)}, not in the code base")
    if set(files) != set(fix["files_touched"]):
        problems.append(f"the patch touches {sorted(set(files))}, the fix declares {fix['files_touched']}")
    passed = not problems
    report = {
        "passed": passed,
        "details": problems or [f"the diff is well formed; touches {', '.join(files)}"],
    }
    if passed:
        await ctx.post(
            "software.docs_request",
            {"title": fix["bug"]["title"], "fix": fix["summary"], "files": fix["files_touched"]},
        )
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
