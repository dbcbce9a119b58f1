"""fix-critic's rules: a reviewer's checklist, as code."""

from __future__ import annotations

from blackboard import Item

MIN_SUMMARY = 35


def review_fix(fix: Item, producer: Item | None) -> str | None:
    """None approves; a string sends the fix back to the developer with that critique."""
    p = fix.payload
    if not p["files_touched"]:
        return "The fix touches no file."
    if outside := [f for f in p["files_touched"] if f not in p["bug"]["files"]]:
        return f"The fix touches {', '.join(outside)}, which is not part of this code base."
    if len(p["summary"]) < MIN_SUMMARY:
        return "Explain the change: the summary is too short to review."
    return None
