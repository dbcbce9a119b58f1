"""The audit log: a hash-chained record per state change, written in the change's own script;
verified in Redis and in exported files; exported by one exporter at a time, crash-safe."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from blackboard import Board, NewItem, audit
from blackboard.audit_export import AuditChainBroken, AuditExporter, segments, verify_files
from blackboard.cli import app
from blackboard.errors import LeaseLost
from tests.conftest import FakeClock, unique_board

pytestmark = pytest.mark.anyio

Entries = list[tuple[str, dict[str, str]]]


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


async def all_records(board: Board) -> list[audit.AuditRecord]:
    return [r async for r in audit.records(board)]


async def rewrite(board: Board, change: Callable[[Entries], Entries]) -> None:
    """Tamper with the audit stream as someone with write access to Redis could."""
    raw = await board.redis.xrange(board.keys.audit)
    entries: Entries = [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in raw]
    await board.redis.delete(board.keys.audit)
    for stream_id, fields in change(entries):
        await board.redis.xadd(board.keys.audit, fields, id=stream_id)


async def some_history(board: Board) -> None:
    """A goal, claimed and completed with a child, the child failed once: eight records."""
    await board.post("a.goal", {"q": 1}, actor="cli:alice")
    [claim] = await board.claim("planner", ["a.goal"])
    await board.complete(claim, {"plan": 1}, outputs=[NewItem(kind="a.task", payload={"n": 1})])
    [task] = await board.claim("worker", ["a.task"])
    await board.fail(task, "boom")


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

    records = await all_records(board)
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
    bad, end = await audit.verify_board(board)
    assert bad is None and end.seq == len(records)
    assert await audit.head(board) == end


async def test_a_refused_write_leaves_no_record(board: Board) -> None:
    await board.post("a.goal", {})
    [claim] = await board.claim("w", ["a.goal"])
    before = await audit.head(board)
    stale = claim.model_copy(update={"token": claim.token + "0"})
    with pytest.raises(LeaseLost):
        await board.complete(stale, "late")
    assert await audit.head(board) == before and len(await all_records(board)) == before.seq


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
    await some_history(board)
    assert (await audit.verify_board(board))[0] is None

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

    await rewrite(board, change)
    bad, _ = await audit.verify_board(board)
    assert bad is not None and bad.seq == first_bad and why in bad.reason and bad.where == "redis"


async def test_export_moves_records_to_fsynced_files_then_trims_redis(board: Board, tmp_path: Path) -> None:
    await some_history(board)
    exporter = AuditExporter(board, tmp_path, b"secret", segment_records=3)
    assert await exporter.export() == 6
    assert await board.redis.xlen(board.keys.audit) == 0
    files = segments(tmp_path, board.name)
    assert [f.name[-18:] for f in files] == ["000000000001.jsonl", "000000000004.jsonl"]
    bad, state = verify_files(files, b"secret")
    assert bad is None and state.chain == await audit.head(board) == await audit.exported(board)
    # more history: Redis continues the chain from the files, the next export appends to them
    await board.post("a.goal", {"q": 2}, actor="cli:carol")
    assert (await audit.verify_board(board))[0] is None
    assert await exporter.export() == 1 and await exporter.export() == 0
    bad, state = verify_files(segments(tmp_path, board.name), b"secret")
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
    await some_history(board)
    await AuditExporter(board, tmp_path, b"k").export()
    [path] = segments(tmp_path, board.name)
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
    bad, _ = verify_files([path], b"k")
    assert bad is not None and bad.seq == first_bad and why in bad.reason
    assert bad.where.startswith(f"{path}:")


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
    await some_history(board)
    exporter = AuditExporter(board, tmp_path)
    records = await all_records(board)
    exporter._write(records, "")  # on disk, fsynced: then the exporter died before trimming
    assert await board.redis.xlen(board.keys.audit) == 6
    await board.post("a.goal", {"q": 2})
    assert await exporter.export() == 1  # the trim of the six is finished, the seventh exported
    lines = [json.loads(line) for f in segments(tmp_path, board.name) for line in f.read_text().splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, 8))
    assert verify_files(segments(tmp_path, board.name), None)[0] is None
    assert await board.redis.xlen(board.keys.audit) == 0


async def test_a_broken_chain_is_not_exported(board: Board, tmp_path: Path) -> None:
    await some_history(board)
    await rewrite(board, lambda entries: entries[:1] + entries[2:])
    with pytest.raises(AuditChainBroken, match="found record 3 where record 2 belongs"):
        await AuditExporter(board, tmp_path).export()
    assert segments(tmp_path, board.name) == [] and await board.redis.xlen(board.keys.audit) == 5


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
