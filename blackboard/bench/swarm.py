"""Swarm scale: one goal fans out to 100 LLM sub-agents at once, then joins.

The agents are the `agents/swarm` pack of a checkout (planner -> 100 x worker -> joiner) on the
offline model with an injected latency per call. The critical path is three model calls
(planner, one worker, joiner), so a perfect runtime takes `3 * latency` from posting the goal to
the join being done; everything beyond that is the runtime's orchestration overhead. Times come
from the items' own timestamps (the board's clock, ms), so when the bench notices that a goal is
done does not count.

The daemon, the model client (litellm) and the bench share one process and one event loop, as a
daemon's agents do: `process_cpu_ms_per_goal` and `gc_pause_ms` show how busy that loop was.
"""

from __future__ import annotations

import gc
import os
import statistics
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


async def swarm_on(
    url: str, goals: int, *, warmup: int = 1, latency: float = LATENCY, folder: Path | None = None
) -> dict[str, Any]:
    """Run `warmup` + `goals` swarm goals one after another through one daemon on `url` (the pack
    in `folder`, default the checkout's agents/swarm)."""
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
    try:
        with _offline_latency(latency), _quiet_logs():
            daemon = Daemon(settings)
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                for n in range(warmup):
                    await _one_goal(probe, n)
                errors, cpu = _redis_errors(daemon), time.process_time()
                with gcs.active():
                    for n in range(warmup, warmup + goals):
                        runs.append(await _one_goal(probe, n))
                cpu, errors = time.process_time() - cpu, _redis_errors(daemon) - errors
                daemon.stop()
    finally:
        await _drop(probe)
    return {
        **summarise(runs, latency),
        # CPU of this process (daemon, model client and this bench's waiting) per goal: the
        # event loop's work, which competes with the 100 handlers for one core.
        "process_cpu_ms_per_goal": round(cpu / goals * 1000, 1),
        "gc_pause_ms": {
            "per_goal": round(sum(gcs.pauses) / goals, 1),
            "max": round(max(gcs.pauses, default=0.0), 1),
        },
        # Redis commands retried (e.g. "Too many connections" from the client's pool) per goal.
        "redis_errors_retried_per_goal": round(errors / goals, 1),
    }


async def bench_swarm(url: str, scale: float) -> dict[str, Any]:
    """The swarm on `url` and, when that is a real Redis, on memory:// too."""
    goals = max(1, round(5 * scale))
    if pack_folder() is None:
        return {
            "skipped": "agents/swarm not found (run from a checkout)",
            "target": TARGET,
            "meets_target": None,
        }
    if url.startswith("memory://"):
        urls = {"memory": url}
    else:  # the Redis given, and the in-process board for comparison
        urls = {"redis": url, "memory": "memory://bench-swarm"}
    out: dict[str, Any] = {"agents": SWARM_SIZE, "latency_s": LATENCY, "warmup_goals": 1}
    for backend, u in urls.items():
        _progress(f"swarm_100: {goals} goals of 1 planner -> {SWARM_SIZE} workers -> 1 joiner on {backend}")
        out[backend] = await swarm_on(u, goals)
    primary = out[next(iter(urls))]
    out["target"] = TARGET
    out["meets_target"] = primary["overhead_pct_median"] <= OVERHEAD_LIMIT
    return out
