"""Shared pieces of the benchmarks: boards, percentiles, the blocking worker loop."""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

import anyio
from redis.asyncio.cluster import RedisCluster

from blackboard.board import Board
from blackboard.models import Claim, NewItem

METRICS = (
    "post_rate",
    "drain_rate",
    "chain_3hop",
    "pickup_ms",
    "idle_cpu_100_workers",
    "claim_latency_1k_vs_1m",
)

# The targets of DESIGN.md ("a posted item is picked up within a millisecond or two", "an idle
# daemon with 100 idle agents uses ~0% CPU", ...), as the bench checks them.
TARGETS: dict[str, str | None] = {
    "post_rate": None,
    "drain_rate": "items_per_s >= 10000",
    "chain_3hop": "p50_ms <= 3",
    "pickup_ms": "p50_ms <= 2",
    "idle_cpu_100_workers": "~0%: client and server (main thread) each <= 1% of one core",
    "claim_latency_1k_vs_1m": "p50 with 1M open items <= 2x p50 with 1k (ratio <= 2)",
}

WAIT_TIMEOUT = 5.0  # the longest a worker blocks in wait_for_work before it claims again
IDLE_CPU_LIMIT = 1.0  # percent of one core that counts as "~0%"

_seq = itertools.count()


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0-100) of `values`, interpolated linearly between ranks."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ms_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    ms = [s * 1000 for s in seconds]
    return {
        "samples": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else math.nan,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else math.nan,
    }


# -- boards -------------------------------------------------------------------------------


async def _fresh_board(url: str, what: str, **options: Any) -> Board:
    name = f"bench-{what}-{os.getpid()}-{next(_seq)}-{time.time_ns() % 10**9}"
    return await Board.connect(url, board=name[:64], **options)


async def _drop(board: Board) -> None:
    """Delete every key of `board` (UNLINK: freed in the background on a real Redis)."""
    with suppress(Exception):
        kinds = await board.kinds()
        for shard in board.shard_keys:  # one shard at a time: one slot per UNLINK on a cluster
            keys = [*shard.fixed, shard.schemas, *(k for kind in kinds for k in shard.kind_keys(kind))]
            for i in range(0, len(keys), 100):
                await board.redis.unlink(*keys[i : i + 100])
        await _until_freed(board)
    with suppress(Exception):
        await board.close()


async def _until_freed(board: Board, timeout: float = 120.0) -> None:
    """Wait for Redis's background thread to free what UNLINK handed it.

    Freeing a million items keeps a core busy for seconds, which would show up in whatever the
    bench measures next (the idle CPU above all).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await _info(board, "memory")
        if not info or not int(info.get("lazyfree_pending_objects", 0)):
            return
        await anyio.sleep(0.05)


SUMMED = (
    "used_cpu_sys",
    "used_cpu_user",
    "used_memory",
    "lazyfree_pending_objects",
    "blocked_clients",
    "connected_clients",
)


async def _info_nodes(board: Board, section: str) -> list[dict[str, Any]]:
    """INFO `section` of every Redis master behind the board ([] for fakeredis, which has none).

    A cluster client must be told to ask every master: left to itself, redis-py 8 sends INFO
    to one random node, which made cluster figures a third of what they were.
    """
    try:
        if isinstance(board.redis, RedisCluster):
            info = await board.redis.info(section, target_nodes=RedisCluster.PRIMARIES)
        else:
            info = await board.redis.info(section)
    except Exception:
        return []
    if not isinstance(info, dict) or not info:
        return []
    if all(isinstance(v, dict) for v in info.values()):
        return [dict(node) for node in info.values()]
    return [dict(info)]


async def _info(board: Board, section: str) -> dict[str, Any] | None:
    """INFO `section` of a real Redis (None for fakeredis): on a cluster the first master's,
    with the load figures (`SUMMED`) added up over all masters."""
    nodes = await _info_nodes(board, section)
    if not nodes:
        return None
    info = dict(nodes[0])
    for key in SUMMED:
        if all(key in node for node in nodes):
            info[key] = sum(float(node[key]) for node in nodes)
    return info


async def _blocked_clients(board: Board) -> int | None:
    info = await _info(board, "clients")
    return int(info["blocked_clients"]) if info and "blocked_clients" in info else None


async def _until_blocked(board: Board, count: int, timeout: float = 2.0) -> None:
    """Wait until `count` clients are blocked (BLPOP) on the server, or `timeout`.

    fakeredis cannot say; there a short pause lets the workers reach their BLPOP.
    """
    if await _blocked_clients(board) is None:
        await anyio.sleep(0.005)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await _blocked_clients(board) or 0) >= count:
            return
        await anyio.sleep(0.0005)


# -- the worker loop ----------------------------------------------------------------------


Handler = Callable[[Claim, float], Awaitable[None]]


async def worker(
    board: Board,
    agent: str,
    kinds: Sequence[str],
    handle: Handler,
    *,
    on_idle: Callable[[], None] | None = None,
    on_claim: Callable[[], None] | None = None,
    wait_timeout: float = WAIT_TIMEOUT,
) -> None:
    """A daemon's claim loop: claim one; when there is none, block in `wait_for_work`.

    `handle(claim, t)` gets each claim and the `perf_counter()` right after the claim returned.
    `on_idle` runs just before each blocking wait, `on_claim` before each claim. Blocks at most
    `wait_timeout` s (less when a lease or retry comes due sooner). Runs until cancelled.
    """
    while True:
        if on_claim is not None:
            on_claim()
        claims, due = await board.claim_with_due(agent, kinds, n=1, lease=30.0)
        t = time.perf_counter()
        if claims:
            for c in claims:
                await handle(c, t)
            continue
        timeout = min(wait_timeout, due - time.time()) if due else wait_timeout
        if timeout > 0:
            if on_idle is not None:
                on_idle()
            await board.wait_for_work(kinds, timeout=timeout)


async def _post_n(board: Board, kind: str, n: int, batch: int, concurrency: int = 1) -> float:
    """Post `n` small items of `kind` in post_many batches; returns the seconds it took."""
    starts = list(range(0, n, batch))

    async def poster(mine: list[int]) -> None:
        for start in mine:
            items = [NewItem(kind=kind, payload={"i": i}) for i in range(start, min(start + batch, n))]
            await board.post_many(items)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(concurrency):
            tg.start_soon(poster, starts[w::concurrency])
    return time.perf_counter() - t0


# -- tracing on -----------------------------------------------------------------------------


class _Dropper:
    """A span exporter that counts what it is given and keeps nothing (a collector at zero cost)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def tracing_on() -> tuple[Any, _Dropper]:
    """Turn `blackboard.tracing` on as a daemon would (SDK provider, batch processor), with spans
    dropped at export. Needs blackboard[otel]."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from blackboard import tracing

    exporter = _Dropper()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    tracing.enable(provider)
    return provider, exporter


def tracing_off(provider: Any) -> None:
    from blackboard import tracing

    tracing.disable()
    provider.shutdown()  # exports what is still batched
