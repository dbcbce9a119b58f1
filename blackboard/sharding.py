"""Sharded boards: which shard holds an item, running an operation on several, and keeping a
board's shard count fixed.

A board of K shards has K keyspaces (`blackboard.keys.shard_keyspaces`), one Redis Cluster slot
each. A goal and everything under it live on the shard its id routes to (`blackboard.ids`), so
every operation on one goal is one single-slot script, as on a board of one shard; what spans
goals (claims, queries, stats, events) visits the shards, concurrently where it can.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import anyio

from blackboard import ids
from blackboard.errors import InvalidInput
from blackboard.keys import Keyspace

T = TypeVar("T")


async def stored_shard_count(client: Any, board: str) -> int:
    """The shard count board `board` was created with (1 for a board not created yet)."""
    stored = await client.hget(Keyspace(board, 0).meta, "shards")
    return int(stored) if stored else 1


class Sharding:
    """The shard plumbing of `Board` (mixed into it)."""

    name: str
    redis: Any
    shards: int
    shard_keys: tuple[Keyspace, ...]

    async def retrying(self, op: Callable[[], Awaitable[T]], *, blocking: bool = False) -> T:
        raise NotImplementedError  # Board.retrying

    def keys_of(self, item_id: str) -> Keyspace:
        """The keys of the shard that holds `item_id` (and its whole goal)."""
        return self.shard_keys[ids.shard_of(item_id, self.shards)]

    def by_shard(self, item_ids: Iterable[str]) -> dict[int, list[int]]:
        """Positions of `item_ids` grouped by the shard that holds each."""
        out: dict[int, list[int]] = {}
        for n, item_id in enumerate(item_ids):
            out.setdefault(ids.shard_of(item_id, self.shards), []).append(n)
        return out

    async def per_shard(
        self, item_ids: Sequence[str], op: Callable[[Keyspace, list[int]], Awaitable[Sequence[T]]]
    ) -> list[T]:
        """`op(keys, positions)` once for each shard holding any of `item_ids`, the shards at
        once: `positions` are where that shard's ids stand in `item_ids`, and `op` returns one
        result for each, in that order. The results come back in the order of `item_ids`."""
        groups = self.by_shard(item_ids)
        out: list[Any] = [None] * len(item_ids)

        async def run(keys: Keyspace) -> None:
            positions = groups[keys.index]
            for n, result in zip(positions, await op(keys, positions), strict=True):
                out[n] = result

        await self.each_shard(run, sorted(groups))
        return out

    async def each_shard(
        self, op: Callable[[Keyspace], Awaitable[T]], shards: Iterable[int] | None = None
    ) -> list[T]:
        """`op` on every shard (or the listed ones) at once; results in the shards' order."""
        targets = [self.shard_keys[i] for i in shards] if shards is not None else list(self.shard_keys)
        if len(targets) == 1:
            return [await op(targets[0])]
        results: list[Any] = [None] * len(targets)

        async def one(n: int) -> None:
            results[n] = await op(targets[n])

        try:
            async with anyio.create_task_group() as tg:
                for n in range(len(targets)):
                    tg.start_soon(one, n)
        except BaseExceptionGroup as group:  # one shard's error, as if the call were on one shard
            raise _first(group) from None
        return results

    async def check_shard_count(self) -> None:
        """Refuse to use the board with a shard count other than its own.

        The count is stored when a board is first used (on the first shard of a sharded board,
        on the board's own meta otherwise). Both sides write theirs before reading the other's,
        so of two processes that start a new board with different counts at once, one refuses.
        Changing the count would move goals between shards; it is not supported (see
        docs/ARCHITECTURE.md, "Shards").
        """
        mine, other = (Keyspace(self.name), Keyspace(self.name, 0))
        if self.shards > 1:
            mine, other = other, mine
        count = str(self.shards)

        async def check() -> tuple[Any, Any, Any, Any]:
            wrote = await self.redis.hsetnx(mine.meta, "shards", count)
            return (
                wrote,
                await self.redis.hget(mine.meta, "shards"),
                await self.redis.hget(other.meta, "shards"),
                await self.redis.exists(other.status) if self.shards > 1 else 0,
            )

        wrote, stored, elsewhere, unsharded_items = await self.retrying(check)
        found = int(elsewhere) if elsewhere else (1 if unsharded_items else int(stored))
        if found != self.shards:
            if wrote:  # refused: take back the count this call stored, or the board keeps it
                await self.retrying(lambda: self.redis.hdel(mine.meta, "shards"))
            raise InvalidInput(
                "shards",
                f"board {self.name!r} was created with {found} shard(s), not {self.shards}; connect "
                f"with shards={found}. A board's shard count can't change while it holds goals: "
                "that would split them (drain it, or copy its goals to a new board)",
            )


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of a (nested) exception group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
