"""The citation checker: a plain Python agent, because checking citations needs no model."""

from __future__ import annotations

from typing import Any

from blackboard import Context, Item, agent


@agent(name="citation-checker", consumes=["research.check"])
async def check_citations(item: Item, ctx: Context) -> dict[str, Any]:
    """Every claim must cite at least one finding of this goal, and nothing else."""
    findings = set(item.payload["findings"])
    uncited = [c["text"] for c in item.payload["claims"] if not c.get("cites")]
    unknown = sorted({i for c in item.payload["claims"] for i in c.get("cites", [])} - findings)
    if unknown:
        raise ValueError(f"claims cite items that are not findings of this goal: {unknown}")
    return {"ok": not uncited, "claims": len(item.payload["claims"]), "uncited": uncited}
