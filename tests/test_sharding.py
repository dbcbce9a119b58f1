"""Sharded boards end to end: goals with fan-out and fan-in, run by three daemons, done exactly once.

A board of K shards spreads its goals over K hash tags (`{bb:<board>:0}`..), each a Redis Cluster
slot. Here a few thousand goals each fan out to FANOUT parts and a join that waits (`after`) for
all of them, and three daemons share the work:

- on a local 3-master Redis Cluster with K=6: three `blackboard run --shards 6` processes, then
  the same with one of them SIGKILLed mid-run;
- with K=1 on a single redis-server (three processes, one killed) and on memory:// (three
  in-process daemons in one event loop, one "killed" by cutting it off from Redis at once and
  cancelling it, so its leases expire as a dead process's would).

Every handler appends a line to a per-process file when it starts and when it ends (with a nonce
that it also returns as its result), so the test can tell each execution from every other, in any
process. "Exactly once" then means: each item is done, its result is the one execution's result
that the board kept, and the board recorded one completion for it. Without a kill (30 s leases)
every handler also ran exactly once; with one (2 s leases) an item ran again only as a new attempt
after its lease expired, and whatever the dead daemon was running was taken over that way. Waits
are on conditions, never on sleeps; every process is stopped by its PID.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from blackboard import Board, InvalidInput, Item, NewItem, Status
from blackboard.bench.loadtest import run_loadtest
from blackboard.daemon import Daemon
from tests.conftest import cluster_url, unique_board
from tests.support.daemon_proc import DaemonProc, eventually, write_atomically
from tests.support.packs import daemon_settings
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

GOAL, PART, JOIN = "sh.goal", "sh.part", "sh.join"
FANOUT = 3  # parts per goal; the join waits for all of them
GOALS = 2000  # goals per run: 2000 * (1 + FANOUT + 1) = 10,000 items
MEMORY_GOALS = 400  # memory:// runs three daemons and fakeredis's Lua in this one process
KILL_LEASE = 2.0  # seconds: the lease a killed daemon's items wait out before another takes them
MASTERS = 3

PLUGIN = '''\
"""Sharding test agents: a goal fans out to {fanout} parts and a join that waits for them all.

Each handler appends 'start' and 'end' lines (id, attempt, who, and at the end the nonce it
returns) to a per-process file; one small O_APPEND write per line, so lines never mix.
"""
import os
import uuid
from pathlib import Path

import anyio

from blackboard import agent

RECORDS = Path({records!r})
OPTIONS = dict(concurrency={concurrency}, lease={lease}, batch={batch})


def record(*fields):
    fd = os.open(RECORDS / f"{{os.getpid()}}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(f) for f in fields) + "\\n").encode())
    finally:
        os.close(fd)


async def execute(item, ctx, result):
    who = f"{{os.getpid()}}:{{ctx.board.daemon_id}}"
    record("start", item.id, item.attempts, who)
    await anyio.sleep({work})
    nonce = uuid.uuid4().hex
    record("end", item.id, item.attempts, who, nonce)
    return {{**result, "run": nonce}}


@agent(name="planner", consumes=[{goal!r}], produces=[{part!r}, {join!r}], **OPTIONS)
async def plan(item, ctx):
    n = item.payload["n"]
    parts = [await ctx.post({part!r}, {{"value": n * {fanout} + i}}) for i in range({fanout})]
    await ctx.post({join!r}, {{"n": n}}, after=[p.id for p in parts])
    return await execute(item, ctx, {{"parts": len(parts)}})


@agent(name="worker", consumes=[{part!r}], **OPTIONS)
async def work(item, ctx):
    return await execute(item, ctx, {{"value": item.payload["value"]}})


@agent(name="joiner", consumes=[{join!r}], **OPTIONS)
async def join(item, ctx):
    results = (await ctx.dependency_results()).values()
    total = sum(r["value"] for r in results)
    return await execute(item, ctx, {{"sum": total, "parts": len(results)}})
'''


def write_plugin(
    folder: Path, records: Path, *, lease: float, concurrency: int = 64, batch: int = 16
) -> None:
    records.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    source = PLUGIN.format(
        records=str(records),
        goal=GOAL,
        part=PART,
        join=JOIN,
        fanout=FANOUT,
        concurrency=concurrency,
        lease=lease,
        batch=batch,
        work=0.05,
    )
    write_atomically(folder / "sharded.py", source)


# -- the records the handlers leave ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    attempt: int
    who: str  # "<pid>:<daemon id>"
    nonce: str | None = None  # set on an 'end' line


@dataclass
class Records:
    starts: dict[str, list[Run]] = field(default_factory=dict)
    ends: dict[str, list[Run]] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> Records:
        out = cls()
        for path in sorted(folder.glob("*.log")):
            for line in path.read_text().splitlines():
                what, item_id, attempt, who, *nonce = line.split()
                run = Run(int(attempt), who, nonce[0] if nonce else None)
                (out.starts if what == "start" else out.ends).setdefault(item_id, []).append(run)
        return out


# -- reading a whole board back -------------------------------------------------------------------


async def all_items(board: Board, kind: str) -> list[Item]:
    items: list[Item] = []
    cursor = None
    while True:
        page = await board.query(kind=kind, limit=5000, cursor=cursor)
        items += page.items
        cursor = page.cursor
        if cursor is None:
            return items


async def all_events(board: Board) -> list[Any]:
    events: list[Any] = []
    cursor = "0-0"
    while True:
        batch, cursor = await board.read_events(cursor, count=10_000)
        if not batch:
            return events
        events += batch


async def done_counts(board: Board) -> dict[str, int]:
    stats = await board.stats()
    return {k: s.by_status.get(Status.DONE, 0) for k, s in stats.kinds.items()}


def expected_counts(goals: int) -> dict[str, int]:
    return {GOAL: goals, PART: goals * FANOUT, JOIN: goals}


async def post_goals(board: Board, n: int, batch_size: int = 250) -> list[str]:
    """Post `n` goals, `batch_size` to a call."""
    ids: list[str] = []
    for start in range(0, n, batch_size):
        batch = [NewItem(kind=GOAL, payload={"n": i}) for i in range(start, min(n, start + batch_size))]
        ids += [it.id for it in await board.post_many(batch)]
    assert len(set(ids)) == n
    return ids


@dataclass
class Outcome:
    goals: list[str]
    records: Records
    killed: Callable[[str], bool] | None = None  # who (from the records) was the killed daemon
    in_flight_at_kill: set[str] = field(default_factory=set)  # what it held: see `orphaned`
    seconds: float = 0.0
    survivor_reruns: int = 0  # runs by a surviving daemon that the board did not keep


async def check_exactly_once(board: Board, out: Outcome) -> None:
    """Every item of every goal done, completed once, its result the one execution's it kept."""
    n = len(out.goals)
    goals = await all_items(board, GOAL)
    parts = await all_items(board, PART)
    joins = await all_items(board, JOIN)
    # Nothing lost, nothing extra: exactly the goals posted, each with its parts and one join.
    assert sorted(g.id for g in goals) == sorted(out.goals)
    assert (len(parts), len(joins)) == (n * FANOUT, n)
    posted = set(out.goals)
    children: dict[str, list[Item]] = {}
    for it in parts + joins:
        assert it.parent in posted and it.root == it.parent, it
        children.setdefault(it.parent, []).append(it)
    assert set(children) == posted
    by_goal_value = {g.id: g.payload["n"] for g in goals}
    for goal_id, kids in children.items():
        mine = sorted(k.kind for k in kids)
        assert mine == [JOIN] + [PART] * FANOUT, (goal_id, mine)
        (join,) = [k for k in kids if k.kind == JOIN]
        part_ids = {k.id for k in kids if k.kind == PART}
        assert set(join.after) == part_ids
        n_goal = by_goal_value[goal_id]
        assert join.result["parts"] == FANOUT
        assert join.result["sum"] == sum(n_goal * FANOUT + i for i in range(FANOUT)), join
        # A goal and all it holds live on one shard.
        assert {board.keys_of(k.id).tag for k in kids} == {board.keys_of(goal_id).tag}

    stats = await board.stats()
    assert {k: s.by_status for k, s in stats.kinds.items()} == {
        k: {Status.DONE: c} for k, c in expected_counts(n).items()
    }
    assert stats.dead_letters == 0
    assert all((s.ready, s.delayed, s.leased) == (0, 0, 0) for s in stats.kinds.values()), stats

    events = await all_events(board)
    done_events = Counter(e.id for e in events if e.type == "done")
    everything = goals + parts + joins
    assert done_events == Counter(it.id for it in everything)  # one completion per item
    assert not [e for e in events if e.type in ("failed", "dead")]
    expired = {e.id for e in events if e.type == "expired"}

    killed = out.killed or (lambda who: False)
    for it in everything:
        assert it.status is Status.DONE, it
        ends = out.records.ends.get(it.id, [])
        kept = [r for r in ends if r.nonce == it.result["run"]]
        assert len(kept) == 1, (it, ends)
        assert kept[0].attempt == it.attempts, (it, kept)
        starts = out.records.starts.get(it.id, [])
        if out.killed is None:  # long leases, nobody killed: every item ran exactly once
            assert (it.attempts, len(starts), len(ends)) == (1, 1, 1), (it, starts, ends)
            continue
        # Each run is an attempt of its own (one claim, one handler), the kept one the last; an
        # item that ran more than once went back to the board through an expired lease first.
        attempts = [r.attempt for r in starts]
        assert len(set(attempts)) == len(attempts) and max(attempts) == it.attempts, (it, starts)
        if len(starts) > 1:
            assert it.id in expired, (it, starts)
            # Re-runs after a survivor's own lease ran out (a stalled event loop, say) are
            # allowed but counted: the board fenced the late completion, as it must.
            out.survivor_reruns += sum(1 for r in starts if not killed(r.who) and r.attempt != it.attempts)
    # What the killed daemon was running when it died was taken over once its lease expired.
    if out.killed is not None:
        assert out.in_flight_at_kill <= expired
        final = {it.id: it for it in everything}
        for item_id in out.in_flight_at_kill:  # done by a survivor, in a later attempt
            it = final[item_id]
            (kept,) = [r for r in out.records.ends[item_id] if r.nonce == it.result["run"]]
            assert it.attempts >= 2 and not killed(kept.who), (it, kept)
        print(
            f"killed daemon: {len(out.in_flight_at_kill)} claims it was running taken over; "
            f"{len(expired)} leases expired; {out.survivor_reruns} survivor re-runs"
        )


# -- fleets of three daemons ----------------------------------------------------------------------


class ProcFleet:
    """Three `blackboard run` processes, each stopped by its PID at the end."""

    def __init__(self, workdir: Path, url: str, board: str, agents: Path, shards: int) -> None:
        env = {"BLACKBOARD_SHARDS": str(shards), "BLACKBOARD_LOG_LEVEL": "warning"}
        self.procs = [DaemonProc(workdir / f"d{i}", url, board, [agents], env=env) for i in range(3)]
        self.killed_pid: int | None = None

    def start(self) -> None:
        for p in self.procs:
            p.start()

    async def ready(self) -> None:
        for p in self.procs:
            await p.wait_ready(60)

    def is_victim(self, who: str) -> bool:
        return who.startswith(f"{self.procs[0].pid}:")

    async def kill_one(self) -> None:
        victim = self.procs[0]
        victim.send(signal.SIGKILL)
        assert await victim.wait_exit(10) == -signal.SIGKILL
        self.killed_pid = victim.pid

    def survivors_alive(self) -> None:
        for p in self.procs:
            if p.pid != self.killed_pid:
                assert p.alive(), p.log_tail()

    def stop(self) -> None:
        for p in self.procs:
            p.kill()

    def logs(self) -> str:
        return "\n".join(p.log_tail(300) for p in self.procs)


class Killed(Exception):
    """What every Redis call of a 'killed' in-process daemon raises: nothing it does lands."""


def leaves(e: BaseException) -> set[type[BaseException]]:
    if isinstance(e, BaseExceptionGroup):
        return set().union(*(leaves(x) for x in e.exceptions))
    return {type(e)}


class _Dead:
    def __getattr__(self, name: str) -> Any:
        raise Killed(name)


class LocalFleet:
    """Three `Daemon`s in this event loop on one memory:// board. `kill_one` cuts the first off
    from Redis at once (every call raises before it is sent, so it releases, completes and renews
    nothing, as if the process had died) and cancels it."""

    def __init__(self, url: str, board: str, agents: Path, shards: int, tmp: Path) -> None:
        settings = daemon_settings(
            url,
            board,
            [agents],
            shards=shards,
            reap_interval=0.5,
            presence_interval=0.2,
            policies=[tmp / "no-policies"],
        )
        self.daemons = [Daemon(settings) for _ in range(3)]
        self.scopes = [anyio.CancelScope() for _ in self.daemons]
        self.ended = [anyio.Event() for _ in self.daemons]
        self.errors: list[BaseException | None] = [None] * 3
        self.victim: Daemon | None = None

    async def _run(self, n: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scopes[n]:
                await self.daemons[n].run(task_status=task_status)
        except BaseException as e:
            if self.daemons[n] is not self.victim:
                raise
            self.errors[n] = e  # the dead one's calls all failed: what that raised is expected
        finally:
            self.ended[n].set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LocalFleet]:
        async with anyio.create_task_group() as tg:
            for n in range(len(self.daemons)):
                await tg.start(self._run, n)
            try:
                yield self
            finally:
                for scope in self.scopes:
                    scope.cancel()

    def is_victim(self, who: str) -> bool:
        return who.endswith(f":{self.daemons[0].id}")

    async def kill_one(self) -> None:
        victim = self.victim = self.daemons[0]

        async def dead(op: Any) -> Any:
            raise Killed("retrying")

        victim.board.retrying = dead  # type: ignore[method-assign]
        victim.board.redis = _Dead()
        self.scopes[0].cancel()
        with anyio.fail_after(20):
            await self.ended[0].wait()

    async def ready(self) -> None:
        pass  # started by `running()`

    def survivors_alive(self) -> None:
        for d, ended in zip(self.daemons, self.ended, strict=True):
            if d is not self.victim:
                assert not ended.is_set()


async def run_workload(
    board: Board, fleet: Any, records: Path, goals: int, *, kill: bool, timeout: float
) -> Outcome:
    """Post `goals` goals, (optionally) kill one daemon once a quarter of them are joined, and
    wait until every item is done."""
    started = time.monotonic()
    ids = await post_goals(board, goals)  # while the daemons start up
    await fleet.ready()
    print(f"posted, daemons ready after {time.monotonic() - started:.1f}s")
    want = expected_counts(goals)
    out = Outcome(ids, Records())
    if kill:
        # Kill once a quarter of the goals are joined, at a moment the victim is running handlers.
        async def time_to_kill() -> bool:
            joined = (await done_counts(board)).get(JOIN, 0)
            assert joined < goals, "every goal was done before the victim was seen running handlers"
            if joined < goals // 4:
                return False
            return bool(in_flight(Records.read(records), fleet.is_victim))

        await eventually(time_to_kill, timeout, "a quarter of the goals joined", 0.02)
        await fleet.kill_one()
        out.killed = fleet.is_victim
        assert (await done_counts(board)).get(JOIN, 0) < goals, "nothing was left to take over"
        out.in_flight_at_kill = await orphaned(board, Records.read(records), fleet.is_victim)
        assert out.in_flight_at_kill, "the killed daemon held no claim it had started when it died"

    async def all_done() -> bool:
        fleet.survivors_alive()
        return await done_counts(board) == want

    await eventually(all_done, timeout, f"all {goals} goals done", 0.2)
    out.seconds = time.monotonic() - started
    out.records = Records.read(records)
    print(f"{goals} goals ({sum(want.values())} items) on {board.url} (K={board.shards}): {out.seconds:.1f}s")
    return out


async def orphaned(board: Board, records: Records, who: Callable[[str], bool]) -> set[str]:
    """Items whose handler `who` started and that are still claimed in that attempt: the claims
    of a dead daemon whose completions never landed (its handler may or may not have ended)."""
    started = {(i, r.attempt) for i, runs in records.starts.items() for r in runs if who(r.who)}
    now = {it.id: it for it in await board.get_many(sorted({i for i, _ in started})) if it is not None}
    return {i for i, a in started if now[i].status is Status.CLAIMED and now[i].attempts == a}


def in_flight(records: Records, who: Callable[[str], bool]) -> set[str]:
    """Items whose handler `who` started and had not ended (as the records say)."""
    return {
        item_id
        for item_id, runs in records.starts.items()
        for r in runs
        if who(r.who)
        and not any(e.attempt == r.attempt and e.who == r.who for e in records.ends.get(item_id, []))
    }


# -- where the keys are -----------------------------------------------------------------------------


def board_keys(ports: list[int], board: str) -> dict[int, set[str]]:
    """Every key of `board` on each server (by port), read from the server itself."""
    pattern = re.compile(r"\{bb:" + re.escape(board) + r"(?::\d+)?\}")
    out = {}
    for port in ports:
        with redis.Redis(port=port) as r:
            out[port] = {k.decode() for k in r.scan_iter(match="*", count=5000) if pattern.search(k.decode())}
    return out


def assert_keys_in_shards(board: Board, stored: dict[int, set[str]], master_of: Callable[[str], int]) -> None:
    """Every key of the board starts with one of its shard tags and sits on that tag's master."""
    tags = {ks.tag for ks in board.shard_keys}
    seen: set[str] = set()
    for port, keys in stored.items():
        for key in keys:
            tag = key[: key.index("}") + 1]
            assert tag in tags, f"{key!r} is under no shard tag of the board"
            assert master_of(tag) == port, f"{key!r} on :{port}, but its slot is served by :{master_of(tag)}"
            seen.add(tag)
    assert seen == tags  # every shard holds something (its goals)


# -- the cluster ----------------------------------------------------------------------------------


def spread_board(nodes: list[RedisServer], shards: int) -> str:
    """A new board name whose `shards` hash tags land on every master (6 tags on 3 masters miss
    one a quarter of the time; the test is about goals following their tags)."""
    with redis.RedisCluster(host="127.0.0.1", port=nodes[0].port) as rc:
        for _ in range(200):
            name = unique_board()
            ports = {rc.get_node_from_key(f"{{bb:{name}:{i}}}").port for i in range(shards)}
            if len(ports) == len(nodes):
                return name
    raise AssertionError(f"no board name found whose {shards} tags cover {len(nodes)} masters")


async def cluster_run(nodes: list[RedisServer], tmp_path: Path, *, kill: bool) -> None:
    shards = 6
    url = cluster_url(nodes)
    name = spread_board(nodes, shards)
    write_plugin(tmp_path / "agents", tmp_path / "records", lease=KILL_LEASE if kill else 30.0)
    async with await Board.connect(url, board=name, shards=shards) as board:
        fleet = ProcFleet(tmp_path / "daemons", url, name, tmp_path / "agents", shards)
        try:
            fleet.start()
            out = await run_workload(board, fleet, tmp_path / "records", GOALS, kill=kill, timeout=150)
            await check_exactly_once(board, out)

            def master_of(key: str) -> int:
                return int(board.redis.get_node_from_key(key).port)

            # The goals are spread over every shard, and so over every master.
            goals_by_shard = Counter(board.keys_of(g).index for g in out.goals)
            assert sorted(goals_by_shard) == list(range(shards)), goals_by_shard
            goals_by_master = Counter(master_of(board.keys_of(g).tag) for g in out.goals)
            assert set(goals_by_master) == {n.port for n in nodes}, goals_by_master
            assert_keys_in_shards(board, board_keys([n.port for n in nodes], name), master_of)
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.stop()


@pytest.mark.redis_only
@pytest.mark.timeout(180)
async def test_six_shards_on_three_masters_three_daemons_do_every_goal_once(
    cluster: list[RedisServer], tmp_path: Path
) -> None:
    await cluster_run(cluster, tmp_path, kill=False)


@pytest.mark.redis_only
@pytest.mark.timeout(180)
async def test_six_shards_daemon_killed_mid_run_loses_nothing(
    cluster: list[RedisServer], tmp_path: Path
) -> None:
    await cluster_run(cluster, tmp_path, kill=True)


@pytest.mark.redis_only
@pytest.mark.timeout(60)
async def test_load_test_on_the_cluster_counts_every_master(cluster: list[RedisServer]) -> None:
    """The load test's Redis figures cover every master (redis-py sends INFO to one random node
    unless told otherwise), and every claim on the six shards is completed once."""
    report = await run_loadtest(
        cluster_url(cluster), agents=60, processes=1, duration=1.0, think=0.01, rate=300, shards=6
    )
    assert 0 < report["claims"] == report["done"] <= report["posted"]
    per_master = report["redis_cpu_percent_per_master"]
    assert len(per_master) == MASTERS and all(cpu > 0 for cpu in per_master), per_master
    assert report["redis_cpu_percent"] == pytest.approx(sum(per_master), abs=0.2)
    # The load test's board spreads its six shards two per master.
    with redis.RedisCluster(host="127.0.0.1", port=cluster[0].port) as rc:
        on = Counter(rc.get_node_from_key(f"{{bb:{report['board']}:{i}}}").port for i in range(6))
    assert sorted(on.values()) == [2, 2, 2], on
    # An item takes 0.9-1.7 KB; counting one master of three would give a third of that.
    assert report["redis_bytes_per_item"] > 800, report


# -- one shard: a single redis-server, and memory:// --------------------------------------------------


@pytest.mark.redis_only
@pytest.mark.timeout(180)
async def test_one_shard_single_redis_daemon_killed_mid_run_loses_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    name = unique_board()
    write_plugin(tmp_path / "agents", tmp_path / "records", lease=KILL_LEASE)
    async with await Board.connect(redis_url, board=name, shards=1) as board:
        fleet = ProcFleet(tmp_path / "daemons", redis_url, name, tmp_path / "agents", 1)
        try:
            fleet.start()
            out = await run_workload(board, fleet, tmp_path / "records", GOALS, kill=True, timeout=150)
            await check_exactly_once(board, out)
            port = int(redis_url.rsplit(":", 1)[1])
            assert_keys_in_shards(board, board_keys([port], name), lambda tag: port)
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.stop()


@pytest.mark.timeout(180)
async def test_one_shard_memory_daemon_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    url, name = f"memory://sharding-{unique_board()}", unique_board()
    write_plugin(tmp_path / "agents", tmp_path / "records", lease=KILL_LEASE)
    async with await Board.connect(url, board=name, shards=1) as board:
        fleet = LocalFleet(url, name, tmp_path / "agents", 1, tmp_path)
        async with fleet.running():
            out = await run_workload(board, fleet, tmp_path / "records", MEMORY_GOALS, kill=True, timeout=150)
        await check_exactly_once(board, out)
        # The dead daemon stopped on its cut-off Redis calls, and on nothing else.
        assert fleet.errors[0] is not None and leaves(fleet.errors[0]) <= {Killed}, repr(fleet.errors[0])
        keys = {k.decode() for k in await board.redis.keys("*")}
        assert {k[: k.index("}") + 1] for k in keys if "{bb:" + name in k} == {board.keys.tag}


# -- a board keeps its shard count ------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_connecting_with_another_shard_count_is_refused(any_url: str) -> None:
    name = unique_board()
    async with await Board.connect(any_url, board=name, shards=6) as board:
        goal = await board.post(GOAL, {"n": 1})
    with pytest.raises(InvalidInput) as refused:
        await Board.connect(any_url, board=name, shards=3)
    assert refused.value.field == "shards"
    assert "created with 6 shard(s)" in str(refused.value) and "shards=6" in str(refused.value)
    # The board is as it was: the right count still connects (so does none: it takes the stored one).
    async with await Board.connect(any_url, board=name, shards=6) as board:
        assert (await board.get(goal.id)).status is Status.OPEN
    async with await Board.connect(any_url, board=name) as board:
        assert board.shards == 6


@pytest.mark.parametrize(("created", "wrong"), [(6, 1), (1, 6)])
@pytest.mark.timeout(60)
async def test_a_refused_connect_leaves_the_board_usable(created: int, wrong: int) -> None:
    """A refused connect must not leave its own count behind (on the meta of the other layout):
    that marker would make every later connect with the board's real count fail."""
    url, name = f"memory://sharding-{unique_board()}", unique_board()
    async with await Board.connect(url, board=name, shards=created) as board:
        await board.post(GOAL, {"n": 1})
    with pytest.raises(InvalidInput, match=f"created with {created} shard"):
        await Board.connect(url, board=name, shards=wrong)
    async with await Board.connect(url, board=name, shards=created) as board:
        assert board.shards == created


def snapshot(ports: list[int], board: str) -> dict[str, bytes | None]:
    """Every key of the board with its serialized value."""
    out: dict[str, bytes | None] = {}
    for port, keys in board_keys(ports, board).items():
        with redis.Redis(port=port) as r:
            out.update({k: r.dump(k) for k in keys})
    return out


@pytest.mark.redis_only
@pytest.mark.parametrize("wrong", [3, 1])
@pytest.mark.timeout(120)
async def test_daemon_with_another_shard_count_exits_and_writes_nothing(
    cluster: list[RedisServer], tmp_path: Path, wrong: int
) -> None:
    url, name = cluster_url(cluster), unique_board()
    write_plugin(tmp_path / "agents", tmp_path / "records", lease=30.0)
    async with await Board.connect(url, board=name, shards=6) as board:
        await post_goals(board, 120)
    before = snapshot([n.port for n in cluster], name)
    assert len({k[: k.index("}") + 1] for k in before}) == 6  # goals on every shard
    assert f"{{bb:{name}:0}}:meta" in before and f"{{bb:{name}}}:meta" not in before
    daemon = DaemonProc(
        tmp_path / "daemon", url, name, [tmp_path / "agents"], env={"BLACKBOARD_SHARDS": str(wrong)}
    )
    daemon.start()
    try:
        code = await daemon.wait_exit(60)
        assert code != 0, daemon.log_tail()
        log = daemon.log_path.read_text()
        assert f"created with 6 shard(s), not {wrong}" in log, log[-3000:]
        assert not Records.read(tmp_path / "records").starts  # no handler ran
        assert snapshot([n.port for n in cluster], name) == before
    finally:
        daemon.kill()


@pytest.mark.timeout(60)
async def test_a_burst_of_goals_spreads_over_the_shards() -> None:
    """Goals posted in one call (ids made within a millisecond, where python-ulid counts up from
    one random value) still spread over every shard."""
    async with await Board.connect(
        f"memory://sharding-{unique_board()}", board=unique_board(), shards=6
    ) as b:
        posted = await b.post_many([NewItem(kind=GOAL, payload={"n": i}) for i in range(300)])
        by_shard = Counter(b.keys_of(it.id).index for it in posted)
        assert all(by_shard[i] >= 20 for i in range(6)), by_shard  # 50 each expected
