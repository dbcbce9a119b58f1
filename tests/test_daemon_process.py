"""The daemon as a real process (`python -m blackboard run`) against a real redis-server.

Signals and graceful shutdown, a daemon killed with SIGKILL mid-handler while another carries on,
hot reload of plugin files, and Redis going away and coming back. Agents are plugin files the
tests write; their handlers record every attempt to files and wait for a gate file, so each test
decides when work finishes and waits on conditions (files, /readyz, the board), never on sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blackboard import Board, Item, Status
from tests.conftest import unique_board
from tests.support import redis_server
from tests.support.daemon_proc import DaemonProc, Gated, eventually, gated_plugin, write_atomically
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis_only]

KIND = "proc.job"
Spawn = Callable[..., DaemonProc]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis_server.require()
    srv = RedisServer(tmp_path / "redis").start()
    yield srv
    srv.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start daemons; whatever still runs at the end is killed by its PID. Their logs are
    printed, so a failing test shows them."""
    started: list[DaemonProc] = []

    def make(url: str, board: str, agents: list[Path], **options: object) -> DaemonProc:
        d = DaemonProc(tmp_path / "daemons", url, board, agents, **options).start()  # type: ignore[arg-type]
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
    for d in started:
        print(d.log_tail(200))


def item_ids(key: str) -> str:
    return key.rsplit(".", 1)[0]


async def items(board: Board, ids: list[str]) -> list[Item]:
    found = await board.get_many(ids)
    assert all(it is not None for it in found)
    return [it for it in found if it is not None]


async def all_done(board: Board, ids: list[str]) -> bool:
    return all(it.status is Status.DONE for it in await items(board, ids))


def assert_released(item: Item) -> None:
    """Given back untouched: open, attempt not counted, no lease left."""
    assert (item.status, item.attempts) == (Status.OPEN, 0), item
    assert (item.lease_owner, item.lease_token, item.lease_deadline) == (None, None, None), item


async def nothing_claimed(board: Board) -> None:
    stats = (await board.stats()).kinds[KIND]
    assert stats.by_status.get(Status.CLAIMED, 0) == 0, stats
    assert stats.leased == 0, stats


async def start_with_work(
    server: RedisServer,
    spawn: Spawn,
    tmp_path: Path,
    board: Board,
    *,
    grace: float,
    n: int = 6,
    concurrency: int = 3,
) -> tuple[DaemonProc, Gated, list[str], set[str]]:
    """A daemon whose gated agent holds `concurrency` of `n` posted items in flight."""
    gated = gated_plugin(
        tmp_path / "agents", tmp_path, name="worker", kind=KIND, concurrency=concurrency, work=1.0
    )
    d = spawn(server.url, board.name, [tmp_path / "agents"], grace=grace)
    await d.wait_ready()
    ids = [(await board.post(KIND, {"n": i})).id for i in range(n)]
    await eventually(lambda: len(gated.started()) == concurrency, 20, f"{concurrency} handlers to start")
    in_flight = {item_ids(k) for k in gated.started()}
    claimed = {it.id for it in await items(board, ids) if it.status is Status.CLAIMED}
    assert claimed == in_flight
    return d, gated, ids, in_flight


# -- 1. SIGTERM: in-flight work finishes within the grace period, or is given back -----------------


@pytest.mark.timeout(45)
async def test_sigterm_lets_in_flight_handlers_finish_and_leaves_the_rest_open(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    async with await Board.connect(server.url, board=unique_board()) as board:
        # Given a daemon running 3 of 6 items, each handler about a second of work from its end
        d, gated, ids, in_flight = await start_with_work(server, spawn, tmp_path, board, grace=30)

        # When it gets SIGTERM
        d.send(signal.SIGTERM)

        # Then it turns unready and stops claiming, while still alive and finishing its work
        await d.wait_status("/readyz", 503)
        assert d.alive()
        assert await d.status("/healthz") == 200
        gated.open()
        began = time.monotonic()
        # ... and exits cleanly once its handlers are done, well within the grace period
        assert await d.wait_exit(20) == 0
        assert time.monotonic() - began < 20

        final = {it.id: it for it in await items(board, ids)}
        for item_id in in_flight:  # finished, once
            assert (final[item_id].status, final[item_id].attempts) == (Status.DONE, 1), final[item_id]
            assert final[item_id].result == {"pid": d.pid, "attempt": 1}
        for item_id in set(ids) - in_flight:  # never claimed after the signal: still open, untouched
            assert_released(final[item_id])
        assert {item_ids(k) for k in gated.finished()} == in_flight
        assert {item_ids(k) for k in gated.started()} == in_flight
        await nothing_claimed(board)
        events = [e.get("event") for e in d.log_events()]
        assert "signal received; draining" in events and "daemon stopped" in events


@pytest.mark.timeout(45)
async def test_sigterm_releases_handlers_still_running_when_the_grace_period_ends(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    async with await Board.connect(server.url, board=unique_board()) as board:
        # Given a daemon with a 0.5 s grace period, running 3 of 6 items whose handlers never end
        d, gated, ids, in_flight = await start_with_work(server, spawn, tmp_path, board, grace=0.5)

        # When it gets SIGTERM
        began = time.monotonic()
        d.send(signal.SIGTERM)

        # Then it exits cleanly shortly after the grace period ...
        assert await d.wait_exit(15) == 0
        took = time.monotonic() - began
        assert 0.4 <= took < 15, took

        # ... having given the in-flight items back: open, attempt not counted, lease cleared
        for it in await items(board, ids):
            assert_released(it)
        assert gated.finished() == {}
        await nothing_claimed(board)
        events, _ = await board.read_events("0-0", count=10_000)
        assert {e.id for e in events if e.type == "released"} == in_flight


# -- 2. a second signal skips the grace period, but still gives leases back ------------------------


@pytest.mark.timeout(45)
async def test_second_sigterm_skips_the_grace_period_and_still_releases(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    async with await Board.connect(server.url, board=unique_board()) as board:
        # Given a daemon with a 60 s grace period, running 3 items whose handlers never end
        d, gated, ids, in_flight = await start_with_work(server, spawn, tmp_path, board, grace=60)

        # When it gets SIGTERM, and once it is draining, SIGTERM again
        d.send(signal.SIGTERM)
        await d.wait_status("/readyz", 503)
        began = time.monotonic()
        d.send(signal.SIGTERM)

        # Then it exits cleanly at once, long before the grace period is over ...
        assert await d.wait_exit(15) == 0
        assert time.monotonic() - began < 15

        # ... and gave every in-flight item back
        for it in await items(board, ids):
            assert_released(it)
        assert gated.finished() == {}
        await nothing_claimed(board)
        events, _ = await board.read_events("0-0", count=10_000)
        assert {e.id for e in events if e.type == "released"} == in_flight
        assert "second signal; releasing in-flight work now" in [e.get("event") for e in d.log_events()]


# -- 3. kill -9: the other daemon takes over once the dead one's leases expire ---------------------


@pytest.mark.timeout(60)
async def test_killed_daemon_work_is_completed_once_by_the_other_daemon(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    async with await Board.connect(server.url, board=unique_board()) as board:
        # Given two daemons on one board running the same agent (concurrency 2, 2 s leases)
        gated = gated_plugin(
            tmp_path / "agents", tmp_path, name="worker", kind=KIND, concurrency=2, lease=2.0
        )
        first = spawn(server.url, board.name, [tmp_path / "agents"])
        second = spawn(server.url, board.name, [tmp_path / "agents"])
        await first.wait_ready()
        await second.wait_ready()
        ids = [(await board.post(KIND, {"n": i})).id for i in range(6)]
        # ... each running two items (whose handlers wait for the gate)
        await eventually(lambda: len(gated.started()) == 4, 20, "4 handlers to start")
        by_pid: dict[int, set[str]] = {}
        for key, pid in gated.started().items():
            by_pid.setdefault(pid, set()).add(item_ids(key))
        assert {pid: len(s) for pid, s in by_pid.items()} == {first.pid: 2, second.pid: 2}
        killed = by_pid[first.pid]

        # When the first is killed with SIGKILL mid-handler (no chance to release anything)
        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL
        for it in await items(board, list(killed)):
            assert (it.status, it.lease_owner) == (Status.CLAIMED, "worker"), it
        gated.open()

        # Then the second daemon completes every item, the dead one's after their leases expire
        await eventually(lambda: all_done(board, ids), 30, "every item done")
        final = {it.id: it for it in await items(board, ids)}
        finished = gated.finished()
        assert sorted(item_ids(k) for k in finished) == sorted(ids)  # each completed exactly once
        assert set(finished.values()) == {second.pid}
        for item_id in ids:
            attempt = 2 if item_id in killed else 1
            assert (final[item_id].status, final[item_id].attempts) == (Status.DONE, attempt), final[item_id]
            assert final[item_id].result == {"pid": second.pid, "attempt": attempt}
            assert f"{item_id}.{attempt}" in finished
        started = gated.started()
        for item_id in killed:  # started twice: by the killed daemon, then by the survivor
            assert (started[f"{item_id}.1"], started[f"{item_id}.2"]) == (first.pid, second.pid)
        events, _ = await board.read_events("0-0", count=10_000)
        done_events = sorted(e.id for e in events if e.type == "done")
        assert done_events == sorted(ids)  # one completion per item on the board
        assert {e.id for e in events if e.type == "expired"} == killed
        await nothing_claimed(board)

        second.send(signal.SIGTERM)
        assert await second.wait_exit(15) == 0


# -- 4. hot reload ----------------------------------------------------------------------------------

STEADY = """\
from blackboard import agent


@agent(name="steady", consumes=["steady.job"])
async def steady(item, ctx):
    return {"steady": item.payload}
"""

GREETER = """\
from blackboard import agent


@agent(name="greeter", consumes=["greet.job"], concurrency={concurrency})
async def greet(item, ctx):
    return {{"says": {says!r}}}
"""

BROKEN = """\
from blackboard import agent

def oops(:
    pass
"""


async def wait_done(board: Board, item: Item, timeout: float = 15) -> Item:
    async def check() -> Item | None:
        it = await board.get(item.id)
        return it if it.status is Status.DONE else None

    return await eventually(check, timeout, f"{item.kind} {item.id} to be done")


@pytest.mark.timeout(60)
async def test_hot_reload_adds_changes_removes_and_survives_broken_plugins(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    write_atomically(folder / "steady.py", STEADY)
    plugin = folder / "greeter.py"
    async with await Board.connect(server.url, board=unique_board()) as board:
        d = spawn(server.url, board.name, [folder], reload=True)
        await d.wait_ready()
        assert await eventually(d.agent_names, 10, "the daemon's presence") == {"steady"}

        async def greeter(concurrency: int | None = None) -> dict[str, Any] | None:
            """The greeter agent in this daemon's presence record (with that concurrency)."""
            for rec in await d.presence():
                for a in rec["agents"]:
                    if a["name"] == "greeter" and concurrency in (None, a["concurrency"]):
                        return a  # type: ignore[no-any-return]
            return None

        # (a) a new plugin file: its agent starts and takes work
        write_atomically(plugin, GREETER.format(concurrency=1, says="hello v1"))
        info = await eventually(greeter, 15, "greeter to appear in /v1/agents")
        assert info["consumes"] == ["greet.job"] and info["source"] == str(plugin)
        done = await wait_done(board, await board.post("greet.job", {"n": 1}))
        assert done.result == {"says": "hello v1"}

        # (b) the file changes: new items get the new behaviour. The new version has the same
        # size and the same mtime (an editor saving twice in one second, `cp -p`, `rsync -t`), so
        # any cache keyed on (mtime, size), such as __pycache__, would serve the old code.
        mtime = plugin.stat().st_mtime_ns
        write_atomically(plugin, GREETER.format(concurrency=2, says="hello v2"))
        os.utime(plugin, ns=(mtime, mtime))
        await eventually(lambda: greeter(concurrency=2), 15, "greeter v2 in /v1/agents")
        done = await wait_done(board, await board.post("greet.job", {"n": 2}))
        assert done.result == {"says": "hello v2"}

        # (c) the file is deleted: the agent stops, and new items of its kind stay open
        plugin.unlink()
        await eventually(lambda: gone(greeter), 15, "greeter to leave /v1/agents")
        orphan = await board.post("greet.job", {"n": 3})
        await wait_done(board, await board.post("steady.job", {"n": 3}))  # the daemon is working...
        orphan = await board.get(orphan.id)
        assert (orphan.status, orphan.attempts) == (Status.OPEN, 0)  # ... but nobody takes this one

        # (d) a broken plugin: reported with its file and line; the daemon stays up and working
        broken = folder / "broken.py"
        write_atomically(broken, BROKEN)

        async def plugin_errors() -> dict[str, str]:
            return {k: v for rec in await d.presence() for k, v in rec["plugin_errors"].items()}

        errors = await eventually(plugin_errors, 15, "the broken plugin in plugin_errors")
        assert list(errors) == [str(broken)]
        assert "SyntaxError" in errors[str(broken)] and "line 3)" in errors[str(broken)], errors
        assert await d.status("/healthz") == 200
        assert await d.status("/readyz") == 200
        assert d.alive()
        failed_loads = await d.metric('blackboard_plugin_load_errors_total{plugin="broken.py"}')
        assert failed_loads is not None and failed_loads >= 1
        done = await wait_done(board, await board.post("steady.job", {"n": 4}))
        assert done.result == {"steady": {"n": 4}}
        assert await d.agent_names() == {"steady"}

        # ... and once it is fixed, the error clears and its agent runs
        write_atomically(broken, STEADY.replace("steady", "mended"))
        await eventually(lambda: has_agent(d, "mended"), 15, "the mended agent")
        assert await plugin_errors() == {}
        done = await wait_done(board, await board.post("mended.job", {"n": 5}))
        assert done.result == {"mended": {"n": 5}}

        d.send(signal.SIGTERM)
        assert await d.wait_exit(15) == 0


async def gone(find: Callable[[], Awaitable[object]]) -> bool:
    return await find() is None


async def has_agent(d: DaemonProc, name: str) -> bool:
    return name in await d.agent_names()


# -- 5. Redis goes away: unready, not dead; it reconnects and nothing is lost ------------------------


@pytest.mark.timeout(60)
async def test_redis_outage_makes_the_daemon_unready_then_it_recovers_and_loses_nothing(
    spawn: Spawn, tmp_path: Path
) -> None:
    redis_server.require()
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        async with await Board.connect(server.url, board=unique_board()) as board:
            # Given a daemon running 2 of 4 items (their handlers wait for the gate), and an idle
            # agent of another kind blocked waiting for work
            gated = gated_plugin(tmp_path / "agents", tmp_path, name="worker", kind=KIND, concurrency=2)
            idle = gated_plugin(tmp_path / "agents", tmp_path, name="idle", kind="idle.job", gate_open=True)
            d = spawn(server.url, board.name, [tmp_path / "agents"])
            await d.wait_ready()
            ids = [(await board.post(KIND, {"n": i})).id for i in range(4)]
            await eventually(lambda: len(gated.started()) == 2, 20, "2 handlers to start")

            # When Redis goes away
            server.stop()

            # Then the daemon turns unready, but stays alive and healthy
            await d.wait_status("/readyz", 503, timeout=15)
            assert await d.status("/healthz") == 200
            assert d.alive()
            _, body = await d.get("/readyz")
            assert json.loads(body)["redis"] is False
            # ... and its handlers finish while Redis is away: their results must not be lost
            gated.open()
            await eventually(lambda: len(gated.finished()) == 2, 10, "the 2 handlers to finish")
            assert d.alive()

            # When Redis comes back (same port, same data)
            server.start()

            # Then the daemon is ready again and finishes every item posted before the outage
            await d.wait_ready(timeout=20)
            await eventually(lambda: all_done(board, ids), 30, "every item done after the outage")
            final = await items(board, ids)
            assert {(it.status, it.attempts) for it in final} == {(Status.DONE, 1)}
            assert sorted(item_ids(k) for k in gated.finished()) == sorted(ids)
            # ... and the agent that was idle through the outage takes new work again
            late = await wait_done(board, await board.post("idle.job", {"n": "late"}))
            assert late.result == {"pid": d.pid, "attempt": 1}
            assert [item_ids(k) for k in idle.finished()] == [late.id]
            reconnects = await d.metric("blackboard_redis_reconnects_total")
            assert reconnects is not None and reconnects >= 1
            assert d.alive()

            d.send(signal.SIGTERM)
            assert await d.wait_exit(15) == 0
    finally:
        server.stop()
