"""The audit log: a hash-chained record per state change, written in the change's own script;
verified in Redis and in exported files; exported by one exporter at a time, crash-safe. On a
sharded board, one chain, one export state and one file series per shard, and a break names its
shard."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from blackboard import Board, NewItem, audit, ids
from blackboard.audit_export import (
    AuditChainBroken,
    AuditExporter,
    parse_segment,
    segments,
    shard_segments,
    verify_files,
)
from blackboard.cli import app
from blackboard.errors import LeaseLost
from blackboard.keys import Keyspace
from tests.conftest import FakeClock, unique_board

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

Entries = list[tuple[str, dict[str, str]]]


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


async def all_records(board: Board, keys: Keyspace | None = None) -> list[audit.AuditRecord]:
    return [r async for r in audit.records(board, keys=keys)]


async def rewrite(board: Board, change: Callable[[Entries], Entries], keys: Keyspace | None = None) -> None:
    """Tamper with the audit stream (of shard `keys`) as someone with write access to Redis could."""
    stream = (keys or board.keys).audit
    raw = await board.redis.xrange(stream)
    entries: Entries = [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in raw]
    await board.redis.delete(stream)
    for stream_id, fields in change(entries):
        await board.redis.xadd(stream, fields, id=stream_id)


async def some_history(board: Board) -> Keyspace:
    """A goal, claimed and completed with a child, the child failed once: six records, all on
    the goal's shard (whose keys it returns)."""
    goal = await board.post("a.goal", {"q": 1}, actor="cli:alice")
    [claim] = await board.claim("planner", ["a.goal"])
    await board.complete(claim, {"plan": 1}, outputs=[NewItem(kind="a.task", payload={"n": 1})])
    [task] = await board.claim("worker", ["a.task"])
    await board.fail(task, "boom")
    return board.keys_of(goal.id)


def on_shard(board: Board, keys: Keyspace) -> str:
    """A new goal id that lands on shard `keys` (any id, on an unsharded board)."""
    return ids.id_on_shard(keys.index, board.shards)


async def test_every_state_change_leaves_one_chained_record(board: Board, clock: FakeClock) -> None:
    board.daemon_id = "daemon-1"
    goal = await board.post("a.goal", {"q": 1}, actor="cli:alice")
    [claim] = await board.claim("planner", ["a.goal"])
    [child] = await board.complete(claim, {"plan": 1}, outputs=[NewItem(kind="a.task", payload={"n": 1})])
    join = await board.post("a.join", {}, after=[child.id], actor="cli:alice")
    await board.mark(goal.id, 2.0, actor="cli:bob")
    [task] = await board.claim("worker", ["a.task"], lease=1)
    await board.fail(task, "boom", retry=0)
    [task] = await board.claim("worker", ["a.task"], lease=1)
    await board.release([task])
    [task] = await board.claim("worker", ["a.task"], lease=1)
    clock.advance(5)
    await board.reap()  # the lease expired: back to open
    [task] = await board.claim("worker", ["a.task"])
    await board.fail(task, "for good", retry=False)  # dead, and its dependant is cancelled
    await board.requeue([task.id], actor="cli:bob")
    await board.cancel(goal.id, actor="cli:bob")

    keys = board.keys_of(goal.id)  # the join waits for the child, so it is on the goal's shard
    records = await all_records(board, keys)
    ops = [(r.op, r.id) for r in records]
    assert ops == [
        ("posted", goal.id),
        ("claimed", goal.id),
        ("done", goal.id),
        ("posted", child.id),
        ("posted", join.id),
        ("marked", goal.id),
        ("claimed", child.id),
        ("failed", child.id),
        ("claimed", child.id),
        ("released", child.id),
        ("claimed", child.id),
        ("expired", child.id),
        ("claimed", child.id),
        ("dead", child.id),
        ("cancelled", join.id),
        ("requeued", child.id),
        ("cancelled", child.id),
    ]
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    by_op = {r.op: r for r in records}
    assert records[0].actor == "cli:alice" and records[1].actor == "planner"
    assert by_op["marked"].actor == "cli:bob" and by_op["expired"].actor == ""
    assert all(r.daemon == "daemon-1" for r in records)
    assert all(r.root == (join.id if r.id == join.id else goal.id) for r in records)  # the join is a goal
    assert records[0].kind == "a.goal" and records[3].kind == "a.task"
    # digests of what each change wrote (the data itself stays on the item)
    assert by_op["done"].digest == sha1(json.dumps({"plan": 1}, separators=(",", ":")))
    assert by_op["failed"].digest == sha1("boom") and by_op["dead"].digest == sha1("for good")
    assert records[0].digest and by_op["claimed"].digest == ""
    assert by_op["cancelled"].detail and records[0].detail == ""  # why it was cancelled
    bad, end = await audit.verify_board(board, keys=keys)
    assert bad is None and end.seq == len(records)
    assert await audit.head(board, keys=keys) == end
    assert sum(h.seq for h in await audit.heads(board)) == len(records)  # the other shards: none


async def test_a_refused_write_leaves_no_record(board: Board) -> None:
    await board.post("a.goal", {})
    [claim] = await board.claim("w", ["a.goal"])
    keys = board.keys_of(claim.id)
    before = await audit.head(board, keys=keys)
    stale = claim.model_copy(update={"token": claim.token + "0"})
    with pytest.raises(LeaseLost):
        await board.complete(stale, "late")
    assert await audit.head(board, keys=keys) == before
    assert len(await all_records(board, keys)) == before.seq


@pytest.mark.parametrize(
    ("tamper", "first_bad", "why"),
    [
        ("delete", 3, "found record 4 where record 3 belongs"),
        ("edit", 3, "does not match its hash"),
        ("edit_and_rehash", 4, "prev is not the hash"),
        ("swap", 3, "found record 4 where record 3 belongs"),
        ("truncate", 6, "the chain's head is record 6"),
    ],
)
async def test_tampering_in_redis_is_named_at_the_first_bad_record(
    board: Board, tamper: str, first_bad: int, why: str
) -> None:
    keys = await some_history(board)
    assert (await audit.verify_board(board, keys=keys))[0] is None

    def change(entries: Entries) -> Entries:
        if tamper == "delete":
            return entries[:2] + entries[3:]
        if tamper in ("edit", "edit_and_rehash"):
            entries[2][1]["actor"] = "someone-else"
            if tamper == "edit_and_rehash":  # a careful forger fixes that record's hash too
                entries[2][1]["hash"] = audit.AuditRecord(**entries[2][1]).expected_hash()
            return entries
        if tamper == "swap":  # records 3 and 4 exchange places (ids stay in order)
            (i3, f3), (i4, f4) = entries[2], entries[3]
            entries[2], entries[3] = (i3, f4), (i4, f3)
            return entries
        return entries[:-1]  # truncate: the newest record is gone

    await rewrite(board, change, keys)
    bad, _ = await audit.verify_board(board, keys=keys)
    assert bad is not None and bad.seq == first_bad and why in bad.reason and bad.where == "redis"
    assert bad.shard == keys.shard  # None on an unsharded board: its message is as it was


async def test_export_moves_records_to_fsynced_files_then_trims_redis(board: Board, tmp_path: Path) -> None:
    keys = await some_history(board)
    exporter = AuditExporter(board, tmp_path, b"secret", segment_records=3)
    assert await exporter.export() == 6
    assert await board.redis.xlen(keys.audit) == 0
    files = segments(tmp_path, board.name, keys.shard)
    assert [f.name[-18:] for f in files] == ["000000000001.jsonl", "000000000004.jsonl"]
    bad, state = verify_files(files, b"secret")
    head, done = await audit.head(board, keys=keys), await audit.exported(board, keys=keys)
    assert bad is None and state.chain == head == done
    # more history: Redis continues the chain from the files, the next export appends to them
    await board.post("a.goal", {"q": 2}, actor="cli:carol", id=on_shard(board, keys))
    assert (await audit.verify_board(board, keys=keys))[0] is None
    assert await exporter.export() == 1 and await exporter.export() == 0
    bad, state = verify_files(segments(tmp_path, board.name, keys.shard), b"secret")
    assert bad is None and state.chain.seq == 7
    # the files' chain is keyed: without the key (or with another) it does not verify
    bad, _ = verify_files(files, b"wrong")
    assert bad is not None and bad.seq == 1 and "file_hash does not match" in bad.reason


@pytest.mark.parametrize(
    ("tamper", "first_bad", "why"),
    [
        ("edit", 2, "does not match its hash"),
        ("delete", 2, "found record 3 where record 2 belongs"),
        ("swap", 2, "found record 3 where record 2 belongs"),
        ("edit_and_rehash", 2, "file_hash does not match"),
    ],
)
async def test_tampering_in_an_exported_file_is_named(
    board: Board, tmp_path: Path, tamper: str, first_bad: int, why: str
) -> None:
    keys = await some_history(board)
    await AuditExporter(board, tmp_path, b"k").export()
    [path] = segments(tmp_path, board.name, keys.shard)
    lines = path.read_text().splitlines(keepends=True)
    if tamper in ("edit", "edit_and_rehash"):
        rec = json.loads(lines[1])
        rec["actor"] = "someone-else"
        if tamper == "edit_and_rehash":  # fixes the Redis link, but can't make the keyed one
            rec["hash"] = audit.AuditRecord(
                **{k: v for k, v in rec.items() if not k.startswith("file_")}
            ).expected_hash()
        lines[1] = json.dumps(rec) + "\n"
    elif tamper == "delete":
        del lines[1]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines))
    bad, _ = verify_files([path], b"k", shard=keys.shard)
    assert bad is not None and bad.seq == first_bad and why in bad.reason
    assert bad.where.startswith(f"{path}:") and bad.shard == keys.shard


async def test_two_exporters_at_once_export_each_record_once(board_url: str, tmp_path: Path) -> None:
    name = unique_board()
    async with (
        await Board.connect(board_url, board=name) as a,
        await Board.connect(board_url, board=name) as b,
    ):
        await a.post_many([NewItem(kind="a.goal", payload={"n": i}) for i in range(300)])
        exported: list[int] = []

        async def run(board: Board) -> None:
            for _ in range(3):
                exported.append(await AuditExporter(board, tmp_path, segment_records=100).export())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, a)
            tg.start_soon(run, b)
        assert sum(exported) == 300
        seqs = [
            json.loads(line)["seq"] for f in segments(tmp_path, name) for line in f.read_text().splitlines()
        ]
        assert seqs == list(range(1, 301))
        assert verify_files(segments(tmp_path, name), None)[0] is None


async def test_an_export_cut_short_after_the_fsync_is_finished_not_repeated(
    board: Board, tmp_path: Path
) -> None:
    keys = await some_history(board)
    exporter = AuditExporter(board, tmp_path)
    records = await all_records(board, keys)
    exporter._write(records, "", keys)  # on disk, fsynced: then the exporter died before trimming
    assert await board.redis.xlen(keys.audit) == 6
    await board.post("a.goal", {"q": 2}, id=on_shard(board, keys))
    assert await exporter.export() == 1  # the trim of the six is finished, the seventh exported
    files = segments(tmp_path, board.name, keys.shard)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, 8))
    assert verify_files(files, None)[0] is None
    assert await board.redis.xlen(keys.audit) == 0


async def test_a_broken_chain_is_not_exported(board: Board, tmp_path: Path) -> None:
    keys = await some_history(board)
    await rewrite(board, lambda entries: entries[:1] + entries[2:], keys)
    with pytest.raises(AuditChainBroken, match="found record 3 where record 2 belongs"):
        await AuditExporter(board, tmp_path).export()
    assert segments(tmp_path, board.name, keys.shard) == [] and await board.redis.xlen(keys.audit) == 5


def test_cli_tail_export_and_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, name = f"memory://audit-cli-{unique_board()}", unique_board()
    where = ["--url", url, "--board", name]

    async def history() -> None:
        async with await Board.connect(url, board=name) as b:
            await some_history(b)

    anyio.run(history)
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "tail", "-n", "3", "--json", *where])
    assert r.exit_code == 0, r.output
    assert [x["op"] for x in json.loads(r.output)] == ["posted", "claimed", "failed"]

    key = tmp_path / "key"
    key.write_text("s3cret\n")
    r = runner.invoke(
        app, ["audit", "export", "--dir", str(tmp_path / "out"), "--key-file", str(key), *where]
    )
    assert r.exit_code == 0 and "exported 6 audit records" in r.output, r.output
    [path] = segments(tmp_path / "out", name)
    r = runner.invoke(app, ["audit", "verify", "--from", str(path), "--key-file", str(key), *where])
    assert r.exit_code == 0 and "records from record 1 to 6" in r.output, r.output

    monkeypatch.setenv("BLACKBOARD_AUDIT_KEY", "another")
    r = runner.invoke(app, ["audit", "verify", "--from", str(path), *where])
    assert r.exit_code == 1 and f"{path}:1: record 1" in r.output, r.output
    r = runner.invoke(app, ["audit", "verify", "--from", str(tmp_path / "nope.jsonl"), *where])
    assert r.exit_code == 2 and "no such file" in r.output


async def test_a_daemon_exports_the_audit_log_while_it_runs(board_url: str, tmp_path: Path) -> None:
    from blackboard.daemon import Daemon
    from tests.support.packs import daemon_settings

    name = unique_board()
    settings = daemon_settings(board_url, name, [], audit_dir=tmp_path, audit_interval=0.05, audit_key="k")
    daemon = Daemon(settings)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        async with await Board.connect(board_url, board=name) as b:
            await b.post_many([NewItem(kind="a.goal", payload={"n": i}) for i in range(20)])
            metric = daemon.metrics.registry.get_sample_value

            def exported_by_daemon() -> bool:  # the daemon's own account comes after Redis's
                lag, done = (
                    metric("blackboard_audit_export_lag_records"),
                    metric("blackboard_audit_records_exported_total"),
                )
                return lag == 0 and done == 20

            with anyio.fail_after(10):
                while not exported_by_daemon():  # noqa: ASYNC110 - a metric, not an Event
                    await anyio.sleep(0.02)
            assert (await audit.exported(b)).seq == 20
        daemon.stop()
    bad, state = verify_files(segments(tmp_path, name), b"k")
    assert bad is None and state.chain.seq == 20


# -- sharded boards: one chain per shard -----------------------------------------------------


async def goals_on_every_shard(board: Board, each: int = 2) -> dict[int, list[str]]:
    """Post goals until every shard holds `each` (ids route at random): goal ids by shard."""
    by_shard: dict[int, list[str]] = {s: [] for s in range(board.shards)}
    for n in range(200):
        if all(len(v) >= each for v in by_shard.values()):
            break
        goal = await board.post("s.goal", {"n": n}, actor="cli:alice")
        by_shard[board.keys_of(goal.id).index].append(goal.id)
    assert all(len(v) >= each for v in by_shard.values()), by_shard
    return by_shard


async def sharded_history(board: Board) -> dict[int, int]:
    """Goals on every shard, some claimed and completed: how many records each shard holds."""
    by_shard = await goals_on_every_shard(board)
    while claims := await board.claim("worker", ["s.goal"], n=10):
        for claim in claims[::2]:
            await board.complete(claim, {"ok": True})
        await board.release(claims[1::2])
        if len(claims) < 10:
            break
    return {s: len(await all_records(board, board.shard_keys[s])) for s in by_shard}


async def test_a_sharded_board_keeps_one_chain_per_shard(board_url: str) -> None:
    async with await Board.connect(board_url, board=unique_board(), shards=3) as board:
        counts = await sharded_history(board)
        assert all(n >= 2 for n in counts.values())
        heads = await audit.heads(board)
        assert [h.seq for h in heads] == [counts[s] for s in range(3)]
        assert await audit.head(board) == heads[0]  # no keys: the first shard, as before
        for keys in board.shard_keys:  # every chain starts at 1 and holds its own shard's items
            records = await all_records(board, keys)
            assert [r.seq for r in records] == list(range(1, counts[keys.index] + 1))
            assert all(r.shard == keys.index and board.keys_of(r.id) == keys for r in records)
        checked = await audit.verify_shards(board)
        assert [(s, bad) for s, bad, _ in checked] == [(0, None), (1, None), (2, None)]
        assert [end for _, _, end in checked] == heads
        assert await audit.export_lag(board) == sum(counts.values())


async def test_the_tail_of_a_sharded_board_merges_its_shards_by_time(
    board_url: str, clock: FakeClock
) -> None:
    async with await Board.connect(board_url, board=unique_board(), shards=3, clock=clock) as board:
        by_shard = await goals_on_every_shard(board, each=1)
        posted = []
        for s in (2, 0, 1, 2):  # one second apart, across shards
            clock.advance(1)
            posted.append((await board.post("s.goal", {}, id=on_shard(board, board.shard_keys[s]))).id)
        newest = await audit.tail(board, 4)
        assert [r.id for r in newest] == posted and [r.shard for r in newest] == [2, 0, 1, 2]
        everything = await audit.tail(board, 100)
        assert len(everything) == sum(len(v) for v in by_shard.values()) + 4
        assert everything == sorted(everything, key=audit.when)
        only = await audit.tail(board, 100, keys=board.shard_keys[1])
        assert {r.shard for r in only} == {1} and only[-1].id == posted[2]


async def test_each_shard_is_exported_to_its_own_files(board_url: str, tmp_path: Path) -> None:
    async with await Board.connect(board_url, board=unique_board(), shards=3) as board:
        counts = await sharded_history(board)
        exporter = AuditExporter(board, tmp_path, b"k", segment_records=2)
        assert await exporter.export() == sum(counts.values())
        series = shard_segments(tmp_path, board.name, 3)
        assert segments(tmp_path, board.name) == []  # no file under the unsharded name
        for keys, files in zip(board.shard_keys, series, strict=True):
            assert await board.redis.xlen(keys.audit) == 0  # every shard's stream is trimmed
            assert files[0].name == f"audit-{board.name}~{keys.index}-000000000001.jsonl"
            assert len(files) == (counts[keys.index] + 1) // 2
            bad, state = verify_files(files, b"k", shard=keys.index)
            head, done = await audit.head(board, keys=keys), await audit.exported(board, keys=keys)
            assert bad is None and state.chain == head == done and head.seq == counts[keys.index]
        # new records on one shard: only that shard's series grows, continuing its chain
        await board.post("s.goal", {}, id=on_shard(board, board.shard_keys[1]))
        assert await audit.export_lag(board) == 1
        assert await exporter.export() == 1 and await audit.export_lag(board) == 0
        after = shard_segments(tmp_path, board.name, 3)
        assert after[0] == series[0] and after[2] == series[2]
        bad, state = verify_files(after[1], b"k", shard=1)
        assert bad is None and state.chain.seq == counts[1] + 1


async def test_tampering_in_one_shards_stream_is_named_with_that_shard(
    board_url: str, tmp_path: Path
) -> None:
    async with await Board.connect(board_url, board=unique_board(), shards=3) as board:
        counts = await sharded_history(board)

        def edit(entries: Entries) -> Entries:
            entries[1][1]["actor"] = "someone-else"
            return entries

        await rewrite(board, edit, board.shard_keys[1])
        checked = await audit.verify_shards(board)
        assert checked[0][1] is None and checked[2][1] is None
        bad = checked[1][1]
        assert bad is not None and bad.shard == 1 and bad.seq == 2
        assert str(bad).startswith("shard 1: redis: record 2: its content does not match")
        # the exporter refuses that shard, names it, and still exports the others
        with pytest.raises(AuditChainBroken, match="shard 1: redis: record 2") as e:
            await AuditExporter(board, tmp_path).export()
        assert e.value.exported == counts[0] + counts[2]
        assert [len(f) > 0 for f in shard_segments(tmp_path, board.name, 3)] == [True, False, True]
        assert await board.redis.xlen(board.shard_keys[1].audit) == counts[1]
        assert await board.redis.xlen(board.shard_keys[2].audit) == 0


async def test_tampering_in_one_shards_files_is_named_with_that_shard(board_url: str, tmp_path: Path) -> None:
    async with await Board.connect(board_url, board=unique_board(), shards=3) as board:
        await sharded_history(board)
        await AuditExporter(board, tmp_path, b"k").export()
        series = shard_segments(tmp_path, board.name, 3)
        [path] = series[2]
        lines = path.read_text().splitlines(keepends=True)
        assert len(lines) >= 4  # two goals, each posted and claimed
        del lines[1]
        path.write_text("".join(lines))
        assert verify_files(series[0], b"k", shard=0)[0] is None
        bad, _ = verify_files(series[2], b"k", shard=2)
        assert bad is not None and bad.shard == 2 and bad.seq == 2
        assert str(bad) == f"shard 2: {path}:2: record 2: found record 3 where record 2 belongs" + (
            " (deleted, inserted or reordered)"
        )


def test_segment_names_tell_boards_and_shards_apart(tmp_path: Path) -> None:
    names = [
        "audit-x-000000000001.jsonl",
        "audit-x-000000000011.jsonl",
        "audit-x-1-000000000001.jsonl",  # board "x-1", not board "x"
        "audit-x~0-000000000001.jsonl",
        "audit-x~1-000000000005.jsonl",
        "audit-x-1~0-000000000001.jsonl",
        "notes.jsonl",
    ]
    for name in names:
        (tmp_path / name).write_text("")
    assert [p.name for p in segments(tmp_path, "x")] == names[:2]
    assert [p.name for p in segments(tmp_path, "x-1")] == [names[2]]
    assert [[p.name for p in s] for s in shard_segments(tmp_path, "x", 2)] == [[names[3]], [names[4]]]
    assert [p.name for p in segments(tmp_path, "x-1", 0)] == [names[5]]
    seg = parse_segment(tmp_path / names[5])
    assert seg is not None and (seg.board, seg.shard, seg.first_seq) == ("x-1", 0, 1)
    assert parse_segment(tmp_path / names[6]) is None


def test_cli_verify_checks_every_shard_and_names_a_broken_one(board_url: str, tmp_path: Path) -> None:
    name = unique_board()
    where = ["--url", board_url, "--board", name]

    async def history() -> dict[int, int]:
        async with await Board.connect(board_url, board=name, shards=3) as b:
            return await sharded_history(b)

    counts = anyio.run(history)
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "verify", *where])
    assert r.exit_code == 0, r.output
    for s in range(3):
        want = f"shard {s}: records from the last exported record to {counts[s]}, chain intact"
        assert want in r.output, r.output
    r = runner.invoke(app, ["audit", "tail", "-n", "100", "--json", *where])
    assert r.exit_code == 0, r.output
    assert sorted(x["shard"] for x in json.loads(r.output)) == sorted(
        s for s, n in counts.items() for _ in range(n)
    )

    key = tmp_path / "key"
    key.write_text("s3cret\n")
    out = tmp_path / "out"
    r = runner.invoke(app, ["audit", "export", "--dir", str(out), "--key-file", str(key), *where])
    assert r.exit_code == 0 and f"exported {sum(counts.values())} audit records" in r.output, r.output
    files = [p for series in shard_segments(out, name, 3) for p in series]
    from_files = [arg for p in files for arg in ("--from", str(p))]
    r = runner.invoke(app, ["audit", "verify", *from_files, "--key-file", str(key), *where])
    assert r.exit_code == 0, r.output
    for s in range(3):
        assert f"shard {s}: records from record 1 to {counts[s]}, chain intact" in r.output, r.output

    # one shard's file edited: verify fails, naming that shard and the file
    [path] = segments(out, name, 1)
    lines = path.read_text().splitlines(keepends=True)
    rec = json.loads(lines[0])
    rec["actor"] = "someone-else"
    lines[0] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    r = runner.invoke(app, ["audit", "verify", *from_files, "--key-file", str(key), *where])
    assert r.exit_code == 1 and f"audit log broken at shard 1: {path}:1: record 1" in r.output, r.output
    assert r.output.count("audit log broken") == 1  # the other shards are not named

    # one shard's stream in Redis tampered with: verify (of Redis alone) names that shard
    async def tamper() -> None:
        async with await Board.connect(board_url, board=name) as b:
            keys = b.shard_keys[2]
            for _ in range(2):
                await b.post("s.goal", {}, id=on_shard(b, keys))
            await rewrite(b, lambda entries: entries[1:], keys)

    anyio.run(tamper)
    r = runner.invoke(app, ["audit", "verify", *where])
    assert r.exit_code == 1 and "audit log broken at shard 2: redis: record" in r.output, r.output
    # a file not named as one of this board's shards is refused
    stray = tmp_path / "stray.jsonl"
    stray.write_text("")
    r = runner.invoke(app, ["audit", "verify", "--from", str(stray), *where])
    assert r.exit_code == 2 and "is not named as an audit file of a shard" in r.output, r.output


async def test_memory_boards_hash_in_lua_as_redis_does(redis_url: str) -> None:
    """fakeredis lacks `redis.sha1hex`; the memory backend adds it, with Redis's answers."""
    from blackboard import connection

    script = "return {redis.sha1hex(ARGV[1]), redis.sha1hex(''), redis.sha1hex(ARGV[2])}"
    args = ["plain", "héllo ✓ \n\t" * 50]
    memory, real = connection.connect("memory://sha1-check"), connection.connect(redis_url)
    try:
        assert await memory.eval(script, 0, *args) == await real.eval(script, 0, *args)
        assert (await memory.eval(script, 0, *args))[0].decode() == sha1("plain")
    finally:
        await connection.close(memory)
        await connection.close(real)
