"""The publisher: the last stage, a plain Python agent. It exists so reviewed docs have a consumer
(a guarded item waits for its review, then for someone to take it)."""

from __future__ import annotations

from typing import Any

from blackboard import Context, Item, agent


@agent(name="publisher", consumes=["software.docs"])
async def publish(item: Item, ctx: Context) -> dict[str, Any]:
    """Only reviewed docs get here (docs-critic guards them)."""
    return {"published": True, "title": item.payload["title"], "entry": item.payload["entry"]}
