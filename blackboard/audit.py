"""The audit log: one hash-chained record per state change, written by that change's own script.

Every Lua script that changes an item appends its record to the board's audit stream in the same
atomic step (`audit` in `lua/lib.lua`): who (actor, daemon), what (op), when (board ms), which
item (id, kind, goal), under which policy version, and the SHA-1 of the data written (a post's
document, a result, an error): a digest, not the data, which stays on the item; and a short
`detail` (why: a cancellation's reason).

Records are chained: `hash = sha1(prev + body)`, where `body` is the fields of `FIELDS`, each
written as `<byte length>:<value>`. A deleted, edited, inserted or reordered record breaks the
chain at that record, and the chain's head (seq and hash, in the board's meta hash) shows a
truncated tail. SHA-1 because Redis Lua offers nothing else; it is computed inside Redis so
that the record and its link are made in the same step as the change. Anyone who can write
to Redis can rebuild an unkeyed chain, so the exporter (`blackboard.audit_export`) adds a
SHA-256 chain over the exported files, keyed with HMAC when a key is configured: that one a
writer to Redis or to the files cannot forge without the key.

A sharded board has one chain per shard: each script audits on the shard it runs on (its
stream and its `meta` head), so the K chains are independent, each from seq 1, and there is no
order between shards but time. Every reader here takes `keys=` (default: the first shard, which
is the whole board when unsharded); `heads`, `verify_shards` and `tail` cover every shard, and
a `Break` on a sharded board names its shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict

from blackboard.board import Board
from blackboard.keys import Keyspace

FIELDS = ("seq", "at", "op", "id", "kind", "root", "actor", "daemon", "policy", "digest", "detail")
PAGE = 1000  # records per XRANGE


class AuditRecord(BaseModel):
    """One audit record, as the script wrote it (`stream_id` is Redis's, not chained; `shard`
    is the shard whose stream it was read from, None on an unsharded board, not chained)."""

    model_config = ConfigDict(frozen=True)

    seq: int
    at: int
    op: str
    id: str = ""
    kind: str = ""
    root: str = ""
    actor: str = ""
    daemon: str = ""
    policy: str = ""
    digest: str = ""
    detail: str = ""
    prev: str = ""
    hash: str
    stream_id: str | None = None
    shard: int | None = None

    @classmethod
    def from_stream(
        cls, stream_id: bytes | str, fields: dict[Any, Any], shard: int | None = None
    ) -> AuditRecord:
        data: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items()}
        return cls.model_validate({**data, "stream_id": _text(stream_id), "shard": shard})

    def body(self) -> bytes:
        """The chained content: every field of `FIELDS` as `<byte length>:<value>`."""
        parts = []
        for name in FIELDS:
            value = str(getattr(self, name)).encode()
            parts.append(b"%d:%s" % (len(value), value))
        return b"".join(parts)

    def expected_hash(self) -> str:
        return hashlib.sha1(self.prev.encode() + self.body()).hexdigest()

    def chained(self) -> dict[str, Any]:
        """The record without its stream id and shard: what the chain and the exported files
        hold (a file's name says its shard)."""
        return self.model_dump(exclude={"stream_id", "shard"})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Break:
    """The first record at which a chain fails to verify, and why."""

    seq: int
    where: str  # "redis" or "FILE:LINE"
    reason: str
    shard: int | None = None  # the shard whose chain it is (None: an unsharded board)

    def __str__(self) -> str:
        text = f"{self.where}: record {self.seq}: {self.reason}"
        return text if self.shard is None else f"shard {self.shard}: {text}"


@dataclass
class Chain:
    """Where a verified chain has got to: the last record's seq and hash."""

    seq: int = 0
    hash: str = ""


def check(record: AuditRecord, chain: Chain, where: str) -> Break | None:
    """Check that `record` is the next link after `chain`, and advance `chain` if it is."""
    if record.seq != chain.seq + 1:
        why = (
            f"found record {record.seq} where record {chain.seq + 1} belongs (deleted, inserted or reordered)"
        )
        return Break(chain.seq + 1, where, why)
    if record.prev != chain.hash:
        why = "its prev is not the hash of the record before it (that one or this one was changed)"
        return Break(record.seq, where, why)
    if record.expected_hash() != record.hash:
        return Break(record.seq, where, "its content does not match its hash (edited)")
    chain.seq, chain.hash = record.seq, record.hash
    return None


def verify(records: Iterable[AuditRecord], chain: Chain | None = None, where: str = "redis") -> Break | None:
    """The first break in `records` (continuing `chain`, default the chain's start), or None."""
    chain = chain if chain is not None else Chain()
    for record in records:
        if bad := check(record, chain, where):
            return bad
    return None


# -- reading from Redis ---------------------------------------------------------------------


async def head(board: Board, *, keys: Keyspace | None = None) -> Chain:
    """The chain's head as the scripts left it: the last record's seq and hash (of shard
    `keys`, default the first)."""
    meta = (keys or board.keys).meta
    seq, hash_ = await board.retrying(lambda: board.redis.hmget(meta, "audit_seq", "audit_head"))
    return Chain(int(seq or 0), _text(hash_ or b""))


async def heads(board: Board) -> list[Chain]:
    """Every shard's head, in shard order (their seqs add up to the board's record count)."""
    return await board.each_shard(lambda keys: head(board, keys=keys))


async def exported(board: Board, *, keys: Keyspace | None = None) -> Chain:
    """The last record the exporter moved to disk (and trimmed from Redis), of shard `keys`."""
    meta = (keys or board.keys).meta
    seq, hash_ = await board.retrying(
        lambda: board.redis.hmget(meta, "audit_exported_seq", "audit_exported_hash")
    )
    return Chain(int(seq or 0), _text(hash_ or b""))


async def export_lag(board: Board) -> int:
    """Records written but not yet exported, over every shard."""

    async def lag(keys: Keyspace) -> int:
        return (await head(board, keys=keys)).seq - (await exported(board, keys=keys)).seq

    return sum(await board.each_shard(lag))


async def records(
    board: Board, after: str = "-", limit: int | None = None, *, keys: Keyspace | None = None
) -> AsyncIterator[AuditRecord]:
    """Records still in Redis on shard `keys` (default the first), oldest first, after stream
    id `after` (exclusive)."""
    ks = keys or board.keys
    start, left = after if after == "-" else f"({after}", limit
    while left is None or left > 0:
        count = PAGE if left is None else min(PAGE, left)
        page = await board.retrying(
            lambda: board.redis.xrange(ks.audit, min=start, max="+", count=count)  # noqa: B023
        )
        for stream_id, fields in page:
            yield AuditRecord.from_stream(stream_id, fields, ks.shard)
        if len(page) < count:
            return
        start = f"({_text(page[-1][0])}"
        if left is not None:
            left -= len(page)


async def tail(board: Board, n: int = 20, *, keys: Keyspace | None = None) -> list[AuditRecord]:
    """The last `n` records in Redis, oldest first: of shard `keys`, or (no `keys`) of the
    whole board, every shard's merged by time (`when`)."""
    if keys is not None or board.shards == 1:
        ks = keys or board.keys
        page = await board.retrying(lambda: board.redis.xrevrange(ks.audit, count=n))
        return [AuditRecord.from_stream(i, f, ks.shard) for i, f in reversed(page)]
    found = await board.each_shard(lambda ks: tail(board, n, keys=ks))
    return sorted((r for rs in found for r in rs), key=when)[-n:] if n > 0 else []


def when(record: AuditRecord) -> tuple[int, int, int, int]:
    """The order of records of different shards, whose chains don't order them: board time
    (`at`), then Redis's own time (the stream id's milliseconds: `at` may be a test's frozen
    clock), then shard, then seq (which orders one shard's records)."""
    ms = int((record.stream_id or "0").partition("-")[0] or 0)
    return record.at, ms, record.shard or 0, record.seq


async def verify_board(
    board: Board, chain: Chain | None = None, *, keys: Keyspace | None = None
) -> tuple[Break | None, Chain]:
    """Verify the records in Redis of shard `keys` (default the first), continuing `chain`
    (default: from the shard's last exported record), then that they reach the head the
    scripts recorded. Returns the first break (naming the shard on a sharded board) and where
    the verified chain ends."""
    ks = keys or board.keys
    chain = chain if chain is not None else await exported(board, keys=ks)
    async for record in records(board, keys=ks):
        if bad := check(record, chain, "redis"):
            return replace(bad, shard=ks.shard), chain
    top = await head(board, keys=ks)
    if (top.seq, top.hash) != (chain.seq, chain.hash):
        why = f"the chain's head is record {top.seq}, but the log ends at record {chain.seq} (deleted)"
        return Break(chain.seq + 1, "redis", why, ks.shard), chain
    return None, chain


async def verify_shards(board: Board) -> list[tuple[int, Break | None, Chain]]:
    """`verify_board` on every shard (from its last exported record): (shard, first break or
    None, where its verified chain ends), in shard order. One entry on an unsharded board."""

    async def one(keys: Keyspace) -> tuple[int, Break | None, Chain]:
        bad, end = await verify_board(board, keys=keys)
        return keys.index, bad, end

    return await board.each_shard(one)
