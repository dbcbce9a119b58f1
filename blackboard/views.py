"""Reads as one principal may see them: the board's reads, filtered by the board's policy.

Every read path goes through a `ReadView`: an agent's `Context`, the HTTP API (as the request's
principal) and the CLI (as `cli`). Fetching an item the principal may not read is `PolicyDenied`
and leaves a denial in the audit log; queries, trees and event feeds leave such items out and
record nothing (a filter is not an attempt). A view reads `board.policy` on every call, so a
reloaded policy applies at once; on an open board (no policy) it passes every read through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from blackboard.models import Event, Item, Page, TreeNode, UsageTotals
from blackboard.policy import PolicyDenied, record_denial
from blackboard.reading import follow

if TYPE_CHECKING:
    from blackboard.board import Board

T = TypeVar("T", bound=Item)
_SEEN_CAP = 10_000  # visibility verdicts a view remembers (an item's labels never change)


class ReadView:
    """The board as `principal` may read it."""

    def __init__(self, board: Board, principal: str) -> None:
        self.board, self.principal = board, principal
        self._seen: dict[str, bool] = {}  # item id -> visible, for event feeds

    def visible(self, item: Item) -> bool:
        rules = self.board.policy
        return rules is None or rules.visible(self.principal, item).allowed

    async def readable(self, item: T) -> T:
        """`item`, if the principal may read it; else `PolicyDenied` (after the denial's record)."""
        rules = self.board.policy
        if rules is not None and not (d := rules.visible(self.principal, item)).allowed:
            detail = f"read {item.kind}: {d.rule}"
            await record_denial(self.board, self.principal, "read", item.kind, detail, item.id, d.code)
            raise PolicyDenied(self.principal, "read", item.kind, d.rule)
        return item

    def page(self, page: Page) -> Page:
        """`page` with only the items the principal may read."""
        if self.board.policy is None:
            return page
        return page.model_copy(update={"items": tuple(it for it in page.items if self.visible(it))})

    async def get(self, item_id: str) -> Item:
        return await self.readable(await self.board.get(item_id))

    async def query(self, **filters: Any) -> Page:
        """`Board.query` (kind, status, root, parent, limit, cursor), readable items only."""
        return self.page(await self.board.query(**filters))

    async def dead_letters(self, limit: int = 100, cursor: str | None = None) -> Page:
        return self.page(await self.board.dead_letters(limit=limit, cursor=cursor))

    async def approvals(self, limit: int = 1000) -> list[tuple[Item, float | None]]:
        """Items waiting for approval that the principal may read, with their deadlines."""
        from blackboard import approvals

        return [(it, d) for it, d in await approvals.pending(self.board, limit) if self.visible(it)]

    async def usage(self, item_id: str) -> UsageTotals:
        """Model usage totals of the goal of `item_id` (which the principal must be able to read)."""
        return await self.board.usage((await self.get(item_id)).root)

    async def tree(self, item_id: str) -> TreeNode:
        """The lineage under `item_id` (`PolicyDenied` if it is not readable). An item the
        principal may not read is left out, and its readable descendants take its place under
        its nearest readable ancestor, so nothing readable goes missing and nothing else shows."""
        tree = await self.board.tree(item_id)
        await self.readable(tree.item)
        if self.board.policy is None:
            return tree

        def keep(node: TreeNode) -> list[TreeNode]:
            kids = tuple(n for c in node.children for n in keep(c))
            return [node.model_copy(update={"children": kids})] if self.visible(node.item) else list(kids)

        return keep(tree)[0]

    async def last_event_id(self) -> str:
        return await self.board.last_event_id()

    async def read_events(self, cursor: str, block: float = 0, count: int = 1000) -> tuple[list[Event], str]:
        """`Board.read_events`, without the events of items the principal may not read (their
        labels are looked up once per item, in one round trip per batch)."""
        events, cursor = await self.board.read_events(cursor, block=block, count=count)
        return await self._events(events), cursor

    async def _events(self, events: Sequence[Event]) -> list[Event]:
        rules = self.board.policy
        if rules is None or not events:
            return list(events)
        by_kind = {k: rules.decide(self.principal, "read", k).allowed for k in {e.kind for e in events}}
        events = [e for e in events if by_kind[e.kind]]
        unknown = list(dict.fromkeys(e.id for e in events if e.id not in self._seen))
        if unknown:
            if len(self._seen) + len(unknown) > _SEEN_CAP:
                self._seen.clear()
            for item_id, item in zip(unknown, await self.board.get_many(unknown), strict=True):
                self._seen[item_id] = item is None or self.visible(item)  # gone: its kind decides
        return [e for e in events if self._seen.get(e.id, True)]

    async def events(self, since: str | None = None, *, root: str | None = None) -> AsyncIterator[Event]:
        """`Board.events` (blocking, forever), readable items' events only."""
        async for ev in follow(self.read_events, since or await self.last_event_id(), root):
            yield ev

    async def wait(self, item_id: str, timeout: float = 60.0) -> Item:
        """`Board.wait` for an item the principal may read (checked before waiting)."""
        await self.get(item_id)
        return await self.board.wait(item_id, timeout=timeout)
