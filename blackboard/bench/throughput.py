"""Throughput and latency: post rate, drain rate, 3-hop chain, pickup, claim latency vs board size."""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any

import anyio

from blackboard import ids
from blackboard.bench.support import (
    TARGETS,
    Handler,
    _blocked_clients,
    _drop,
    _fresh_board,
    _info,
    _ms_summary,
    _post_n,
    _progress,
    _until_blocked,
    percentile,
    worker,
)
from blackboard.board import Board
from blackboard.models import Claim, NewItem


def _latency_report(seconds: list[float], warmup: int, metric: str, *, p50_limit_ms: float) -> dict[str, Any]:
    summary = _ms_summary(seconds)
    return {
        **summary,
        "warmup": warmup,
        "target": TARGETS[metric],
        "meets_target": summary["p50_ms"] <= p50_limit_ms,
    }


async def bench_post_and_drain(url: str, scale: float, want: set[str]) -> dict[str, Any]:
    n = max(10, int(50_000 * scale))
    board = await _fresh_board(url, "queue")
    out: dict[str, Any] = {}
    try:
        _progress(f"post_rate: posting {n} items in batches of 500")
        secs = await _post_n(board, "bench.queue", n, 500)
        if "post_rate" in want:
            out["post_rate"] = {
                "items": n,
                "batch": 500,
                "seconds": round(secs, 3),
                "items_per_s": round(n / secs, 1),
                "target": TARGETS["post_rate"],
                "meets_target": None,
            }
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
                "items": drained,
                "batch": 200,
                "seconds": round(secs, 3),
                "items_per_s": round(rate, 1),
                "target": TARGETS["drain_rate"],
                "meets_target": rate >= 10_000,
            }
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
            await board.complete(
                c, None, [NewItem(kind=next_kind, payload=c.item.payload)], fetch_outputs=False
            )

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
    return _latency_report(lat, warmup, "chain_3hop", p50_limit_ms=3)


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
    return _latency_report(lat, warmup, "pickup_ms", p50_limit_ms=2)


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
