"""The swarm pack: one goal fans out to 100 concurrent LLM sub-agents and joins, through a real daemon.

The offline model takes 0.2 s per call here, so sub-agents that ran one after another could not
look as if they overlapped. No timing threshold is asserted (numbers belong to the benchmark,
`python -m blackboard.bench --only swarm_100`); the overhead is printed.
"""

from __future__ import annotations

import gc
import json
import os

import pytest

from blackboard import Status, bench
from blackboard.bench.swarm import CRITICAL_CALLS, SWARM_SIZE, TARGET, goal_timings, summarise
from blackboard.daemon import GC_THRESHOLD
from tests.support.packs import PACKS, run_pack

pytestmark = pytest.mark.anyio

SWARM = PACKS / "swarm"
GOAL = json.loads((SWARM / "goal.json").read_text())
LATENCY = 0.2


async def test_one_goal_fans_out_to_100_concurrent_workers_then_joins(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKBOARD_OFFLINE_LATENCY", str(LATENCY))
    run = await run_pack(board_url, [SWARM], GOAL["kind"], GOAL["payload"])

    assert run.goal.status is Status.DONE and run.goal.handled_by == "swarm-planner"
    assert len(run.goal.result["tasks"]) == SWARM_SIZE

    tasks = run.of_kind("swarm.task")
    assert len(tasks) == SWARM_SIZE
    assert all(t.status is Status.DONE and t.handled_by == "swarm-worker" for t in tasks)
    assert all(t.parent == run.goal.id for t in tasks)
    # one sub-task per element of the plan, each answered for its own index
    assert sorted(t.payload["index"] for t in tasks) == list(range(SWARM_SIZE))
    assert sorted(t.payload["task"] for t in tasks) == sorted(run.goal.result["tasks"])
    assert all(t.result["index"] == t.payload["index"] and t.result["result"] for t in tasks)
    # all 100 were claimed before any finished: they ran at the same time, not in waves
    assert run.overlapping(tasks)

    (join,) = run.of_kind("swarm.join")
    assert join.status is Status.DONE and join.handled_by == "swarm-joiner"
    assert join.parent == run.goal.id and set(join.after) == {t.id for t in tasks}
    assert join.claimed_at and join.claimed_at >= max(t.finished_at or 0 for t in tasks)
    assert join.result["parts"] == SWARM_SIZE and join.result["summary"]

    assert len(run.items) == SWARM_SIZE + 2
    assert run.usage.calls == SWARM_SIZE + 2 and run.usage.errors == 0
    assert run.usage.by_model["offline/swarm-worker"].calls == SWARM_SIZE
    assert all(len(it.usage) == 1 for it in run.items)
    # the daemon froze its startup heap and let the young generation grow (GC_THRESHOLD)
    assert gc.get_freeze_count() > 0 and gc.get_threshold() == GC_THRESHOLD

    timing = summarise([goal_timings(run.goal, tasks, join)], LATENCY)
    phases = timing["phases_ms"]
    parts = (
        phases["planner_pickup"]
        + phases["planner_handler"]
        + phases["tasks_last_finished"]
        + phases["join_pickup"]
        + phases["joiner_handler"]
    )
    assert parts == round(timing["wall_s_median"] * 1000)  # the phases account for the wall time
    assert timing["ideal_s"] == pytest.approx(CRITICAL_CALLS * LATENCY) and timing["all_overlapped"]
    print(
        f"\nswarm on {board_url.split(':')[0]}: wall {timing['wall_s_median']:.3f} s, "
        f"ideal {timing['ideal_s']:.1f} s, overhead {timing['overhead_pct_median']:.0f}% "
        f"(first goal of a fresh daemon; see the benchmark for medians)"
    )


@pytest.mark.timeout(120)
async def test_bench_measures_the_swarm_on_redis_and_memory(redis_url: str) -> None:
    report = await bench.run_bench(redis_url, scale=0.2, only=["swarm_100"])
    swarm = report["metrics"]["swarm_100"]
    assert swarm["target"] == TARGET and swarm["meets_target"] in (True, False)
    assert swarm["meets_target"] == (swarm["redis"]["overhead_pct_median"] <= 5)
    assert swarm["redis"]["daemons"] == 1 and swarm["memory"]["daemons"] == 1
    cores = os.cpu_count() or 1
    backends = ["redis", "memory"]
    if cores > 1:  # one daemon per core: the bench's own and cores - 1 `blackboard run` processes
        assert swarm["redis_per_core"]["daemons"] == cores
        backends.append("redis_per_core")
    direct = swarm["direct"]  # the same model calls with no board: litellm's own share
    assert direct["goals"] == 1 and direct["wall_s_median"] > direct["ideal_s"] == pytest.approx(0.6)
    board_ms = (swarm["redis"]["wall_s_median"] - direct["wall_s_median"]) * 1000
    assert swarm["orchestration_ms_median"] == pytest.approx(board_ms, abs=0.1)
    assert swarm["orchestration_pct_of_ideal"] == pytest.approx(board_ms / 600 * 100, abs=0.1)
    for backend in backends:
        m = swarm[backend]
        assert m["goals"] == 1 and m["all_overlapped"]
        assert m["ideal_s"] == pytest.approx(0.6)
        wall = m["wall_s_median"]
        assert wall > m["ideal_s"]  # three 0.2 s calls one after another, at the very least
        assert m["overhead_pct_median"] == pytest.approx((wall - 0.6) / 0.6 * 100, abs=0.1)
        assert m["worker_model_ms"]["min"] >= 200 and m["process_cpu_ms_per_goal"] > 0
        print(f"\nbench swarm on {backend}: wall {wall:.3f} s, overhead {m['overhead_pct_median']}%")
