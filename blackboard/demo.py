"""The demo: a word-frequency map-reduce over text files, coordinated only through the board.

A planner takes the goal and posts one `wordcount.map` item per file plus a `wordcount.reduce`
item that waits (`after`) for all of them; three mappers share the map items; a reducer joins
their results. No worker calls another: each claims what it handles and writes back.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from blackboard import ids
from blackboard.board import Board
from blackboard.models import Claim, Item, NewItem, Status, TreeNode

WORD_RE = re.compile(r"[a-z][a-z'-]{3,}")
STOPWORDS = frozenset(
    "that this with from have what when where which their there they them then than into each more "  # noqa: SIM905
    "also only must does will your about would could should every other just".split()
)
STATUS_STYLE = {
    Status.DONE: "green", Status.CLAIMED: "yellow", Status.OPEN: "cyan", Status.WAITING: "blue",
    Status.FAILED: "red", Status.DEAD: "bold red", Status.CANCELLED: "dim",
}  # fmt: skip

Handler = Callable[[Board, Claim], Awaitable[tuple[Any, Sequence[NewItem]]]]


def default_files(root: Path) -> list[Path]:
    """The repo's docs when run from a checkout, else this package's own source."""
    found = [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]
    return found or sorted(Path(__file__).parent.glob("*.py"))


async def plan(board: Board, claim: Claim) -> tuple[Any, Sequence[NewItem]]:
    files = claim.item.payload["files"]
    map_ids = [ids.child_id(claim.id, f"map{i}") for i in range(len(files))]
    maps = [NewItem(kind="wordcount.map", id=i, payload={"file": f}) for i, f in zip(map_ids, files, strict=True)]
    reduce = NewItem(kind="wordcount.reduce", id=ids.child_id(claim.id, "reduce"), after=tuple(map_ids),
                     payload={"top": claim.item.payload.get("top", 10)})  # fmt: skip
    return {"files": len(files)}, [*maps, reduce]


async def count(board: Board, claim: Claim) -> tuple[Any, Sequence[NewItem]]:
    path = anyio.Path(claim.item.payload["file"])
    text = (await path.read_text(errors="replace")).lower()
    words = Counter(w for w in WORD_RE.findall(text) if w not in STOPWORDS)
    return {"file": claim.item.payload["file"], "words": sum(words.values()),
            "counts": dict(words.most_common(200))}, []  # fmt: skip


async def reduce(board: Board, claim: Claim) -> tuple[Any, Sequence[NewItem]]:
    total: Counter[str] = Counter()
    for dep in await board.get_many(list(claim.item.after)):
        assert dep is not None and dep.status is Status.DONE
        total.update(dep.result["counts"])
    return {"top": total.most_common(claim.item.payload["top"]), "files": len(claim.item.after)}, []


async def work(board: Board, agent: str, kinds: list[str], handler: Handler) -> None:
    """Claim, handle, complete, forever; block on the board's wake-up signal when idle."""
    while True:
        claims, due = await board.claim_with_due(agent, kinds, n=1, lease=30)
        if not claims:
            wait = min(5.0, max(0.0, due - time.time())) if due else 5.0
            await board.wait_for_work(kinds, timeout=wait or 0.01)
            continue
        for claim in claims:
            try:
                result, outputs = await handler(board, claim)
            except Exception as e:  # a failing handler fails its claim, never the worker
                await board.fail(claim, f"{type(e).__name__}: {e}")
            else:
                await board.complete(claim, result, outputs)


def render_tree(node: TreeNode, tree: Tree | None = None) -> Tree:
    """A rich Tree of a goal's lineage with status, agent and duration."""
    it = node.item
    took = f" {(it.finished_at - it.created_at) / 1000:.3f}s" if it.finished_at else ""
    who = f" by {it.handled_by}" if it.handled_by else ""
    label = f"[{STATUS_STYLE[it.status]}]{it.kind}[/] {it.id[-6:]} {it.status.value}{who}{took}"
    if it.kind == "wordcount.map":
        label += f"  [dim]{Path(it.payload['file']).name}[/]"
    branch = tree.add(label) if tree else Tree(label)
    for child in node.children:
        render_tree(child, branch)
    return branch


async def run_demo(url: str, files: list[Path], console: Console, top: int = 10) -> Item:
    """Post the demo goal, run the workers until its reduce is done, and show what happened."""
    board = await Board.connect(url, board=f"demo-{int(time.time())}")
    try:
        goal = await board.post("wordcount.goal", {"files": [str(f) for f in files], "top": top})
        console.print(f"[bold]posted goal[/] {goal.id} over {len(files)} files on {url}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(work, board, "planner", ["wordcount.goal"], plan)
            for n in range(3):
                tg.start_soon(work, board, f"mapper-{n + 1}", ["wordcount.map"], count)
            tg.start_soon(work, board, "reducer", ["wordcount.reduce"], reduce)
            final = await watch(board, goal, console)
            tg.cancel_scope.cancel()
        console.print(render_tree(await board.tree(goal.id)))
        table = Table("word", "count", title="most frequent words")
        for word, n in final.result["top"]:
            table.add_row(word, str(n))
        console.print(table)
        return final
    finally:
        await board.close()


async def watch(board: Board, goal: Item, console: Console) -> Item:
    """Print the goal's events as they happen until its reduce item is finished."""
    cursor = "0-0"
    with anyio.fail_after(120):
        while True:
            events, cursor = await board.read_events(cursor, block=5)
            for ev in events:
                if ev.root != goal.id:
                    continue
                agent = f" by {ev.data['agent']}" if "agent" in ev.data else ""
                console.print(f"  {ev.type:<9} {ev.kind:<17} {ev.id[-6:]}{agent}")
                if ev.kind == "wordcount.reduce" and ev.status in (Status.DONE, Status.DEAD, Status.CANCELLED):
                    return await board.get(ev.id)
