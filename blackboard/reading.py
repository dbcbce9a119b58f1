"""Reading a board: items by id, queries with cursor paging, lineage trees, stats and events.

Reads are plain Redis commands over the indexes the scripts keep: the lex index
"status|kind|id" for status and kind, "root|id" for a goal's items, "parent|id" for children,
and the capped event stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from blackboard import connection, kinds
from blackboard.codec import decode_item
from blackboard.errors import InvalidInput, ItemNotFound
from blackboard.keys import Keyspace
from blackboard.models import (
    TERMINAL_STATUSES,
    Event,
    Item,
    KindStats,
    Page,
    Stats,
    Status,
    TreeNode,
    UsageTotals,
)

T = TypeVar("T")
MAX_PAGE = 10_000


def _status(value: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise InvalidInput(
            "status", f"{value!r} is not a status; expected one of {', '.join(Status)}"
        ) from None


def _text(v: str | bytes) -> str:
    return v if isinstance(v, str) else v.decode()


class BoardReader:
    """The read side of `Board` (kept apart so each file stays readable)."""

    name: str
    redis: Any
    keys: Keyspace
    retrying: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

    async def get(self, item_id: str) -> Item:
        """The item with `item_id`, or `ItemNotFound`."""
        item = (await self.get_many([item_id]))[0]
        if item is None:
            raise ItemNotFound(item_id)
        return item

    async def get_many(self, ids: Sequence[str]) -> list[Item | None]:
        """Items by id, read consistently in one round trip (None where there is none)."""
        if not ids:
            return []
        k = self.keys

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in (k.kind, k.items, k.state, k.results, k.usage):
                    pipe.hmget(key, list(ids))
                return list(await pipe.execute())

        kind, docs, states, results, usage = await self.retrying(read)
        return [
            decode_item(i, kind[n], docs[n], states[n], results[n], usage[n]) if kind[n] is not None else None
            for n, i in enumerate(ids)
        ]

    async def query(
        self,
        *,
        kind: str | None = None,
        status: Status | str | None = None,
        root: str | None = None,
        parent: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Items matching every given filter, a page at a time (pass `cursor` back for more).

        By root or parent the page is in id order and may hold fewer than `limit` items when
        other filters drop some; `cursor` is None once there is nothing more.
        """
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"expected 1-{MAX_PAGE}, got {limit!r}")
        st = _status(status) if status is not None else None
        if kind is not None:
            kinds.check_kind(kind)
        if root is not None or parent is not None:
            key = self.keys.children if parent is not None else self.keys.lineage
            members, nxt = await self._scan(key, [f"{parent or root}|"], cursor, limit)
            found = [it for it in await self.get_many([m.rsplit("|", 1)[1] for m in members]) if it]
            found = [
                it
                for it in found
                if (kind is None or it.kind == kind)
                and (st is None or it.status == st)
                and (root is None or it.root == root)
            ]
            return Page(items=tuple(found), cursor=nxt)
        if st is not None:
            prefixes = [f"{st}|{kind}|" if kind else f"{st}|"]
        else:
            prefixes = sorted(f"{s}|{kind}|" for s in Status) if kind else [""]
        members, nxt = await self._scan(self.keys.status, prefixes, cursor, limit)
        items = await self.get_many([m.rsplit("|", 1)[1] for m in members])
        return Page(items=tuple(it for it in items if it), cursor=nxt)

    async def _scan(
        self, key: str, prefixes: list[str], cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """Members of a lex index under sorted `prefixes`, after `cursor`."""
        out: list[str] = []
        for p in prefixes:
            if cursor is not None and not cursor.startswith(p) and cursor > p:
                continue  # a prefix wholly before the cursor
            lo = b"(" + cursor.encode() if cursor and cursor.startswith(p) else b"[" + p.encode()
            hi = b"[" + p.encode() + b"\xff"
            want = limit - len(out)
            got = await self.retrying(lambda: self.redis.zrangebylex(key, lo, hi, 0, want))  # noqa: B023
            out += [m.decode() for m in got]
            if len(out) >= limit:
                return out, out[-1]
        return out, None

    async def dead_letters(self, limit: int = 100, cursor: str | None = None) -> Page:
        """Dead-lettered items (attempts exhausted or failed for good), with their last error."""
        return await self.query(status=Status.DEAD, limit=limit, cursor=cursor)

    async def tree(self, item_id: str) -> TreeNode:
        """The lineage under `item_id`: it, the items it posted, theirs, and so on."""
        top = await self.get(item_id)
        ids: list[str] = []
        cursor = None
        while True:
            members, cursor = await self._scan(self.keys.lineage, [f"{top.root}|"], cursor, MAX_PAGE)
            ids += [m.rsplit("|", 1)[1] for m in members]
            if cursor is None:
                break
        by_parent: dict[str | None, list[Item]] = {}
        for it in await self.get_many(ids):
            if it is not None:
                by_parent.setdefault(it.parent, []).append(it)

        def node(it: Item) -> TreeNode:
            kids = sorted(by_parent.get(it.id, []), key=lambda c: (c.created_at, c.id))
            return TreeNode(item=it, children=tuple(node(c) for c in kids))

        return node(top)

    async def usage(self, root: str) -> UsageTotals:
        """Model usage totals of the goal `root` (every call on any of its items, all attempts)."""
        raw = await self.retrying(lambda: self.redis.hget(self.keys.totals, root))
        return UsageTotals.model_validate_json(raw) if raw else UsageTotals()

    async def guards(self) -> dict[str, str]:
        """Guarded kinds and the review kind a critic takes their items under."""
        raw = await self.retrying(lambda: self.redis.hgetall(self.keys.guards))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def stats(self) -> Stats:
        """Counts by kind and status, and the sizes of each kind's claim indexes."""
        counts = await self.retrying(lambda: self.redis.hgetall(self.keys.counts))
        by_kind: dict[str, dict[Status, int]] = {}
        for field, n in counts.items():
            kind, _, status = field.decode().rpartition("|")
            if int(n):
                by_kind.setdefault(kind, {})[Status(status)] = int(n)
        names = sorted(by_kind)

        async def sizes() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in names:
                    ready, delayed, leased, _ = self.keys.kind_keys(k)
                    pipe.zcard(ready)
                    pipe.zcard(delayed)
                    pipe.zcard(leased)
                return list(await pipe.execute())

        z = await self.retrying(sizes) if names else []
        out = {
            k: KindStats(
                kind=k, by_status=by_kind[k], ready=z[3 * i], delayed=z[3 * i + 1], leased=z[3 * i + 2]
            )
            for i, k in enumerate(names)
        }
        dead = sum(s.by_status.get(Status.DEAD, 0) for s in out.values())
        return Stats(board=self.name, kinds=out, dead_letters=dead)

    async def last_event_id(self) -> str:
        """The newest event's cursor ('0-0' when there is none): read events after it."""
        got = await self.retrying(lambda: self.redis.xrevrange(self.keys.events, count=1))
        return got[0][0].decode() if got else "0-0"

    async def read_events(self, cursor: str, block: float = 0, count: int = 1000) -> tuple[list[Event], str]:
        """Events after `cursor`, waiting up to `block` seconds for the first. Returns the new cursor."""
        ms = int(min(block, connection.MAX_BLOCK) * 1000)
        got = await self.retrying(
            lambda: self.redis.xread({self.keys.events: cursor}, count=count, block=ms or None)
        )
        events = []
        for _, entries in got or []:
            for eid, fields in entries:
                f = {k.decode(): v.decode() for k, v in fields.items()}
                cursor = eid.decode()
                events.append(
                    Event(
                        cursor=cursor,
                        type=f.pop("type"),
                        id=f.pop("id"),
                        kind=f.pop("kind"),
                        status=Status(f.pop("status")),
                        root=f.pop("root"),
                        ts=int(f.pop("ts")),
                        data=f,
                    )
                )
        return events, cursor

    async def events(self, since: str | None = None, *, root: str | None = None) -> AsyncIterator[Event]:
        """State changes as they happen, from after `since` (default: from now) forever.

        Blocks on the stream between events (no polling). The stream is capped, so a consumer
        far behind may miss old events; `since` lets it resume where it stopped.
        """
        async for ev in follow(self.read_events, since or await self.last_event_id(), root):
            yield ev

    async def wait(self, item_id: str, timeout: float = 60.0) -> Item:
        """Wait until the item is done, dead or cancelled; `TimeoutError` after `timeout` s."""
        cursor = await self.last_event_id()
        item = await self.get(item_id)
        with anyio.fail_after(timeout):
            while item.status not in TERMINAL_STATUSES:
                batch, cursor = await self.read_events(cursor, block=1.0)
                if not batch or any(ev.id == item_id for ev in batch):
                    item = await self.get(item_id)
        return item


async def follow(
    read_events: Callable[..., Awaitable[tuple[list[Event], str]]], cursor: str, root: str | None
) -> AsyncIterator[Event]:
    """The events `read_events` gives from after `cursor`, forever (of goal `root` only, if
    given), blocking on the stream between batches instead of polling."""
    while True:
        batch, cursor = await read_events(cursor, block=connection.MAX_BLOCK)
        for ev in batch:
            if root is None or ev.root == root:
                yield ev
