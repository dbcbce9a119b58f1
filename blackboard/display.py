"""Showing the board to a person: lineage trees, items, event lines, goal progress (rich).

`trace` and the live views share `lineage()` (data) and `render_tree()` (drawing), so every
view of a goal shows the same facts.
"""

from __future__ import annotations

from typing import Any

import anyio
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from blackboard.models import TERMINAL_STATUSES, Event, Item, Status, TreeNode, UsageTotals
from blackboard.views import ReadView

STATUS_STYLE = {
    Status.DONE: "green",
    Status.CLAIMED: "yellow",
    Status.OPEN: "cyan",
    Status.WAITING: "blue",
    Status.FAILED: "red",
    Status.DEAD: "bold red",
    Status.CANCELLED: "dim",
}


def took(item: Item) -> str:
    return f"{(item.finished_at - item.created_at) / 1000:.3f}s" if item.finished_at else ""


def render_tree(node: TreeNode, tree: Tree | None = None) -> Tree:
    """A rich Tree of a goal's lineage: kind, id, status, agent, attempts, time."""
    it = node.item
    style = STATUS_STYLE[it.status]
    parts = [f"[{style}]{it.kind}[/]", f"[dim]{it.id}[/]", f"[{style}]{it.status.value}[/]"]
    if it.handled_by:
        parts.append(f"by {it.handled_by}")
    if it.attempts > 1:
        parts.append(f"attempts {it.attempts}")
    if it.finished_at:
        parts.append(took(it))
    if it.usage:
        tokens = sum(c.prompt_tokens + c.completion_tokens for c in it.usage)
        cost = sum(c.cost or 0 for c in it.usage)
        parts.append(f"[cyan]{len(it.usage)} calls {tokens} tok ${cost:.4f}[/]")
    if it.error and it.status is not Status.DONE:
        parts.append(f"[red]{escape(it.error[:80])}[/]")  # free text: never markup
    if it.reason and it.status in (Status.WAITING, Status.CANCELLED):
        parts.append(f"[dim]({escape(it.reason)})[/]")
    label = " ".join(parts)
    branch = tree.add(label) if tree else Tree(label)
    for child in node.children:
        render_tree(child, branch)
    return branch


async def traced(view: ReadView, item_id: str) -> dict[str, Any]:
    """The JSON of `trace --json` and the HTTP tree: the lineage plus its goal's usage totals."""
    tree = await view.tree(item_id)
    usage = await view.board.usage(tree.item.root)
    return tree.model_dump(mode="json") | {"usage": usage.model_dump(mode="json")}


def usage_line(u: UsageTotals) -> str:
    """One line of a goal's model usage: calls, tokens, cost, and the same per model."""
    if not u.calls:
        return "model usage: none"
    models = ", ".join(
        f"{name} {m.calls} calls {m.tokens} tok ${m.cost:.4f}" for name, m in sorted(u.by_model.items())
    )
    failed = f", {u.errors} failed" if u.errors else ""
    return (
        f"model usage: {u.calls} calls{failed}, {u.prompt_tokens} prompt + {u.completion_tokens} completion "
        f"tokens, ${u.cost:.4f} ({escape(models)})"
    )


def event_line(ev: Event) -> str:
    agent = f" by {ev.data['agent']}" if "agent" in ev.data else ""
    reason = f" ({ev.data['reason']})" if "reason" in ev.data else ""
    return f"{ev.type:<9} {ev.kind:<24} {ev.id}{agent}{reason}"


def final_item(tree: TreeNode) -> Item:
    """The goal's answer: the item that finished last in its tree."""
    return max(tree.walk(), key=lambda i: (i.finished_at or 0, i.depth, i.id))  # ties: the deeper


def finished(tree: TreeNode) -> bool:
    return all(i.status in TERMINAL_STATUSES for i in tree.walk())


async def follow_goal(
    view: ReadView, goal_id: str, console: Console | None, timeout: float, since: str = "0-0"
) -> TreeNode:
    """Print the goal's events (after `since`) until its whole tree is finished; return the tree
    (as far as the view's principal may read them)."""
    cursor, tree = since, None
    with anyio.fail_after(timeout):
        while True:
            # One more read after the tree is seen finished: it may be newer than the events.
            events, cursor = await view.read_events(cursor, block=0 if tree else 2.0)
            for ev in events:
                if ev.root == goal_id and console is not None:
                    console.print("  " + escape(event_line(ev)), highlight=False)
            if tree is not None and not events:
                return tree
            if tree is None and (
                not events or any(e.root == goal_id and e.status in TERMINAL_STATUSES for e in events)
            ):
                candidate = await view.tree(goal_id)
                tree = candidate if finished(candidate) else None
