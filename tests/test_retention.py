"""Retention: a finished goal old enough is deleted whole, leaving every index consistent; a
goal with anything unfinished, or finished too recently, is not touched at all."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from blackboard import Board, NewItem, audit, policy, retention
from blackboard.cli import app
from blackboard.models import Status
from blackboard.policy import PolicyDenied
from tests.conftest import FakeClock, unique_board
from tests.support.invariants import check_invariants, read_raw

pytestmark = pytest.mark.anyio


async def finished_goal(board: Board, tag: str, key: str | None = None) -> tuple[str, list[str]]:
    """A goal that fanned out to two children (one waiting on the other), all done."""
    goal = await board.post("r.goal", {"tag": tag}, idempotency_key=key)
    [claim] = await board.claim("w", ["r.goal"])
    outputs = [NewItem(kind="r.step", payload={"n": 1}), NewItem(kind="r.step", payload={"n": 2})]
    kids = [k.id for k in (await board.complete(claim, {"planned": 2}, outputs))]
    while claims := await board.claim("w", ["r.step"], n=10):
        for c in claims:
            await board.complete(c, {"ok": c.id})
    return goal.id, [goal.id, *kids]


async def test_a_finished_goal_goes_whole_and_the_board_stays_consistent(
    board: Board, clock: FakeClock
) -> None:
    old, old_ids = await finished_goal(board, "old", key="order-1")
    clock.advance(3600)
    _, recent_ids = await finished_goal(board, "recent")
    running = await board.post("r.goal", {"tag": "running"})
    [held] = await board.claim("w", ["r.goal"])
    assert held.id == running.id
    clock.advance(600)
    home = board.keys_of(old)  # the old goal's shard (the board's one shard, unless sharded)
    before = await audit.head(board, keys=home)
    assert await retention.purge_all(board, older_than=1800) == 3  # only the old goal's three items
    assert [await board.get_many(old_ids)][0] == [None, None, None]
    assert all(await board.get_many(recent_ids)) and (await board.get(running.id)).status is Status.CLAIMED
    statuses = await check_invariants(board)  # no index entry, count or child left dangling
    assert set(statuses) == {*recent_ids, running.id}
    raw = await read_raw(board, home)
    assert not any(old in m for m in raw.lineage) and not any(old in m for m in raw.children)
    assert (await board.usage(old)).calls == 0
    [record] = [r for r in await audit.tail(board, 10, keys=home) if r.seq > before.seq]
    assert (record.op, record.id, record.actor) == ("purged", old, "retention")
    again = await board.post("r.goal", {"tag": "old"}, idempotency_key="order-1")
    assert again.id != old  # the idempotency key was released with its goal
    assert await retention.purge_all(board, older_than=1800) == 0  # nothing else is old enough


async def test_an_unfinished_tree_is_not_touched_even_when_its_goal_is_done(
    board: Board, clock: FakeClock
) -> None:
    goal = await board.post("r.goal", {})
    [claim] = await board.claim("w", ["r.goal"])
    [child] = await board.complete(claim, None, [NewItem(kind="r.step", payload={"late": True})])
    clock.advance(7200)
    assert await retention.purge_all(board, older_than=60) == 0
    assert (await board.get(goal.id)).status is Status.DONE and (
        await board.get(child.id)
    ).status is Status.OPEN
    [c] = await board.claim("w", ["r.step"])
    await board.complete(c, None)
    clock.advance(7200)
    assert await retention.purge_all(board, older_than=60) == 2
    await check_invariants(board)


async def test_purge_clears_a_goals_budget_repeats_and_cross_goal_dependencies(
    board: Board, clock: FakeClock, tmp_path: Path
) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "p.yaml").write_text(
        "roles:\n  all: {post: ['*'], claim: ['*'], read: ['*'], cancel: ['*']}\n"
        "principals:\n  w: [all]\n  ops: [all]\n"
        "budgets:\n  r.goal: {max_items: 50}\n"
    )
    loaded = policy.load([folder])
    assert loaded is not None
    await policy.store(board, loaded)
    a = await board.post("r.goal", {"a": 1}, actor="ops")
    b = await board.post("r.goal", {"b": 1}, actor="ops", after=[a.id])  # another goal waits on a
    for goal in (a, b):
        [c] = await board.claim("w", ["r.goal"])
        assert c.id == goal.id
        await board.complete(c, None, [NewItem(kind="r.step", payload={"of": goal.id})])
        [s] = await board.claim("w", ["r.step"])
        await board.complete(s, None)
    clock.advance(3600)
    keys = board.keys_of(a.id)  # b waits on a, so it lives on a's shard (if there are several)
    guarded = [k.decode() for k in await board.redis.hkeys(keys.repeats)]
    assert {k.split("|")[0] for k in guarded} == {a.id, b.id}  # the repeat guard's entries
    assert {k.decode() for k in await board.redis.hkeys(keys.budgets)} == {a.id, b.id}
    with pytest.raises(PolicyDenied):
        await retention.purge_all(board, older_than=60, actor="w-not-granted")
    assert await retention.purge_all(board, older_than=60, actor="ops") == 4
    for key in (keys.budgets, keys.totals):
        assert not {k.decode() for k in await board.redis.hkeys(key)} & {a.id, b.id}
    assert not [k for k in await board.redis.hkeys(keys.repeats) if k.decode().startswith((a.id, b.id))]
    await check_invariants(board)


async def test_the_daemon_purges_on_its_reaper_beat(board_url: str) -> None:
    from blackboard.daemon import Daemon
    from tests.support.packs import daemon_settings

    name = unique_board()
    async with await Board.connect(board_url, board=name) as b:
        _, ids = await finished_goal(b, "d")
    daemon = Daemon(daemon_settings(board_url, name, [], retention=0.001, reap_interval=0.05))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        with anyio.fail_after(10):
            while daemon.metrics.registry.get_sample_value("blackboard_items_purged_total") != 3:  # noqa: ASYNC110 - the reaper's beat
                await anyio.sleep(0.02)
        assert await daemon.board.get_many(ids) == [None, None, None]
        daemon.stop()


def test_purge_command_needs_yes(board_url: str) -> None:
    name = unique_board()

    async def setup() -> str:
        async with await Board.connect(board_url, board=name) as b:
            goal, _ = await finished_goal(b, "cli")
            return goal

    goal = anyio.run(setup)
    runner = CliRunner()
    where = ["--url", board_url, "--board", name]
    r = runner.invoke(app, ["purge", "--older-than", "0", *where])
    assert r.exit_code == 2 and "--yes" in r.output
    r = runner.invoke(app, ["purge", "--older-than", "3600", "--yes", *where])
    assert r.exit_code == 0 and "purged 0 items" in r.output  # finished just now: kept
    r = runner.invoke(app, ["purge", "--older-than", "0", "--yes", *where])
    assert r.exit_code == 0 and "purged 3 items" in r.output, r.output
    r = runner.invoke(app, ["show", goal, *where])
    assert r.exit_code == 1 and "no item" in r.output.lower()


async def test_a_sweep_pages_through_the_lineage_and_a_tree_may_span_pages(
    board: Board, clock: FakeClock
) -> None:
    goals = [await finished_goal(board, f"g{n}") for n in range(3)]  # three items each
    clock.advance(3600)
    seen: list[int] = []
    cursor = None
    while True:  # two lineage entries a page: every tree spans pages, each goes exactly once
        n, cursor = await retention.purge(board, 60, cursor=cursor, scan_limit=2)
        seen.append(n)
        if cursor is None:
            break
    assert sum(seen) == 9 and len(seen) >= 4 - board.shards + 1  # (each step: every shard a page)
    for _, ids in goals:
        assert await board.get_many(ids) == [None, None, None]
    await check_invariants(board)
