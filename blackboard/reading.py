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
from blackboard.sharding import Sharding

T = TypeVar("T")
MAX_PAGE = 10_000


def _status(value: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise InvalidInput(
            "status", f"{value!r} is not a status; expected one of {', '.join(Status)}"
        ) from None


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _text(v: str | bytes) -> str:
    return v if isinstance(v, str) else v.decode()


class BoardReader(Sharding):
    """The read side of `Board` (kept apart so each file stays readable)."""

    keys: Keyspace

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

        async def read_shard(k: Keyspace, positions: list[int]) -> list[Item | None]:
            mine = [ids[n] for n in positions]

            async def read() -> list[Any]:
                async with self.redis.pipeline(transaction=True) as pipe:
                    for key in (k.kind, k.items, k.state, k.results, k.usage):
                        pipe.hmget(key, mine)
                    return list(await pipe.execute())

            kind, docs, states, results, usage = await self.retrying(read)
            return [
                decode_item(i, kind[j], docs[j], states[j], results[j], usage[j])
                if kind[j] is not None
                else None
                for j, i in enumerate(mine)
            ]

        return await self.per_shard(ids, read_shard)

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
            shard = self.keys_of(parent or root or "")
            key = shard.children if parent is not None else shard.lineage
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
        members, nxt = await self._scan_shards(prefixes, cursor, limit)
        items = await self.get_many([m.rsplit("|", 1)[1] for m in members])
        return Page(items=tuple(it for it in items if it), cursor=nxt)

    async def _scan_shards(
        self, prefixes: list[str], cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """`_scan` of the status index over every shard, merged: members are unique across
        shards and sort the same way everywhere, so the last one taken is a cursor for all."""
        if self.shards == 1:
            return await self._scan(self.keys.status, prefixes, cursor, limit)
        pages = await self.each_shard(lambda k: self._scan(k.status, prefixes, cursor, limit))
        merged = sorted(m for members, _ in pages for m in members)
        more = len(merged) > limit or any(nxt is not None for _, nxt in pages)
        taken = merged[:limit]
        return taken, (taken[-1] if more and taken else None)

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
        lineage = self.keys_of(top.root).lineage
        while True:
            members, cursor = await self._scan(lineage, [f"{top.root}|"], cursor, MAX_PAGE)
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
        raw = await self.retrying(lambda: self.redis.hget(self.keys_of(root).totals, root))
        return UsageTotals.model_validate_json(raw) if raw else UsageTotals()

    async def guards(self) -> dict[str, str]:
        """Guarded kinds and the review kind a critic takes their items under."""
        raw = await self.retrying(lambda: self.redis.hgetall(self.keys.guards))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def stats(self) -> Stats:
        """Counts by kind and status, and the sizes of each kind's claim indexes (all shards)."""
        by_kind: dict[str, dict[Status, int]] = {}
        sizes: dict[str, list[int]] = {}
        for counts, z in await self.each_shard(self._shard_stats):
            for kind, by_status in counts.items():
                mine = by_kind.setdefault(kind, {})
                for status, n in by_status.items():
                    mine[status] = mine.get(status, 0) + n
            for kind, (ready, delayed, leased) in z.items():
                total = sizes.setdefault(kind, [0, 0, 0])
                total[0] += ready
                total[1] += delayed
                total[2] += leased
        out = {
            k: KindStats(
                kind=k, by_status=by_kind[k], ready=sizes[k][0], delayed=sizes[k][1], leased=sizes[k][2]
            )
            for k in sorted(by_kind)
        }
        dead = sum(s.by_status.get(Status.DEAD, 0) for s in out.values())
        return Stats(board=self.name, kinds=out, dead_letters=dead)

    async def _shard_stats(self, keys: Keyspace) -> tuple[dict[str, dict[Status, int]], dict[str, list[int]]]:
        counts = await self.retrying(lambda: self.redis.hgetall(keys.counts))
        by_kind: dict[str, dict[Status, int]] = {}
        for field, n in counts.items():
            kind, _, status = field.decode().rpartition("|")
            if int(n):
                by_kind.setdefault(kind, {})[Status(status)] = int(n)
        names = sorted(by_kind)

        async def sizes() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in names:
                    ready, delayed, leased, _ = keys.kind_keys(k)
                    pipe.zcard(ready)
                    pipe.zcard(delayed)
                    pipe.zcard(leased)
                return list(await pipe.execute())

        z = await self.retrying(sizes) if names else []
        return by_kind, {k: z[3 * i : 3 * i + 3] for i, k in enumerate(names)}

    async def last_event_id(self) -> str:
        """The newest event's cursor ('0-0' when there is none): read events after it.

        On a board of several shards a cursor holds one stream position per shard, joined by
        ','; a plain stream id (such as '0-0') means that position on every shard.
        """
        tops = await self.each_shard(self._last_event_id)
        return ",".join(tops)

    async def _last_event_id(self, keys: Keyspace) -> str:
        got = await self.retrying(lambda: self.redis.xrevrange(keys.events, count=1))
        return str(got[0][0].decode()) if got else "0-0"

    def _positions(self, cursor: str) -> list[str]:
        parts = cursor.split(",")
        if len(parts) == 1:
            return parts * self.shards
        if len(parts) != self.shards:
            raise InvalidInput(
                "cursor", f"expected one stream position or {self.shards} joined by ',', got {cursor!r}"
            )
        return parts

    async def read_events(self, cursor: str, block: float = 0, count: int = 1000) -> tuple[list[Event], str]:
        """Events after `cursor`, waiting up to `block` seconds for the first. Returns the new cursor.

        Over several shards: what every shard has after its position, in stream-id (time) order;
        when none has any, the first shard to get one ends the wait.
        """
        positions = self._positions(cursor)
        if self.shards == 1:
            batch = await self._read_shard(self.keys, positions[0], block, count)
        else:
            found = await self.each_shard(lambda k: self._read_shard(k, positions[k.index], 0, count))
            batch = [(k, ev) for k, evs in enumerate(found) for _, ev in evs]
            if not batch and block > 0:
                batch = await self._first_events(positions, block, count)
            batch.sort(key=lambda pair: _stream_order(pair[1].cursor))
        events = []
        for shard, ev in batch:
            positions[shard] = ev.cursor
            events.append(ev.model_copy(update={"cursor": ",".join(positions)}) if self.shards > 1 else ev)
        return events, ",".join(positions)

    async def _first_events(self, positions: list[str], block: float, count: int) -> list[tuple[int, Event]]:
        """Block on every shard's stream at once until one has events (or `block` passes)."""
        out: list[tuple[int, Event]] = []
        async with anyio.create_task_group() as tg:

            async def one(keys: Keyspace) -> None:
                got = await self._read_shard(keys, positions[keys.index], block, count)
                if got:
                    out.extend(got)
                    tg.cancel_scope.cancel()  # the others' reads end here (their events stay)

            for keys in self.shard_keys:
                tg.start_soon(one, keys)
        return out

    async def _read_shard(
        self, keys: Keyspace, cursor: str, block: float, count: int
    ) -> list[tuple[int, Event]]:
        ms = int(min(block, connection.MAX_BLOCK) * 1000)
        got = await self.retrying(
            lambda: self.redis.xread({keys.events: cursor}, count=count, block=ms or None),
            blocking=ms > 0,
        )
        events = []
        for _, entries in got or []:
            for eid, fields in entries:
                f = {k.decode(): v.decode() for k, v in fields.items()}
                events.append(
                    (
                        keys.index,
                        Event(
                            cursor=eid.decode(),
                            type=f.pop("type"),
                            id=f.pop("id"),
                            kind=f.pop("kind"),
                            status=Status(f.pop("status")),
                            root=f.pop("root"),
                            ts=int(f.pop("ts")),
                            data=f,
                        ),
                    )
                )
        return events

    async def events(self, since: str | None = None, *, root: str | None = None) -> AsyncIterator[Event]:
        """State changes as they happen, from after `since` (default: from now) forever.

        Blocks on the stream between events (no polling). The stream is capped, so a consumer
        far behind may miss old events; `since` lets it resume where it stopped.
        """
        async for ev in follow(self.read_events, since or await self.last_event_id(), root):
            yield ev

    async def wait(self, item_id: str, timeout: float = 60.0) -> Item:
        """Wait until the item is done, dead or cancelled; `TimeoutError` after `timeout` s."""
        keys = self.keys_of(item_id)
        cursor = await self._last_event_id(keys)
        item = await self.get(item_id)
        with anyio.fail_after(timeout):
            while item.status not in TERMINAL_STATUSES:
                batch = await self._read_shard(keys, cursor, 1.0, 1000)
                if batch:
                    cursor = batch[-1][1].cursor
                if not batch or any(ev.id == item_id for _, ev in batch):
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
