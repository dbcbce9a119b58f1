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
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from blackboard.board import Board

FIELDS = ("seq", "at", "op", "id", "kind", "root", "actor", "daemon", "policy", "digest", "detail")
PAGE = 1000  # records per XRANGE


class AuditRecord(BaseModel):
    """One audit record, as the script wrote it (`stream_id` is Redis's, not chained)."""

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

    @classmethod
    def from_stream(cls, stream_id: bytes | str, fields: dict[Any, Any]) -> AuditRecord:
        data: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items()}
        return cls.model_validate({**data, "stream_id": _text(stream_id)})

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
        """The record without its stream id: what the chain and the exported files hold."""
        return self.model_dump(exclude={"stream_id"})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Break:
    """The first record at which a chain fails to verify, and why."""

    seq: int
    where: str  # "redis" or "FILE:LINE"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: record {self.seq}: {self.reason}"


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


async def head(board: Board) -> Chain:
    """The chain's head as the scripts left it: the last record's seq and hash."""
    seq, hash_ = await board.retrying(lambda: board.redis.hmget(board.keys.meta, "audit_seq", "audit_head"))
    return Chain(int(seq or 0), _text(hash_ or b""))


async def exported(board: Board) -> Chain:
    """The last record the exporter moved to disk (and trimmed from Redis)."""
    seq, hash_ = await board.retrying(
        lambda: board.redis.hmget(board.keys.meta, "audit_exported_seq", "audit_exported_hash")
    )
    return Chain(int(seq or 0), _text(hash_ or b""))


async def records(board: Board, after: str = "-", limit: int | None = None) -> AsyncIterator[AuditRecord]:
    """Records still in Redis, oldest first, after stream id `after` (exclusive)."""
    start, left = after if after == "-" else f"({after}", limit
    while left is None or left > 0:
        count = PAGE if left is None else min(PAGE, left)
        page = await board.retrying(
            lambda: board.redis.xrange(board.keys.audit, min=start, max="+", count=count)  # noqa: B023
        )
        for stream_id, fields in page:
            yield AuditRecord.from_stream(stream_id, fields)
        if len(page) < count:
            return
        start = f"({_text(page[-1][0])}"
        if left is not None:
            left -= len(page)


async def tail(board: Board, n: int = 20) -> list[AuditRecord]:
    """The last `n` records in Redis, oldest first."""
    page = await board.retrying(lambda: board.redis.xrevrange(board.keys.audit, count=n))
    return [AuditRecord.from_stream(i, f) for i, f in reversed(page)]


async def verify_board(board: Board, chain: Chain | None = None) -> tuple[Break | None, Chain]:
    """Verify the records in Redis, continuing `chain` (default: from the last exported record),
    then that they reach the head the scripts recorded. Returns the first break and where the
    verified chain ends."""
    chain = chain if chain is not None else await exported(board)
    async for record in records(board):
        if bad := check(record, chain, "redis"):
            return bad, chain
    top = await head(board)
    if (top.seq, top.hash) != (chain.seq, chain.hash):
        why = f"the chain's head is record {top.seq}, but the log ends at record {chain.seq} (deleted)"
        return Break(chain.seq + 1, "redis", why), chain
    return None, chain
