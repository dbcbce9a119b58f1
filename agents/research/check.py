"""The citation checker: a plain Python agent, because checking citations needs no model."""

from __future__ import annotations

from typing import Any

from blackboard import Context, Fail, Item, agent


@agent(name="citation-checker", consumes=["research.check"])
async def check_citations(item: Item, ctx: Context) -> dict[str, Any]:
    """Every claim must cite at least one finding of this goal, and nothing else.

    The findings are read from the board (the `after` ids of the synthesis that posted this
    check), not from the payload, so a synthesis cannot vouch for its own citations.
    """
    if item.parent is None:
        raise Fail("a research.check must be posted by a research.synthesis")
    synthesis = await ctx.get(item.parent)
    if synthesis.kind != "research.synthesis":
        raise Fail(f"a research.check must be posted by a research.synthesis, not {synthesis.kind}")
    findings = set(synthesis.after)
    claims = item.payload["claims"]
    uncited = [c["text"] for c in claims if not c.get("cites")]
    unknown = sorted({i for c in claims for i in c.get("cites", [])} - findings)
    if unknown:  # Fail, not an exception: checking again cannot make a citation real
        raise Fail(f"claims cite items that are not findings of this goal: {unknown}")
    return {"ok": not uncited, "claims": len(claims), "uncited": uncited}
