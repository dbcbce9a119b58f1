"""The measurements behind docs/SCALING.md: `blackboard loadtest` runs against a redis-server and
a 3-master Redis Cluster that this script starts on free ports (and stops by PID).

    .venv/bin/python -m tests.support.measure_scaling [--out docs/scaling-results.json] [--only NAME,..]

Run it on a quiet machine: the load generator, the daemons' stand-ins and Redis share the CPUs,
so anything else running shows up in every figure. Each run is bounded (20 s measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.redis_server import RedisServer, start_cluster

AGENT_STYLE = {"agents": 2000, "processes": 2, "think": 0.05, "rate": 2500}
# A backlog the agents can't finish in the window (it is posted first, and not timed).
BATCHED = {
    "agents": 8,
    "processes": 2,
    "think": 0.0,
    "rate": 0.1,
    "batch": 100,
    "backlog": 300_000,
    "duration": 10,
}
WAITING = {"agents": 10_000, "processes": 2, "think": 1.0, "rate": 20}

# name -> (where, loadtest options)
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "single_k1_agent_style": ("single", {**AGENT_STYLE, "shards": 1}),
    "single_k4_agent_style": ("single", {**AGENT_STYLE, "shards": 4}),
    "single_k1_batched": ("single", {**BATCHED, "shards": 1}),
    "single_k4_batched": ("single", {**BATCHED, "shards": 4}),
    "single_k1_10k_waiting": ("single", {**WAITING, "shards": 1}),
    "single_k4_10k_waiting": ("single", {**WAITING, "shards": 4}),
    "cluster_k6_agent_style": ("cluster", {**AGENT_STYLE, "shards": 6}),
    "cluster_k1_batched": ("cluster", {**BATCHED, "shards": 1}),
    "cluster_k6_batched": ("cluster", {**BATCHED, "shards": 6}),
    "cluster_k6_batched_4_processes": ("cluster", {**BATCHED, "processes": 4, "agents": 16, "shards": 6}),
    "cluster_k6_10k_waiting": ("cluster", {**WAITING, "shards": 6}),
}


def cpu_probe() -> float:
    """Milliseconds a fixed pure-Python loop takes: the same code measured 2x apart on this
    (shared, virtual) machine within an hour, so the results record how fast it was."""
    started, total = time.perf_counter(), 0
    for i in range(3_000_000):
        total += i
    return round((time.perf_counter() - started) * 1000, 1)


def loadtest(url: str, options: dict[str, Any], duration: float) -> dict[str, Any]:
    args = [sys.executable, "-m", "blackboard", "loadtest", "--url", url]
    for key, value in {"duration": duration, **options}.items():
        args += [f"--{key}", str(value)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    p.add_argument("--only", default="", help="comma-separated run names")
    p.add_argument("--duration", type=float, default=20.0)
    a = p.parse_args()
    names = [n for n in a.only.split(",") if n] or list(RUNS)
    unknown = set(names) - set(RUNS)
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; expected some of {list(RUNS)}")
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    results: dict[str, Any] = {
        "environment": {
            "git": git.strip(),
            "redis": redis_version.strip(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "cpu_probe_ms": [cpu_probe()],
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": a.duration,
        },
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for where in ("single", "cluster"):
            todo = [n for n in names if RUNS[n][0] == where]
            if not todo:
                continue
            if where == "single":
                servers = [RedisServer(Path(tmp) / "single").start()]
                url = servers[0].url
            else:
                servers = start_cluster(Path(tmp) / "cluster", masters=3)
                url = "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
            try:
                for name in todo:
                    options = RUNS[name][1]
                    report = loadtest(url, options, a.duration)
                    probe = cpu_probe()
                    results["environment"]["cpu_probe_ms"].append(probe)
                    results["runs"][name] = {
                        "where": where,
                        "options": options,
                        "report": report,
                        "cpu_probe_ms_after": probe,
                    }
                    print(json.dumps({name: report}), flush=True)
            finally:
                for server in servers:
                    server.stop()
    results["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if a.out:
        a.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
