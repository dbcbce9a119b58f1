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
    swarm_100                 one goal -> 100 concurrent LLM sub-agents (offline model, 0.2 s per
                              call) -> one join, through a daemon running agents/swarm: median
                              wall time and its overhead beyond 3 x 0.2 s (on the Redis given,
                              with one daemon per core too, and on memory://), and `direct`: the
                              same model calls with no board, litellm's own share

With `--trace` (or BLACKBOARD_BENCH_TRACE=1) every measurement runs with tracing on: an SDK
provider whose batch processor hands each span to an exporter that counts and drops it, so the
numbers include making and processing spans but no network (the report's `tracing`).

Workers use the blocking pattern of a daemon: claim; when there is nothing, block in
`wait_for_work` until a post wakes them (or the next lease/retry comes due), never poll.

A benchmark is a measurement, not a test: numbers depend on the machine, and `meets_target` only
compares them with the design's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from blackboard import __version__
from blackboard.bench import support
from blackboard.bench.idle import bench_idle_cpu
from blackboard.bench.support import _fresh_board, _info, percentile
from blackboard.bench.swarm import TARGET as SWARM_TARGET
from blackboard.bench.swarm import bench_swarm
from blackboard.bench.throughput import bench_chain, bench_claim_latency, bench_pickup, bench_post_and_drain

__all__ = ["METRICS", "TARGETS", "main", "percentile", "redact", "run_bench"]

METRICS = (*support.METRICS, "swarm_100")
TARGETS = {**support.TARGETS, "swarm_100": SWARM_TARGET}


def redact(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    netloc = (f"{user}:***@" if ":" in userinfo else f"{user}@") + hosts
    return urlunsplit(parts._replace(netloc=netloc))


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
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


async def run_bench(
    url: str, *, scale: float = 1.0, only: Sequence[str] | None = None, trace: bool | None = None
) -> dict[str, Any]:
    """Run the benchmarks (all, or those named in `only`) against `url`; returns the report.
    `trace`: with tracing on (None: when BLACKBOARD_BENCH_TRACE=1)."""
    if trace is None:
        trace = os.environ.get("BLACKBOARD_BENCH_TRACE", "") in ("1", "true", "yes")
    if not trace:
        return await _run_bench(url, scale, only)
    provider, exporter = support.tracing_on()
    try:
        report = await _run_bench(url, scale, only)
    finally:
        support.tracing_off(provider)
    report["tracing"] = {"on": True, "spans": exporter.spans}
    return report


async def _run_bench(url: str, scale: float, only: Sequence[str] | None) -> dict[str, Any]:
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
    # Last: it runs a whole daemon, litellm and all, in this process.
    if "swarm_100" in want:
        metrics["swarm_100"] = await bench_swarm(url, scale)
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
    parser.add_argument(
        "--trace", action="store_true", help="with tracing on (spans made and processed, then dropped)"
    )
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if bad := [n for n in only if n not in METRICS]:
        parser.error(f"--only: unknown metric(s) {', '.join(bad)}; expected some of {', '.join(METRICS)}")
    if not args.scale > 0:
        parser.error(f"--scale: expected a number > 0, got {args.scale}")
    report = anyio.run(
        lambda: run_bench(args.redis, scale=args.scale, only=only or None, trace=args.trace or None)
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
