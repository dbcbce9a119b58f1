"""`AuditExporter`: moves a board's audit records from Redis into append-only JSONL files.

One exporter per board at a time: it holds a lock in Redis while it exports, so several daemons
configured to export don't race. Records are checked link by link before they are written (a
broken chain is refused, never laundered into a file), written with their Redis links intact
plus a second chain over the files, flushed and fsynced, and only then trimmed from Redis, in
the same step that records how far the export got (`lua/audit_trim.lua`).

The files' chain is SHA-256 over the previous line's link and the record, or HMAC-SHA256 with
the board's audit key when one is configured: Redis's SHA-1 chain can be rebuilt by anyone who
can write to Redis, this one not without the key. A crash between the fsync and the trim leaves
records on disk and still in Redis; the next export finds them at the end of the last file and
finishes the trim instead of writing them twice.

Files are `audit-<board>-<first seq, 12 digits>.jsonl`, a new one every `segment_records`.
A sharded board has one chain per shard (see `blackboard.audit`), so each shard is exported on
its own: its own lock, its own export state (in that shard's meta) and its own series of
files, `audit-<board>~<shard>-<first seq>.jsonl` (`~` is never in a board name, so no other
board's files match).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from blackboard import audit
from blackboard.audit import AuditRecord, Break, Chain
from blackboard.board import Board
from blackboard.errors import BlackboardError
from blackboard.keys import Keyspace

SEGMENT_RECORDS = 10_000
LOCK_SECONDS = 60.0  # an exporter that dies lets another take over after this long


class AuditChainBroken(BlackboardError):
    """The records in Redis do not verify; exporting them would hide the break. `exported`:
    how many records the same call exported anyway (from the shards that do verify)."""

    def __init__(self, message: str, exported: int = 0) -> None:
        super().__init__(message)
        self.exported = exported


def file_link(file_prev: str, record: AuditRecord, key: bytes | None) -> str:
    """A record's link in the files' chain."""
    data = file_prev.encode() + record.body() + record.prev.encode() + record.hash.encode()
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


# audit-<board>[~<shard>]-<first seq>.jsonl; the seq is the last run of digits after a '-'
SEGMENT_RE = re.compile(
    r"^audit-(?P<board>[A-Za-z0-9_.-]{1,64}?)(?:~(?P<shard>\d+))?-(?P<seq>\d{12,})\.jsonl$"
)


@dataclass(frozen=True)
class Segment:
    """What an audit file's name says: whose records it holds and the first one's seq."""

    board: str
    shard: int | None  # None: an unsharded board's
    first_seq: int


def parse_segment(path: Path) -> Segment | None:
    """The board, shard and first seq that `path`'s name gives (None: not an audit file name)."""
    m = SEGMENT_RE.match(path.name)
    if m is None:
        return None
    shard = int(m["shard"]) if m["shard"] is not None else None
    return Segment(m["board"], shard, int(m["seq"]))


def segment_name(board: str, shard: int | None, first_seq: int) -> str:
    """The file name of a segment starting at `first_seq` (`shard` None: an unsharded board)."""
    where = board if shard is None else f"{board}~{shard}"
    return f"audit-{where}-{first_seq:012d}.jsonl"


def segments(directory: Path, board: str, shard: int | None = None) -> list[Path]:
    """The audit files in `directory` of `board` (of its shard `shard` when sharded), oldest
    first. Names are matched exactly, so board `x` does not pick up board `x-1`'s files."""
    found = []
    for path in directory.glob(f"audit-{board}*.jsonl"):
        seg = parse_segment(path)
        if seg is not None and seg.board == board and seg.shard == shard:
            found.append((seg.first_seq, path))
    return [path for _, path in sorted(found)]


def shard_segments(directory: Path, board: str, shards: int) -> list[list[Path]]:
    """Every shard's series of audit files, in shard order (one series on an unsharded board)."""
    if shards == 1:
        return [segments(directory, board)]
    return [segments(directory, board, s) for s in range(shards)]


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record dict) of an audit file; a line that is not JSON is an error naming it."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except ValueError as e:
                    raise BlackboardError(f"{path}:{n}: not a JSON audit record ({e})") from None


@dataclass
class FileChain:
    """Where a verified run of files has got to: the Redis chain and the files' chain."""

    chain: Chain
    file_hash: str = ""
    started_at: int = 0  # seq of the first record checked (a run of files may start mid-chain)


def verify_files(
    paths: list[Path], key: bytes | None, *, shard: int | None = None
) -> tuple[Break | None, FileChain]:
    """The first break in the audit files `paths` (in order, one shard's), checking both
    chains. A break names `shard`, the shard the files are of (None: an unsharded board)."""
    bad, state = _verify_files(paths, key)
    return (replace(bad, shard=shard) if bad is not None else None), state


def _verify_files(paths: list[Path], key: bytes | None) -> tuple[Break | None, FileChain]:
    state = FileChain(Chain())
    for path in paths:
        for n, line in read_lines(path):
            where = f"{path}:{n}"
            try:
                record = AuditRecord(**{k: v for k, v in line.items() if k not in ("file_prev", "file_hash")})
            except ValueError as e:
                return Break(int(line.get("seq") or 0), where, f"not an audit record: {e}"), state
            if not state.started_at:  # the first record: trust where the run starts
                state.started_at = record.seq
                state.chain = Chain(record.seq - 1, record.prev)
                state.file_hash = str(line.get("file_prev", ""))
            if bad := audit.check(record, state.chain, where):
                return bad, state
            if line.get("file_prev") != state.file_hash:
                why = "its file_prev is not the file_hash of the line before it"
                return Break(record.seq, where, why), state
            if file_link(state.file_hash, record, key) != line.get("file_hash"):
                why = "its file_hash does not match (edited, or verified with the wrong key)"
                return Break(record.seq, where, why), state
            state.file_hash = str(line["file_hash"])
    return None, state


class AuditExporter:
    """Exports one board's audit records into `directory`: every shard's, each on its own."""

    def __init__(
        self,
        board: Board,
        directory: Path,
        key: bytes | None = None,
        *,
        segment_records: int = SEGMENT_RECORDS,
    ) -> None:
        self.board = board
        self.directory = directory
        self.key = key
        self.segment_records = segment_records

    async def export(self) -> int:
        """Move every record now in Redis to disk, every shard's. Returns how many were exported
        by this call (a shard whose lock another exporter holds adds 0). A shard whose chain is
        broken does not stop the others: they are exported, then `AuditChainBroken` is raised
        naming every broken shard (its `exported` says how many the others moved)."""
        done = await self.board.each_shard(self._export_guarded)
        broken = [str(r) for r in done if isinstance(r, AuditChainBroken)]
        total = sum(r for r in done if isinstance(r, int))
        if broken:
            raise AuditChainBroken("; ".join(broken), exported=total)
        return total

    async def _export_guarded(self, keys: Keyspace) -> int | AuditChainBroken:
        try:
            return await self.export_shard(keys)
        except AuditChainBroken as e:
            return e

    async def export_shard(self, keys: Keyspace) -> int:
        """Move shard `keys`'s records to its files, under that shard's lock. Returns how many
        (0 when another exporter holds the lock). Raises `AuditChainBroken`."""
        lock = self.board.redis.lock(f"{keys.tag}:audit:lock", timeout=LOCK_SECONDS, blocking=False)
        if not await self.board.retrying(lock.acquire):
            return 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            total = 0
            while n := await self._export_page(keys):
                total += n
            return total
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled export still lets the lock go
                await self.board.retrying(lock.release)

    def _shard(self, keys: Keyspace | None) -> int | None:
        """The shard number in file names and breaks: None on an unsharded board."""
        return (keys or self.board.keys).shard

    async def _state(self, keys: Keyspace) -> tuple[Chain, str]:
        chain = await audit.exported(self.board, keys=keys)
        file_hash = await self.board.retrying(
            lambda: self.board.redis.hget(keys.meta, "audit_exported_file_hash")
        )
        return chain, (file_hash.decode() if isinstance(file_hash, bytes) else file_hash or "")

    async def _export_page(self, keys: Keyspace) -> int:
        chain, file_hash = await self._state(keys)
        if await self._finish_interrupted(chain, keys):
            return await self._export_page(keys)
        page = [r async for r in audit.records(self.board, limit=audit.PAGE, keys=keys)]
        fresh = [r for r in page if r.seq > chain.seq]
        if not fresh:
            return 0
        verified = Chain(chain.seq, chain.hash)
        for record in fresh:
            if bad := audit.check(record, verified, "redis"):
                bad = replace(bad, shard=keys.shard)
                raise AuditChainBroken(f"not exporting a broken audit chain: {bad}")
        file_hash = self._write(fresh, file_hash, keys)
        last = fresh[-1]
        await self._trim(chain.seq, last, file_hash, keys)
        return len(fresh)

    def _write(self, records: list[AuditRecord], file_hash: str, keys: Keyspace | None = None) -> str:
        """Append `records` (of shard `keys`, default the first) to that shard's newest segment
        (or new ones), fsynced; returns the last link."""
        shard = self._shard(keys)
        path, lines = self._segment_for(records[0].seq, shard)
        new_file = not path.exists()
        out: list[str] = []
        for record in records:
            if lines >= self.segment_records:  # this segment is full: write it, start the next
                self._append(path, out, new_file)
                path, lines, out, new_file = self._new_segment(record.seq, shard), 0, [], True
            link = file_link(file_hash, record, self.key)
            line = {**record.chained(), "stream_id": record.stream_id, "file_prev": file_hash}
            line["file_hash"] = link
            out.append(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
            file_hash, lines = link, lines + 1
        self._append(path, out, new_file)
        return file_hash

    def _segment_for(self, first_seq: int, shard: int | None) -> tuple[Path, int]:
        existing = segments(self.directory, self.board.name, shard)
        if existing:
            last = existing[-1]
            return last, sum(1 for _ in read_lines(last))
        return self._new_segment(first_seq, shard), 0

    def _new_segment(self, first_seq: int, shard: int | None) -> Path:
        return self.directory / segment_name(self.board.name, shard, first_seq)

    def _append(self, path: Path, lines: list[str], new_file: bool) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        if new_file:  # the file's name must survive a crash too
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def _trim(self, start: int, last: AuditRecord, file_hash: str, keys: Keyspace) -> None:
        assert last.stream_id is not None
        ms, _, seq = last.stream_id.partition("-")
        args = {"from": start, "seq": last.seq, "hash": last.hash, "file_hash": file_hash}
        args["minid"] = f"{ms}-{int(seq) + 1}"  # XTRIM MINID keeps ids from this one on
        out = await self.board._run(self.board._scripts.audit_trim, (), args, keys=keys)
        if "err" in out:
            where = "" if keys.shard is None else f"shard {keys.shard}: "
            raise AuditChainBroken(f"{where}another exporter moved the audit export to record {out['seq']}")

    async def _finish_interrupted(self, chain: Chain, keys: Keyspace) -> bool:
        """Records on disk past the exported point (a crash after the fsync, before the trim):
        finish that trim. Returns whether there was one."""
        existing = segments(self.directory, self.board.name, keys.shard)
        if not existing:
            return False
        last_line: dict[str, Any] | None = None
        for _, line in read_lines(existing[-1]):
            last_line = line
        if last_line is None or int(last_line["seq"]) <= chain.seq:
            return False
        on_disk = AuditRecord(**{k: v for k, v in last_line.items() if k not in ("file_prev", "file_hash")})
        in_redis = [
            r async for r in audit.records(self.board, limit=audit.PAGE, keys=keys) if r.seq == on_disk.seq
        ]
        if not in_redis or in_redis[0].hash != on_disk.hash:
            raise AuditChainBroken(
                f"{existing[-1]} ends at record {on_disk.seq}, which Redis does not hold as written"
            )
        await self._trim(chain.seq, on_disk, str(last_line["file_hash"]), keys)
        return True
