"""Sends an approved reply (here: records it as the result)."""

from __future__ import annotations

from typing import Any

from blackboard import Context, Item, agent


@agent(name="sender", consumes=["support.draft"])
async def send(item: Item, ctx: Context) -> dict[str, Any]:
    """Only approved drafts get here: the board holds guarded items until their review is done."""
    p = item.payload
    steps = "".join(f"\n- {s}" for s in p.get("next_steps", []))
    return {"to": p["to"], "customer_id": p["customer_id"], "reply": f"Dear {p['to']},\n\n{p['body']}{steps}"}
