"""Stock agents: a word-frequency map-reduce over text files, coordinated only through the board.

Post a `wordcount.goal` with {"files": [...], "top": 10}. The planner fans it out into one
`wordcount.map` per file and a `wordcount.reduce` that waits (`after`) for all of them; mappers
share the map items; the reducer joins their counts.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import anyio

from blackboard import Context, Item, agent

WORD_RE = re.compile(r"[a-z][a-z'-]{3,}")
STOPWORDS = frozenset(
    "that this with from have what when where which their there they them then than into each more "  # noqa: SIM905
    "also only must does will your about would could should every other just".split()
)


@agent(name="planner", consumes=["wordcount.goal"], produces=["wordcount.map", "wordcount.reduce"])
async def plan(item: Item, ctx: Context) -> dict[str, Any]:
    """Split a goal into one map item per file and a reduce item that joins them."""
    maps = [await ctx.post("wordcount.map", {"file": f}) for f in item.payload["files"]]
    await ctx.post("wordcount.reduce", {"top": item.payload.get("top", 10)}, after=[m.id for m in maps])
    return {"files": len(maps)}


@agent(name="mapper", consumes=["wordcount.map"], concurrency=3)
async def count(item: Item, ctx: Context) -> dict[str, Any]:
    """Count the words of one file."""
    text = (await anyio.Path(item.payload["file"]).read_text(errors="replace")).lower()
    words = Counter(w for w in WORD_RE.findall(text) if w not in STOPWORDS)
    ctx.log.info("counted", file=item.payload["file"], words=sum(words.values()))
    return {
        "file": item.payload["file"],
        "words": sum(words.values()),
        "counts": dict(words.most_common(200)),
    }


@agent(name="reducer", consumes=["wordcount.reduce"])
async def reduce(item: Item, ctx: Context) -> dict[str, Any]:
    """Merge the counts of every map item this one waited for."""
    total: Counter[str] = Counter()
    for result in (await ctx.dependency_results()).values():
        total.update(result["counts"])
    return {"top": total.most_common(item.payload["top"]), "files": len(item.after)}
