"""A pipeline whose producer emits an invalid output about one time in five."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from blackboard import Context, Item, agent


def broken(payload: Any) -> bool:
    """Deterministic 20%: a revision (its payload carries `revision`) gets a fresh draw."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).digest()
    return digest[0] % 5 == 0


@agent(name="cc-fanout", consumes=["cc.goal"], produces=["cc.task"])
async def fanout(item: Item, ctx: Context) -> int:
    for n in range(item.payload["tasks"]):
        await ctx.post("cc.task", {"n": n})
    return int(item.payload["tasks"])


@agent(name="cc-producer", consumes=["cc.task"], produces=["cc.output"], concurrency=8)
async def produce(item: Item, ctx: Context) -> bool:
    bad = broken(item.payload)
    await ctx.post("cc.output", {"n": item.payload["n"], "value": None if bad else item.payload["n"] * 2})
    return bad


@agent(name="cc-final", consumes=["cc.output"], concurrency=8)
async def final(item: Item, ctx: Context) -> dict[str, Any]:
    return {"n": item.payload["n"], "valid": item.payload["value"] is not None}
