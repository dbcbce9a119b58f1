"""A load test: a large population of simulated agents against one board, in a few processes.

Each process runs many simulated agents on one board handle (one connection pool and one
blocking waker, as a daemon does). An agent claims one item, "thinks" for a random time
(exponential, mean `think`), completes it, and claims again; with nothing to claim it blocks
on the board's wake-ups like a real agent. A producer in the coordinating process posts items
at `rate` per second (default: what the agents can take, agents / think). At the end it reports
claims per second, items per claim call that got work, pickup latency (from an item becoming
claimable to its claim, both on the Redis clock), the processes' CPU, Redis's CPU (per master on
a cluster) and Redis memory per item.

`--batch N` makes each simulated agent a runner or gateway claiming up to N items per call, and
`--backlog N` posts N items before the start, so the run measures draining a queue.

Bounded in time and count, and loopback only: it is a measurement of this machine, not a tool
to load someone else's Redis.

    blackboard loadtest --redis redis://127.0.0.1:6379 --agents 2000 --processes 2 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from redis.asyncio.cluster import RedisCluster

from blackboard import connection
from blackboard.bench.support import _drop, _info, _info_nodes, percentile
from blackboard.board import Board
from blackboard.errors import InvalidInput, InvalidURL
from blackboard.keys import shard_keyspaces
from blackboard.models import Claim, NewItem, Status

KIND = "load.task"
MAX_AGENTS = 100_000
MAX_DURATION = 600.0
MAX_PROCESSES = 16
STARTUP_TIMEOUT = 120.0  # seconds for every simulated agent to look for work once
IDLE_WAIT = 30.0  # mean seconds an idle simulated agent blocks before it looks again anyway
MAX_BATCH = 1000
MAX_BACKLOG = 2_000_000
SAMPLE_CAP = 20_000  # pickup samples each process reports (a uniform sample beyond that)


def check_loopback(url: str) -> None:
    parts = urlsplit(url)
    try:
        local = all(host in connection.LOOPBACK for host, _ in connection.hosts(parts.netloc, url))
    except InvalidURL:
        local = False
    if parts.scheme not in ("redis", "redis+cluster") or not local:
        raise InvalidInput(
            "redis", f"the load test runs against a local redis:// or redis+cluster:// only, got {url!r}"
        )


# -- one process of simulated agents -----------------------------------------------------------


class _Pickups:
    """Pickup latencies (claimable to claimed, on the Redis clock): a uniform sample of at most
    SAMPLE_CAP, so a long run's report stays small."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.seen, self.sample = rng, 0, list[float]()

    def add(self, claims: list[Claim]) -> None:
        for claim in claims:
            if not (claim.item.ready_at and claim.item.claimed_at):
                continue
            self.seen += 1
            pickup = (claim.item.claimed_at - claim.item.ready_at) / 1000
            if len(self.sample) < SAMPLE_CAP:
                self.sample.append(pickup)
            elif (j := self.rng.randrange(self.seen)) < SAMPLE_CAP:
                self.sample[j] = pickup

    def reset(self) -> None:
        self.seen, self.sample = 0, []


async def simulate(
    url: str, board_name: str, agents: int, duration: float, think: float, seed: int, batch: int = 1
) -> dict[str, Any]:
    """Run `agents` simulated agents: once every one has looked for work (the start-up, not
    measured), print `ready` and run for `duration` seconds; returns this process's figures.
    With `batch` > 1 an agent stands for a runner or gateway: it claims up to `batch` items in
    one call, thinks once, and completes them in one call."""
    rng = random.Random(seed)
    pickups = _Pickups(rng)
    claims = calls = looked = before = calls_before = 0
    stop_at = float("inf")
    all_looked = anyio.Event()
    waiting: set[anyio.CancelScope] = set()
    board = await Board.connect(url, board=board_name)

    async def one(n: int) -> None:
        nonlocal claims, calls, looked
        name = f"sim-{os.getpid()}-{n}"
        first = True
        while time.monotonic() < stop_at:
            got = await board.claim(name, [KIND], n=batch, lease=60)
            if first:
                first, looked = False, looked + 1
                if looked == agents:
                    all_looked.set()
            if not got:
                # Woken by the board's token; the timeout only bounds a missed wake-up (jittered,
                # so thousands of idle agents don't all look again at the same moment).
                wait = min(IDLE_WAIT * rng.uniform(0.5, 1.5), stop_at - time.monotonic())
                with anyio.CancelScope() as idle:  # cancelled at the end: no work is lost by it
                    waiting.add(idle)
                    await board.wait_for_work([KIND], max(0.01, wait))
                waiting.discard(idle)
                continue
            claims, calls = claims + len(got), calls + 1
            pickups.add(got)
            await anyio.sleep(rng.expovariate(1 / think) if think > 0 else 0)
            if len(got) == 1:
                await board.complete(got[0], None, fetch_outputs=False)
            else:
                await board.complete_many([(c, None, ()) for c in got], fetch_outputs=False)

    try:
        async with anyio.create_task_group() as tg:
            for n in range(agents):
                tg.start_soon(one, n)
            await all_looked.wait()
            # With a backlog the first agents claim while the rest start: not measured.
            before, calls_before = claims, calls
            pickups.reset()
            cpu0, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            stop_at = started + duration
            print("ready", flush=True)
            await anyio.sleep(duration)
            for idle in list(waiting):  # those blocked for work stop now; the busy finish theirs
                idle.cancel()
    finally:
        await board.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - started
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "agents": agents,
        "claims": claims - before,
        "claim_calls": calls - calls_before,
        "pickups_s": pickups.sample,
        "cpu_s": cpu,
        "wall_s": wall,
    }


# -- the coordinator -------------------------------------------------------------------------


async def _board_name(url: str, shards: int) -> str:
    """A new board name; on a cluster, one whose shards' slots spread evenly over the masters.

    A shard's slot follows from its hash tag (CRC16), so 6 shards on 3 masters land 4/1/1 as
    often as 2/2/2; a measurement of the cluster should not depend on that draw (in production,
    move those slots, or use many more shards than masters: see docs/SCALING.md).
    """
    base = f"loadtest-{os.getpid()}-{time.time_ns() % 10**9}"
    client = connection.connect(url)
    try:
        if not isinstance(client, RedisCluster) or shards == 1:
            return base
        await client.initialize()
        masters = len(client.get_primaries())
        best, spread = base, shards + 1
        for n in range(200):
            name = f"{base}-{n}"
            on = Counter(str(client.get_node_from_key(k.tag)) for k in shard_keyspaces(name, shards))
            most = max(on.values()) if len(on) == min(masters, shards) else shards
            if most < spread:
                best, spread = name, most
            if spread <= -(-shards // masters):  # as even as it can be
                break
        return best
    finally:
        await connection.close(client)


async def _post(board: Board, first: int, count: int) -> None:
    await board.post_many([NewItem(kind=KIND, payload={"n": first + i}) for i in range(count)])


async def _prefill(board: Board, count: int) -> None:
    """Post `count` items before the agents start (the backlog they drain), 500 per call."""
    for first in range(0, count, 500):
        await _post(board, first, min(500, count - first))


async def _produce(board: Board, rate: float, stop_at: float, first: int = 0) -> int:
    """Post items at `rate` per second until `stop_at`, in batches every 50 ms."""
    posted, started = 0, time.monotonic()
    while (now := time.monotonic()) < stop_at:
        due = int((now - started) * rate) - posted
        if due > 0:
            await _post(board, first + posted, min(due, 5000))
            posted += min(due, 5000)
        await anyio.sleep(0.05)
    return posted


async def run_loadtest(
    url: str,
    *,
    agents: int = 2000,
    processes: int = 2,
    duration: float = 20.0,
    think: float = 0.5,
    rate: float | None = None,
    shards: int = 1,
    batch: int = 1,
    backlog: int = 0,
) -> dict[str, Any]:
    """Run the load test on a new board of `shards` shards; returns the report (one JSON object).

    `batch`: items an agent claims and completes per call (1: agent-style; more: a runner's
    batching). `backlog`: items posted before the agents start, so the run measures how fast
    they drain a queue rather than how fast one producer posts."""
    check_loopback(url)
    if not 1 <= agents <= MAX_AGENTS:
        raise InvalidInput("agents", f"expected 1-{MAX_AGENTS}, got {agents}")
    if not 1 <= processes <= MAX_PROCESSES:
        raise InvalidInput("processes", f"expected 1-{MAX_PROCESSES}, got {processes}")
    if not 0 < duration <= MAX_DURATION:
        raise InvalidInput("duration", f"expected 0-{MAX_DURATION} seconds, got {duration}")
    if think < 0:
        raise InvalidInput("think", f"expected seconds >= 0, got {think}")
    if not 1 <= batch <= MAX_BATCH:
        raise InvalidInput("batch", f"expected 1-{MAX_BATCH}, got {batch}")
    if not 0 <= backlog <= MAX_BACKLOG:
        raise InvalidInput("backlog", f"expected 0-{MAX_BACKLOG} items, got {backlog}")
    rate = rate if rate is not None else (agents / think if think > 0 else 10_000.0)
    name = await _board_name(url, shards)
    board = await Board.connect(url, board=name, shards=shards)
    shares = [agents // processes + (1 if i < agents % processes else 0) for i in range(processes)]
    mem0 = int((await _info(board, "memory") or {}).get("used_memory", 0))
    await _prefill(board, backlog)
    workers = [
        await anyio.open_process(
            [
                sys.executable,
                "-m",
                "blackboard.bench.loadtest",
                "worker",
                url,
                name,
                str(n),
                str(duration),
                str(think),
                str(i),
                str(batch),
            ],
            stderr=subprocess.DEVNULL,
        )
        for i, n in enumerate(shares)
        if n
    ]
    try:
        streams = [BufferedByteReceiveStream(p.stdout) for p in workers if p.stdout is not None]
        with anyio.fail_after(STARTUP_TIMEOUT):  # every agent has looked for work once
            for stream in streams:
                assert await stream.receive_until(b"\n", 64) == b"ready"
        cpu0 = await _info_nodes(board, "cpu")
        started = time.monotonic()
        posted = backlog + await _produce(board, rate, started + duration, first=backlog)
        outs = []
        for proc, stream in zip(workers, streams, strict=True):
            raw = b""
            with anyio.fail_after(duration + 60):
                with suppress(anyio.EndOfStream):
                    while True:
                        raw += await stream.receive()
                await proc.wait()
            outs.append(json.loads(raw.decode().strip().splitlines()[-1]))
        wall = time.monotonic() - started
        cpu1 = await _info_nodes(board, "cpu")
        mem1 = int((await _info(board, "memory") or {}).get("used_memory", 0))
        stats = await board.stats()
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
        await _drop_board(board)
    kinds = stats.kinds.get(KIND)
    done = kinds.by_status.get(Status.DONE, 0) if kinds else 0
    claims = sum(o["claims"] for o in outs)
    pickups = [p for o in outs for p in o["pickups_s"]]
    # Per master, in the order INFO answered (one entry on a single Redis, none on fakeredis).
    redis_cpu = [
        round(100 * sum(float(n1[k]) - float(n0[k]) for k in ("used_cpu_sys", "used_cpu_user")) / wall, 1)
        for n0, n1 in zip(cpu0, cpu1, strict=False)
        if "used_cpu_sys" in n0 and "used_cpu_sys" in n1
    ]
    return {
        "board": name,
        "agents": agents,
        "shards": shards,
        "processes": len(workers),
        "duration_s": duration,
        "think_s": think,
        "rate_target_per_s": round(rate, 1),
        "batch": batch,
        "backlog": backlog,
        "posted": posted,
        "claims": claims,
        "done": done,
        "claims_per_s": round(claims / wall, 1),
        "items_per_claim_call": round(claims / calls, 1)
        if (calls := sum(o["claim_calls"] for o in outs))
        else None,
        "pickup_ms": {
            "samples": len(pickups),
            **{f"p{p}": round(percentile(pickups, p) * 1000, 3) for p in (50, 95, 99)},
        },
        "client_cpu_percent_per_process": [round(100 * o["cpu_s"] / o["wall_s"], 1) for o in outs],
        "redis_cpu_percent": round(sum(redis_cpu), 1) if redis_cpu else None,
        "redis_cpu_percent_per_master": redis_cpu,
        "redis_bytes_per_item": round((mem1 - mem0) / posted) if posted else None,
        "wall_s": round(wall, 2),
    }


async def _drop_board(board: Board) -> None:
    try:
        await _drop(board)
    finally:
        await board.close()


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "worker":  # one process of agents, spawned by run_loadtest
        url, name, agents, duration, think, seed, batch = args[1:8]
        out = asyncio.run(
            simulate(url, name, int(agents), float(duration), float(think), int(seed), int(batch))
        )
        print(json.dumps(out), flush=True)
        return
    p = argparse.ArgumentParser(prog="python -m blackboard.bench.loadtest", description=__doc__)
    p.add_argument("--redis", default="redis://127.0.0.1:6379")
    p.add_argument("--agents", type=int, default=2000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--think", type=float, default=0.5)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backlog", type=int, default=0)
    a = p.parse_args(args)
    report = anyio.run(
        lambda: run_loadtest(
            a.redis,
            agents=a.agents,
            processes=a.processes,
            duration=a.duration,
            think=a.think,
            rate=a.rate,
            shards=a.shards,
            batch=a.batch,
            backlog=a.backlog,
        )
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
