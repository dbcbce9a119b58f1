"""Intake: fans a case out to the six specialist checks and posts the verdict that joins them."""

from __future__ import annotations

from typing import Any

from blackboard import Context, Item, agent

CHECKS = ("address", "distance", "history", "conversation", "tracking", "payment")


@agent(name="fraud-intake", consumes=["fraud.case"], produces=["fraud.check.*", "fraud.verdict"])
async def intake(item: Item, ctx: Context) -> dict[str, Any]:
    """Plain Python: routing a case needs no model. Each check gets only the part it needs."""
    case = item.payload
    parts = {
        "address": {"customer": case["customer"], "address": case["address"]},
        "distance": {"address": case["address"], "return": case["return"]},
        "history": {"customer": case["customer"]},
        "conversation": {"transcript": case["transcript"]},
        "tracking": {"order": case["order"], "return": case["return"]},
        "payment": {"customer": case["customer"], "payment": case["payment"]},
    }
    checks = [await ctx.post(f"fraud.check.{name}", parts[name]) for name in CHECKS]
    await ctx.post("fraud.verdict", {"case": case["id"]}, after=[c.id for c in checks if c.id])
    return {"case": case["id"], "checks": list(CHECKS)}
