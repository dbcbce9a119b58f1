"""`blackboard.bench` runs end to end and reports every metric (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest

from blackboard import bench

pytestmark = pytest.mark.anyio

TOP_LEVEL = ("url", "redis_version", "python_version", "cpu_count", "scale", "metrics")


def _numbers(value: Any) -> list[float]:
    """Every number in a nested report (booleans aside)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


SIGNED = ("orchestration_ms_median", "orchestration_pct_of_ideal")


def check_report(report: dict[str, Any], only: tuple[str, ...] = bench.METRICS) -> None:
    json.dumps(report)  # one JSON object, nothing unserialisable
    for key in TOP_LEVEL:
        assert key in report, key
    assert report["cpu_count"] >= 1
    metrics = report["metrics"]
    assert sorted(metrics) == sorted(only)
    for name, m in metrics.items():
        assert "target" in m and "meets_target" in m, name
        assert m["meets_target"] in (True, False, None), name
        # The swarm's board-minus-direct differences are signed: the board can come out ahead.
        unsigned = {k: v for k, v in m.items() if k not in SIGNED}
        assert all(math.isfinite(n) for n in _numbers(m)), (name, m)
        for n in _numbers(unsigned):
            assert n >= 0, (name, m)
    if "post_rate" in metrics:
        assert metrics["post_rate"]["items_per_s"] > 0
    if "drain_rate" in metrics:
        d = metrics["drain_rate"]
        assert d["items_per_s"] > 0 and d["items"] == metrics.get("post_rate", d)["items"]
    for name in ("chain_3hop", "pickup_ms"):
        if name in metrics:
            m = metrics[name]
            assert m["samples"] > 0 and 0 < m["p50_ms"] <= m["p99_ms"]
    if "idle_cpu_100_workers" in metrics:
        idle = metrics["idle_cpu_100_workers"]
        assert idle["workers"] == 100 and idle["window_s"] > 0
        assert idle["client_cpu_percent"] >= 0
    if "claim_latency_1k_vs_1m" in metrics:
        c = metrics["claim_latency_1k_vs_1m"]
        assert c["small"]["open_items"] < c["large"]["open_items"]
        assert c["small"]["p50_ms"] > 0 and c["large"]["p50_ms"] > 0 and c["ratio_p50"] > 0


@pytest.mark.timeout(120)
async def test_bench_on_memory() -> None:
    report = await bench.run_bench(f"memory://bench-test-{os.getpid()}", scale=0.01)
    check_report(report)
    assert report["redis_version"] == "fakeredis (in-process)"


@pytest.mark.timeout(120)
async def test_bench_on_redis(redis_url: str) -> None:
    report = await bench.run_bench(redis_url, scale=0.005)
    check_report(report)
    assert report["url"] == redis_url
    idle = report["metrics"]["idle_cpu_100_workers"]
    assert idle["server_cpu_percent"] is not None and idle["server_pid"] is not None


async def test_bench_only_subset(redis_url: str) -> None:
    only = ("post_rate", "drain_rate", "pickup_ms")
    check_report(await bench.run_bench(redis_url, scale=0.002, only=only), only)


async def test_bench_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        await bench.run_bench("memory://bench-test", scale=0.01, only=["nope"])


def test_main_prints_one_json_object(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--redis", redis_url, "--scale", "0.002", "--only", "post_rate,drain_rate"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    check_report(report, ("post_rate", "drain_rate"))
    assert "[bench]" in err


def test_main_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--only", "post_rate,bogus"])
    assert exc.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_redact_hides_the_password() -> None:
    assert bench.redact("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert bench.redact("redis://:s3cret@host:6379") == "redis://:***@host:6379"
    assert bench.redact("redis://host:6379") == "redis://host:6379"


def test_percentile() -> None:
    assert bench.percentile([3, 1, 2], 50) == 2
    assert bench.percentile([1, 2], 50) == 1.5
    assert bench.percentile([5], 99) == 5
    assert math.isnan(bench.percentile([], 50))
