"""Benchmarks of a board against the performance targets in DESIGN.md.

    python -m blackboard.bench --redis redis://127.0.0.1:6379 [--scale 1] [--only NAME,...]

prints one JSON object on stdout (progress goes to stderr). Each measurement runs on a fresh
board with a unique name, whose keys are deleted afterwards. Metrics:

    post_rate                 items/s posting N items (scale * 50,000) with post_many batches of 500
    drain_rate                items/s of one task draining them: claim(n=200) + complete_many
    chain_3hop                p50/p99 ms from posting a goal A to its C being done, A->B->C run by
                              three blocking workers (one per kind)
    pickup_ms                 p50/p99 ms from post to claim for an idle worker blocked in
                              wait_for_work
    idle_cpu_100_workers      client and server CPU % while 100 workers block on their own kinds;
                              then one post on that same board (post_while_all_blocked)
    claim_latency_1k_vs_1m    claim(n=1) p50 ms on a kind with 1,000 open items vs 1,000,000

Workers use the blocking pattern of a daemon: claim; when there is nothing, block in
`wait_for_work` until a post wakes them (or the next lease/retry comes due), never poll.

A benchmark is a measurement, not a test: numbers depend on the machine, and `meets_target` only
compares them with the design's targets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from blackboard import __version__, ids
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


def redact(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    netloc = (f"{user}:***@" if ":" in userinfo else f"{user}@") + hosts
    return urlunsplit(parts._replace(netloc=netloc))


# -- boards -------------------------------------------------------------------------------


async def _fresh_board(url: str, what: str, **options: Any) -> Board:
    name = f"bench-{what}-{os.getpid()}-{next(_seq)}-{time.time_ns() % 10**9}"
    return await Board.connect(url, board=name[:64], **options)


async def _drop(board: Board) -> None:
    """Delete every key of `board` (UNLINK: freed in the background on a real Redis)."""
    with suppress(Exception):
        kinds = await board.kinds()
        keys = [*board.keys.fixed, board.keys.schemas]
        keys += [k for kind in kinds for k in board.keys.kind_keys(kind)]
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


async def _info(board: Board, section: str) -> dict[str, Any] | None:
    """INFO `section` of a real Redis (None for fakeredis, which has no INFO)."""
    try:
        info = await board.redis.info(section)
    except Exception:
        return None
    if isinstance(info, dict) and info and all(isinstance(v, dict) for v in info.values()):
        info = next(iter(info.values()))  # a cluster client answers per node
    return dict(info) if isinstance(info, dict) else None


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


# -- measurements -------------------------------------------------------------------------


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


async def bench_post_and_drain(url: str, scale: float, want: set[str]) -> dict[str, Any]:
    n = max(10, int(50_000 * scale))
    board = await _fresh_board(url, "queue")
    out: dict[str, Any] = {}
    try:
        _progress(f"post_rate: posting {n} items in batches of 500")
        secs = await _post_n(board, "bench.queue", n, 500)
        if "post_rate" in want:
            out["post_rate"] = {
                "items": n, "batch": 500, "seconds": round(secs, 3),
                "items_per_s": round(n / secs, 1), "target": TARGETS["post_rate"],
                "meets_target": None,
            }  # fmt: skip
        if "drain_rate" in want:
            _progress(f"drain_rate: draining {n} items with claim(n=200) + complete_many")
            drained = 0
            t0 = time.perf_counter()
            while claims := await board.claim("drainer", ["bench.queue"], n=200, lease=60.0):
                await board.complete_many([(c, None, ()) for c in claims])
                drained += len(claims)
            secs = time.perf_counter() - t0
            rate = drained / secs
            out["drain_rate"] = {
                "items": drained, "batch": 200, "seconds": round(secs, 3),
                "items_per_s": round(rate, 1), "target": TARGETS["drain_rate"],
                "meets_target": rate >= 10_000,
            }  # fmt: skip
    finally:
        await _drop(board)
    return out


async def bench_chain(url: str, scale: float) -> dict[str, Any]:
    goals = max(5, int(500 * scale))
    warmup = min(20, goals)
    board = await _fresh_board(url, "chain")
    done: dict[str, anyio.Event] = {}
    finished: dict[str, float] = {}

    def forward(next_kind: str) -> Handler:
        async def handle(c: Claim, _t: float) -> None:
            await board.complete(c, None, [NewItem(kind=next_kind, payload=c.item.payload)])

        return handle

    async def last(c: Claim, _t: float) -> None:
        await board.complete(c, None)
        finished[c.item.root] = time.perf_counter()
        done[c.item.root].set()

    async def run_goal() -> float:
        goal_id = ids.new_id()
        done[goal_id] = anyio.Event()
        t0 = time.perf_counter()
        await board.post("bench.a", {"goal": goal_id}, id=goal_id)
        with anyio.fail_after(30):
            await done[goal_id].wait()
        return finished.pop(goal_id) - t0

    _progress(f"chain_3hop: {goals} goals through A->B->C ({warmup} warm-up)")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, board, "bench-a", ["bench.a"], forward("bench.b"))
            tg.start_soon(worker, board, "bench-b", ["bench.b"], forward("bench.c"))
            tg.start_soon(worker, board, "bench-c", ["bench.c"], last)
            for _ in range(warmup):
                await run_goal()
            lat = [await run_goal() for _ in range(goals)]
            tg.cancel_scope.cancel()
    finally:
        await _drop(board)
    summary = _ms_summary(lat)
    return {
        **summary, "warmup": warmup, "target": TARGETS["chain_3hop"],
        "meets_target": summary["p50_ms"] <= 3,
    }  # fmt: skip


async def bench_pickup(url: str, scale: float) -> dict[str, Any]:
    samples = max(5, int(200 * scale))
    warmup = min(10, samples)
    board = await _fresh_board(url, "pickup")
    idle = anyio.Event()
    picked = anyio.Event()
    claimed_at: dict[str, float] = {}
    blocked_before = await _blocked_clients(board) or 0

    def on_idle() -> None:
        idle.set()

    async def handle(c: Claim, t: float) -> None:
        claimed_at[c.id] = t
        picked.set()
        await board.complete(c, None)

    async def sample() -> float:
        nonlocal idle, picked
        with anyio.fail_after(30):
            await idle.wait()
            await _until_blocked(board, blocked_before + 1)
        idle, picked = anyio.Event(), anyio.Event()
        item_id = ids.new_id()
        t0 = time.perf_counter()
        await board.post("bench.pickup", None, id=item_id)
        with anyio.fail_after(30):
            await picked.wait()
        return claimed_at.pop(item_id) - t0

    _progress(f"pickup_ms: {samples} posts to a worker blocked in wait_for_work ({warmup} warm-up)")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(worker, board, "bench-pickup", ["bench.pickup"], handle, on_idle=on_idle))
            for _ in range(warmup):
                await sample()
            lat = [await sample() for _ in range(samples)]
            tg.cancel_scope.cancel()
    finally:
        await _drop(board)
    summary = _ms_summary(lat)
    return {
        **summary, "warmup": warmup, "target": TARGETS["pickup_ms"],
        "meets_target": summary["p50_ms"] <= 2,
    }  # fmt: skip


def _server_cpu(info: dict[str, Any] | None, suffix: str = "") -> float | None:
    """CPU seconds of the server from INFO cpu: all threads, or with `suffix` "_main_thread"."""
    if not info or f"used_cpu_sys{suffix}" not in info:
        return None
    return float(info[f"used_cpu_sys{suffix}"]) + float(info[f"used_cpu_user{suffix}"])


def _local_server_process(url: str, pid: int | None) -> Any:
    """A psutil handle on the redis-server process when it runs on this machine, else None."""
    host = urlsplit(url).hostname or ""
    if pid is None or not (url.startswith("unix:") or host in ("127.0.0.1", "localhost", "::1")):
        return None
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc if "redis" in proc.name().lower() else None
    except Exception:
        return None


class _CpuClock:
    """CPU seconds used so far by this process and by the Redis server.

    The server's come from INFO cpu (any real Redis), and from psutil too when the server runs on
    this machine; fakeredis runs inside this process, so there the client's figure includes it.
    """

    def __init__(self, probe: Board, proc: Any) -> None:
        self.probe, self.proc = probe, proc

    async def read(self) -> dict[str, float | None]:
        info = await _info(self.probe, "cpu")
        local = None
        if self.proc is not None:
            with suppress(Exception):
                t = self.proc.cpu_times()
                local = t.user + t.system
        return {
            "wall": time.perf_counter(),
            "client": time.process_time(),
            "server": _server_cpu(info),
            "server_main": _server_cpu(info, "_main_thread"),
            "server_psutil": local,
        }


def _pct(a: float | None, b: float | None, wall: float) -> float | None:
    return None if a is None or b is None else round(100 * (b - a) / wall, 3)


async def _post_then_pickup(
    board: Board, kind: str, picked: anyio.Event, at: dict[str, float], limit: float
) -> dict[str, Any]:
    """Post one item to `kind`; time the post call and the pickup by its blocked worker."""
    item_id = ids.new_id()
    t0 = time.perf_counter()
    posted = None
    try:
        with anyio.fail_after(limit):
            await board.post(kind, None, id=item_id)
            posted = time.perf_counter()
            await picked.wait()
    except Exception as e:  # TimeoutError, or BoardUnavailable after reconnect_timeout
        return {
            "ok": False,
            "error": f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__} after {limit}s",
            "post_ms": round((posted - t0) * 1000, 3) if posted else None,
            "waited_s": round(time.perf_counter() - t0, 3),
        }
    return {
        "ok": True,
        "post_ms": round((posted - t0) * 1000, 3),
        "pickup_ms": round((at[item_id] - t0) * 1000, 3),
    }


async def bench_idle_cpu(url: str, scale: float, workers: int = 100) -> dict[str, Any]:
    window = 3.0 if scale >= 1 else max(0.5, 3.0 * scale)
    wait_timeout = WAIT_TIMEOUT if scale >= 1 else window + 1.0
    redis_errors: list[str] = []
    board = await _fresh_board(
        url, "idle", on_redis_error=lambda e: redis_errors.append(f"{type(e).__name__}: {e}")
    )
    # INFO goes through a client of its own: the board's pool may be all blocked in BLPOP.
    probe = await _fresh_board(url, "probe")
    idle_seen: set[int] = set()
    all_idle, picked = anyio.Event(), anyio.Event()
    picked_at: dict[str, float] = {}
    claims_in_window = 0
    measuring = False

    def on_idle(i: int) -> Callable[[], None]:
        def mark() -> None:
            idle_seen.add(i)
            if len(idle_seen) == workers:
                all_idle.set()

        return mark

    def on_claim() -> None:
        nonlocal claims_in_window
        claims_in_window += measuring

    async def handle(c: Claim, t: float) -> None:
        picked_at[c.id] = t
        picked.set()
        await board.complete(c, None)

    server = await _info(probe, "server")
    pid = int(server["process_id"]) if server and "process_id" in server else None
    clock = _CpuClock(probe, _local_server_process(url, pid))
    blocked_before = await _blocked_clients(probe)
    fake = blocked_before is None  # fakeredis: no INFO
    _progress(f"idle_cpu_100_workers: {workers} workers blocked in wait_for_work for {window:.1f}s")
    try:
        async with anyio.create_task_group() as tg:
            for i in range(workers):
                tg.start_soon(partial(
                    worker, board, f"idle-{i}", [f"bench.idle.w{i}"], handle,
                    on_idle=on_idle(i), on_claim=on_claim, wait_timeout=wait_timeout,
                ))  # fmt: skip
            with anyio.fail_after(60):
                await all_idle.wait()
            await _until_blocked(probe, (blocked_before or 0) + workers, timeout=10)
            blocked = await _blocked_clients(probe)
            measuring = True
            before = await clock.read()
            await anyio.sleep(window)
            after = await clock.read()
            measuring = False
            _progress("idle_cpu_100_workers: one post on the same board while all workers block")
            limit = 10.0 if scale >= 1 else 1.0
            busy = await _post_then_pickup(board, "bench.idle.w0", picked, picked_at, limit)
            busy["redis_errors"] = len(redis_errors)
            busy["first_redis_error"] = redis_errors[0] if redis_errors else None
            tg.cancel_scope.cancel()
    finally:
        await _drop(board)
        if fake:
            # fakeredis serves a cancelled client's BLPOP until its timeout, rechecking it on
            # every write: let those lapse before the next measurement in this process.
            await anyio.sleep(wait_timeout)
        await probe.close()
    wall = after["wall"] - before["wall"]  # type: ignore[operator]
    pct = {k: _pct(before[k], after[k], wall) for k in before if k != "wall"}
    client_pct = pct["client"] or 0.0
    # The main thread serves the clients; the process figure also counts background threads
    # (jemalloc purging, lazy freeing), which is housekeeping, not the workers' doing.
    server_pct = pct["server_main"] if pct["server_main"] is not None else pct["server"]
    meets = client_pct <= IDLE_CPU_LIMIT and (server_pct is None or server_pct <= IDLE_CPU_LIMIT)
    return {
        "workers": workers,
        "window_s": round(wall, 3),
        "wait_timeout_s": wait_timeout,
        "client_cpu_percent": client_pct,
        "server_cpu_percent": server_pct,
        "server_process_cpu_percent": pct["server"],
        "server_cpu_percent_psutil": pct["server_psutil"],
        "server_pid": pid,
        "blocked_clients": blocked,
        "claims_during_window": claims_in_window,
        "pool_max_connections": getattr(board.redis.connection_pool, "max_connections", None),
        "post_while_all_blocked": busy,
        "note": "in-process fakeredis: client CPU includes it" if fake else None,
        "target": TARGETS["idle_cpu_100_workers"],
        "meets_target": meets,
    }


async def _claim_latencies(board: Board, kind: str, samples: int) -> tuple[list[float], list[float]]:
    claim_s: list[float] = []
    complete_s: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        claims = await board.claim("bench-lat", [kind], n=1, lease=30.0)
        t1 = time.perf_counter()
        await board.complete(claims[0], None)
        complete_s.append(time.perf_counter() - t1)
        claim_s.append(t1 - t0)
    return claim_s, complete_s


async def _claim_latency_at(url: str, open_items: int, samples: int, warmup: int) -> dict[str, Any]:
    board = await _fresh_board(url, f"claim{open_items}")
    try:
        _progress(f"claim_latency: posting {open_items} open items (post_many batches of 1000)")
        secs = await _post_n(board, "bench.lat", open_items, 1000, concurrency=4)
        mem = await _info(board, "memory")
        await _claim_latencies(board, "bench.lat", warmup)
        claim_s, complete_s = await _claim_latencies(board, "bench.lat", samples)
    finally:
        await _drop(board)
    out = _ms_summary(claim_s)
    return {
        "open_items": open_items,
        "fill_seconds": round(secs, 3),
        "fill_items_per_s": round(open_items / secs, 1),
        "used_memory_bytes": int(mem["used_memory"]) if mem and "used_memory" in mem else None,
        **out,
        "complete_p50_ms": round(percentile([s * 1000 for s in complete_s], 50), 3),
    }


async def bench_claim_latency(url: str, scale: float) -> dict[str, Any]:
    small = 1_000
    big = max(int(1_000_000 * scale), 100_000 if scale >= 1 else 0, 2 * small)
    samples = max(20, min(200, int(200 * scale)))
    warmup = 10
    lo = await _claim_latency_at(url, small, samples, warmup)
    hi = await _claim_latency_at(url, big, samples, warmup)
    ratio = hi["p50_ms"] / lo["p50_ms"] if lo["p50_ms"] > 0 else math.inf
    return {
        "small": lo,
        "large": hi,
        "ratio_p50": round(ratio, 3),
        "target": TARGETS["claim_latency_1k_vs_1m"],
        "meets_target": ratio <= 2,
    }


# -- the whole run ------------------------------------------------------------------------


async def _environment(url: str, scale: float) -> dict[str, Any]:
    import redis

    board = await _fresh_board(url, "env")
    try:
        server = await _info(board, "server")
    finally:
        await board.close()
    try:
        from redis.utils import HIREDIS_AVAILABLE as hiredis
    except ImportError:  # pragma: no cover
        hiredis = False
    return {
        "url": redact(url),
        "scale": scale,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "blackboard_version": __version__,
        "redis_version": server.get("redis_version") if server else "fakeredis (in-process)",
        "redis_py_version": redis.__version__,
        "hiredis": bool(hiredis),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": _loadavg(),
        "git": _git_revision(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def _git_revision() -> str | None:
    """The checkout's commit (with "-dirty" for local changes), when run from a git checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


async def run_bench(url: str, *, scale: float = 1.0, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks (all, or those named in `only`) against `url`; returns the report."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    want = set(only) if only else set(METRICS)
    unknown = want - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; expected some of {list(METRICS)}")
    report = await _environment(url, scale)
    metrics: dict[str, Any] = {}
    if want & {"post_rate", "drain_rate"}:
        metrics.update(await bench_post_and_drain(url, scale, want))
    if "chain_3hop" in want:
        metrics["chain_3hop"] = await bench_chain(url, scale)
    if "pickup_ms" in want:
        metrics["pickup_ms"] = await bench_pickup(url, scale)
    # Before the million-item board, whose freeing keeps Redis's background threads busy.
    if "idle_cpu_100_workers" in want:
        metrics["idle_cpu_100_workers"] = await bench_idle_cpu(url, scale)
    if "claim_latency_1k_vs_1m" in want:
        metrics["claim_latency_1k_vs_1m"] = await bench_claim_latency(url, scale)
    report["metrics"] = {name: metrics[name] for name in METRICS if name in metrics}
    verdicts = [m["meets_target"] for m in metrics.values() if m["meets_target"] is not None]
    report["all_meet_target"] = all(verdicts)
    report["load_average_at_end"] = _loadavg()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m blackboard.bench",
        description="Benchmark a board; prints one JSON object on stdout.",
    )
    parser.add_argument("--redis", default="memory://bench", help="board URL (default memory://bench)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply sample sizes (default 1)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(METRICS)}")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if bad := [n for n in only if n not in METRICS]:
        parser.error(f"--only: unknown metric(s) {', '.join(bad)}; expected some of {', '.join(METRICS)}")
    if not args.scale > 0:
        parser.error(f"--scale: expected a number > 0, got {args.scale}")
    report = anyio.run(lambda: run_bench(args.redis, scale=args.scale, only=only or None))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
