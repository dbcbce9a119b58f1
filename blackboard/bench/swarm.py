"""Swarm scale: one goal fans out to 100 LLM sub-agents at once, then joins.

The agents are the `agents/swarm` pack of a checkout (planner -> 100 x worker -> joiner) on the
offline model with an injected latency per call. The critical path is three model calls
(planner, one worker, joiner), so a perfect runtime takes `3 * latency` from posting the goal to
the join being done; everything beyond that is the runtime's orchestration overhead. Times come
from the items' own timestamps (the board's clock, ms), so when the bench notices that a goal is
done does not count.

The daemon, the model client (litellm) and the bench share one process and one event loop, as a
daemon's agents do: `process_cpu_ms_per_goal` and `gc_pause_ms` show how busy that loop was.
litellm itself costs over a millisecond of CPU per call, so a hundred calls on one loop take
longer than one call however they are orchestrated: `direct` makes the same 102 calls with no
board at all (planner, `asyncio.gather` of the hundred, joiner), which separates litellm's own
cost from the board's. `extra_daemons` adds `blackboard run` processes on the same board, as a
deployment with one daemon per core does.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import structlog

from blackboard import ids
from blackboard.bench.support import _drop, _fresh_board, _progress, percentile
from blackboard.board import Board
from blackboard.daemon import Daemon
from blackboard.models import Item, Status
from blackboard.settings import Settings

SWARM_SIZE = 100  # sub-tasks per goal: the planner's schema asks for exactly this many
LATENCY = 0.2  # seconds per offline model call
CRITICAL_CALLS = 3  # planner + one worker + joiner
OVERHEAD_LIMIT = 5.0  # percent
TARGET = "median overhead (wall time beyond 3 x model latency) <= 5%"
GOAL_TIMEOUT = 60.0


def pack_folder() -> Path | None:
    """The checkout's `agents/swarm` (None when blackboard is installed without its agents)."""
    folder = Path(__file__).resolve().parents[2] / "agents" / "swarm"
    return folder if (folder / "worker.yaml").is_file() else None


@contextmanager
def _offline_latency(seconds: float) -> Iterator[None]:
    """Every offline model call takes `seconds` (the offline provider reads this per call)."""
    old = os.environ.get("BLACKBOARD_OFFLINE_LATENCY")
    os.environ["BLACKBOARD_OFFLINE_LATENCY"] = str(seconds)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BLACKBOARD_OFFLINE_LATENCY", None)
        else:
            os.environ["BLACKBOARD_OFFLINE_LATENCY"] = old


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Daemon logs to stderr at warning level, unless the caller configured logging: stdout is
    the report's."""
    if structlog.is_configured():
        yield
        return
    from blackboard import logs

    logs.configure("json", "warning")
    try:
        yield
    finally:
        structlog.reset_defaults()


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "p50": round(percentile(values, 50), 1),
        "max": round(max(values), 1),
    }


def goal_timings(goal: Item, tasks: list[Item], join: Item) -> dict[str, Any]:
    """Where one goal's wall time went, from its items' timestamps (ms)."""
    t_goal = goal.created_at
    assert goal.claimed_at and goal.finished_at and join.claimed_at and join.finished_at
    claimed = [t.claimed_at or 0 for t in tasks]
    finished = [t.finished_at or 0 for t in tasks]
    handled = [f - c for c, f in zip(claimed, finished, strict=True)]
    model = [c.latency_ms for t in tasks for c in t.usage]
    wall = (join.finished_at - t_goal) / 1000
    return {
        "wall_s": wall,
        "planner_pickup_ms": goal.claimed_at - t_goal,
        "planner_handler_ms": goal.finished_at - goal.claimed_at,
        "planner_model_ms": round(sum(c.latency_ms for c in goal.usage), 1),
        "tasks_first_claimed_ms": min(claimed) - goal.finished_at,
        "tasks_last_claimed_ms": max(claimed) - goal.finished_at,
        "tasks_last_finished_ms": max(finished) - goal.finished_at,
        "worker_handler_ms": handled,
        "worker_model_ms": model,
        "join_pickup_ms": join.claimed_at - max(finished),
        "joiner_handler_ms": join.finished_at - join.claimed_at,
        "joiner_model_ms": round(sum(c.latency_ms for c in join.usage), 1),
        "all_claimed_before_any_finished": max(claimed) < min(finished),
    }


async def _one_goal(board: Board, n: int) -> dict[str, Any]:
    goal = await board.post("swarm.goal", {"job": f"swarm bench goal {n}"}, actor="bench")
    goal = await board.wait(goal.id, timeout=GOAL_TIMEOUT)
    if goal.status is not Status.DONE:
        raise RuntimeError(f"swarm goal {goal.id} ended {goal.status.value}: {goal.error}")
    # The planner's post after its 100 tasks; it was posted with the goal's completion.
    join = await board.wait(ids.child_id(goal.id, f"o{SWARM_SIZE}"), timeout=GOAL_TIMEOUT)
    if join.status is not Status.DONE:
        raise RuntimeError(f"swarm join {join.id} ended {join.status.value}: {join.error}")
    tree = await board.tree(goal.id)
    tasks = [it for it in tree.walk() if it.kind == "swarm.task"]
    if len(tasks) != SWARM_SIZE or any(t.status is not Status.DONE for t in tasks):
        raise RuntimeError(f"swarm goal {goal.id}: expected {SWARM_SIZE} done tasks")
    return goal_timings(tree.item, tasks, join)


def summarise(runs: list[dict[str, Any]], latency: float) -> dict[str, Any]:
    """Median wall time and overhead over `runs`, with the phases that make up the overhead."""
    ideal = CRITICAL_CALLS * latency
    walls: list[float] = [r["wall_s"] for r in runs]
    wall = statistics.median(walls)
    median_run = min(runs, key=lambda r: abs(r["wall_s"] - wall))

    def med(key: str) -> float:
        return round(float(statistics.median(r[key] for r in runs)), 1)

    return {
        "goals": len(runs),
        "ideal_s": round(ideal, 3),
        "wall_s_median": round(wall, 3),
        "wall_s_all": [round(w, 3) for w in walls],
        "overhead_pct_median": round((wall - ideal) / ideal * 100, 1),
        "overhead_ms_median": round((wall - ideal) * 1000, 1),
        # Where the time goes (medians over goals, ms): each phase minus its model latency is
        # orchestration; they add up to the wall time.
        "phases_ms": {
            "planner_pickup": med("planner_pickup_ms"),
            "planner_handler": med("planner_handler_ms"),
            "planner_model": med("planner_model_ms"),
            "tasks_first_claimed": med("tasks_first_claimed_ms"),
            "tasks_last_claimed": med("tasks_last_claimed_ms"),
            "tasks_last_finished": med("tasks_last_finished_ms"),
            "join_pickup": med("join_pickup_ms"),
            "joiner_handler": med("joiner_handler_ms"),
            "joiner_model": med("joiner_model_ms"),
        },
        # The goal nearest the median: its 100 workers' handler and model-call times (ms).
        "worker_handler_ms": _ms(median_run["worker_handler_ms"]),
        "worker_model_ms": _ms(median_run["worker_model_ms"]),
        "all_overlapped": all(r["all_claimed_before_any_finished"] for r in runs),
    }


class _GCPauses:
    """Garbage-collection pauses (ms) while active: they stop the event loop, handlers and all."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._started) * 1000)

    @contextmanager
    def active(self) -> Iterator[None]:
        gc.callbacks.append(self)
        try:
            yield
        finally:
            gc.callbacks.remove(self)


def _redis_errors(daemon: Daemon) -> float:
    return daemon.metrics.registry.get_sample_value("blackboard_redis_errors_total") or 0.0


def _start_daemons(
    n: int, url: str, board: str, folder: Path, latency: float
) -> list[subprocess.Popen[bytes]]:
    """`n` more daemons on the board, as separate `blackboard run` processes."""
    env = {**os.environ, "BLACKBOARD_OFFLINE_LATENCY": str(latency), "BLACKBOARD_MODEL": ""}
    cmd = [sys.executable, "-m", "blackboard", "run", "--url", url, "--board", board, "--agents", str(folder)]
    cmd += ["--no-http", "--no-reload", "--no-entry-points", "--log-level", "warning", "--models", "{}"]
    return [subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL) for _ in range(n)]


async def _wait_for_daemons(board: Board, n: int, procs: list[subprocess.Popen[bytes]]) -> None:
    from blackboard import presence

    with anyio.fail_after(60):
        while len([d for d in await presence.daemons(board) if d.live]) < n:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a swarm bench daemon exited at startup")
            await anyio.sleep(0.1)  # polling a condition with a deadline, not synchronisation


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def swarm_on(
    url: str,
    goals: int,
    *,
    warmup: int = 1,
    latency: float = LATENCY,
    folder: Path | None = None,
    extra_daemons: int = 0,
) -> dict[str, Any]:
    """Run `warmup` + `goals` swarm goals one after another through one daemon on `url` (the pack
    in `folder`, default the checkout's agents/swarm) and `extra_daemons` more processes."""
    folder = folder or pack_folder()
    if folder is None:
        raise FileNotFoundError("agents/swarm not found: the swarm bench runs from a checkout")
    probe = await _fresh_board(url, "swarm")
    options: dict[str, Any] = {
        "url": url,
        "board": probe.name,
        "agents": [folder],
        "http": False,
        "entry_points": False,
        "reload": False,
        "log_level": "warning",
        "model": None,  # the pack's offline models, whatever BLACKBOARD_MODEL says
        "models": {},
        "llm_limits": {},
    }
    settings = Settings(**options)  # these over the environment and blackboard.toml
    runs: list[dict[str, Any]] = []
    gcs = _GCPauses()
    procs = _start_daemons(extra_daemons, url, probe.name, folder, latency) if extra_daemons else []
    try:
        with _offline_latency(latency), _quiet_logs():
            daemon = Daemon(settings)
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                await _wait_for_daemons(probe, 1 + extra_daemons, procs)
                for n in range(warmup):
                    await _one_goal(probe, n)
                errors, cpu = _redis_errors(daemon), time.process_time()
                with gcs.active():
                    for n in range(warmup, warmup + goals):
                        runs.append(await _one_goal(probe, n))
                cpu, errors = time.process_time() - cpu, _redis_errors(daemon) - errors
                daemon.stop()
    finally:
        _stop(procs)
        await _drop(probe)
    return {
        **summarise(runs, latency),
        "daemons": 1 + extra_daemons,
        # CPU of this process (daemon, model client and this bench's waiting) per goal: the
        # event loop's work, which competes with the 100 handlers for one core (not counting
        # the extra daemons' processes).
        "process_cpu_ms_per_goal": round(cpu / goals * 1000, 1),
        "gc_pause_ms": {
            "per_goal": round(sum(gcs.pauses) / goals, 1),
            "max": round(max(gcs.pauses, default=0.0), 1),
        },
        # Redis commands retried (e.g. "Too many connections" from the client's pool) per goal.
        "redis_errors_retried_per_goal": round(errors / goals, 1),
    }


async def direct_on(goals: int, *, warmup: int = 1, latency: float = LATENCY) -> dict[str, Any]:
    """The floor for one process: the swarm's 102 offline model calls made straight through
    `litellm.acompletion` with no board (planner, the hundred at once, joiner), `goals` times,
    with the daemon's collector settings. Its wall time beyond `3 x latency` is litellm's own."""
    import asyncio

    from blackboard.daemon import GC_THRESHOLD
    from blackboard.llm.client import litellm, price_offline, warm_up

    await anyio.to_thread.run_sync(warm_up)
    lib = litellm()
    models = [f"offline/swarm-{role}" for role in ("planner", "worker", "joiner")]
    price_offline(models)

    def fmt(prop: str, schema: dict[str, Any]) -> dict[str, Any]:
        body = {"type": "object", "properties": {prop: schema}, "required": [prop]}
        return {"type": "json_schema", "json_schema": {"name": prop, "schema": body}}

    tasks = fmt("tasks", {"type": "array", "minItems": SWARM_SIZE, "maxItems": SWARM_SIZE})
    text = {"type": "string"}

    async def call(model: str, prompt: str, response_format: dict[str, Any]) -> None:
        messages = [
            {"role": "system", "content": "You carry out one part of a larger job."},
            {"role": "user", "content": prompt},
        ]
        await lib.acompletion(model=model, messages=messages, response_format=response_format)

    async def goal(n: int) -> float:
        started = time.perf_counter()
        result, summary = fmt("result", text), fmt("summary", text)
        await call(models[0], f"Job: swarm direct goal {n}", tasks)
        await asyncio.gather(*(call(models[1], f"Job {n}, part {i + 1}", result) for i in range(SWARM_SIZE)))
        await call(models[2], f"Job {n}: combine " + ", ".join(map(str, range(SWARM_SIZE))), summary)
        return time.perf_counter() - started

    thresholds = gc.get_threshold()
    with _offline_latency(latency):
        for n in range(warmup):
            await goal(n)
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)
        try:
            cpu = time.process_time()
            walls = [await goal(n) for n in range(warmup, warmup + goals)]
            cpu = time.process_time() - cpu
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
    ideal, wall = CRITICAL_CALLS * latency, statistics.median(walls)
    return {
        "goals": goals,
        "ideal_s": round(ideal, 3),
        "wall_s_median": round(wall, 3),
        "wall_s_all": [round(w, 3) for w in walls],
        "overhead_pct_median": round((wall - ideal) / ideal * 100, 1),
        "process_cpu_ms_per_goal": round(cpu / goals * 1000, 1),
    }


async def bench_swarm(url: str, scale: float) -> dict[str, Any]:
    """The swarm on `url` through one daemon and through one daemon per core; on memory:// when
    `url` is a real Redis; and the same model calls with no board (`direct`)."""
    goals = max(1, round(5 * scale))
    if pack_folder() is None:
        return {
            "skipped": "agents/swarm not found (run from a checkout)",
            "target": TARGET,
            "meets_target": None,
        }
    runs: dict[str, tuple[str, int]] = {"redis": (url, 0)}
    if url.startswith("memory://"):
        runs = {"memory": (url, 0)}
    else:  # the Redis given, with one daemon per core too, and the in-process board to compare
        cores = os.cpu_count() or 1
        if cores > 1:
            runs["redis_per_core"] = (url, cores - 1)
        runs["memory"] = ("memory://bench-swarm", 0)
    out: dict[str, Any] = {"agents": SWARM_SIZE, "latency_s": LATENCY, "warmup_goals": 1}
    for name, (u, extra) in runs.items():
        _progress(f"swarm_100: {goals} goals of 1 planner -> {SWARM_SIZE} workers -> 1 joiner on {name}")
        out[name] = await swarm_on(u, goals, extra_daemons=extra)
    _progress(f"swarm_100: {goals} goals of the same 102 model calls with no board (direct)")
    out["direct"] = await direct_on(goals)
    primary = out[next(iter(runs))]
    # What the board adds to one process's wall time, beyond what litellm itself takes.
    board_ms = (primary["wall_s_median"] - out["direct"]["wall_s_median"]) * 1000
    out["orchestration_ms_median"] = round(board_ms, 1)
    out["orchestration_pct_of_ideal"] = round(board_ms / (CRITICAL_CALLS * LATENCY * 1000) * 100, 1)
    out["target"] = TARGET
    out["meets_target"] = primary["overhead_pct_median"] <= OVERHEAD_LIMIT
    return out
