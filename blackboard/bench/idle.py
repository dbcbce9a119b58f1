"""Idle cost: CPU of 100 blocked workers, client and server, and a post while all are blocked."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio

from blackboard import connection, ids
from blackboard.bench.support import (
    IDLE_CPU_LIMIT,
    TARGETS,
    WAIT_TIMEOUT,
    _blocked_clients,
    _drop,
    _fresh_board,
    _info,
    _progress,
    _until_blocked,
    worker,
)
from blackboard.board import Board
from blackboard.models import Claim


def _server_cpu(info: dict[str, Any] | None, suffix: str = "") -> float | None:
    """CPU seconds of the server from INFO cpu: all threads, or with `suffix` "_main_thread"."""
    if not info or f"used_cpu_sys{suffix}" not in info:
        return None
    return float(info[f"used_cpu_sys{suffix}"]) + float(info[f"used_cpu_user{suffix}"])


def _local_server_process(url: str, pid: int | None) -> Any:
    """A psutil handle on the redis-server process when it runs on this machine, else None."""
    host = urlsplit(url).hostname or ""
    if pid is None or not (url.startswith("unix:") or host in connection.LOOPBACK):
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
                tg.start_soon(
                    partial(
                        worker,
                        board,
                        f"idle-{i}",
                        [f"bench.idle.w{i}"],
                        handle,
                        on_idle=on_idle(i),
                        on_claim=on_claim,
                        wait_timeout=wait_timeout,
                    )
                )
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
