"""The load test: simulated agents in real processes against a real redis-server; every item
claimed is completed once, and the report says what it measured. Loopback only."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from blackboard.bench.loadtest import run_loadtest
from blackboard.cli import app
from blackboard.errors import InvalidInput

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(60)
async def test_simulated_agents_claim_and_complete_each_item_once(redis_url: str) -> None:
    report = await run_loadtest(redis_url, agents=300, processes=2, duration=2.0, think=0.05, rate=400)
    assert report["processes"] == 2 and report["posted"] > 400
    # every claim was completed exactly once: claims, completions and done items agree
    assert 0 < report["claims"] == report["done"] <= report["posted"]
    assert report["pickup_ms"]["samples"] == report["claims"]
    assert report["items_per_claim_call"] == 1.0
    assert 0 <= report["pickup_ms"]["p50"] <= report["pickup_ms"]["p99"]
    assert len(report["client_cpu_percent_per_process"]) == 2
    assert report["redis_cpu_percent"] is not None and report["redis_bytes_per_item"] > 0


@pytest.mark.timeout(60)
async def test_batched_agents_drain_a_backlog(redis_url: str) -> None:
    """With `batch` an agent claims and completes many items per call (a runner's batching);
    the backlog is posted before they start, and what they claimed before the window is not
    counted in it."""
    report = await run_loadtest(
        redis_url, agents=4, processes=2, duration=1.0, think=0.0, rate=0.1, batch=50, backlog=3000
    )
    assert report["batch"] == 50 and report["backlog"] == 3000 and report["posted"] >= 3000
    assert 0 < report["claims"] <= report["done"] <= report["posted"]
    assert report["pickup_ms"]["samples"] == report["claims"]
    # The claims came in batches (a full backlog: most calls get all 50).
    assert report["items_per_claim_call"] > 10, report


async def test_the_load_test_refuses_what_it_should_not_load() -> None:
    for url in ("redis://10.1.2.3:6379", "memory://x", "redis+cluster://127.0.0.1:7000,10.1.2.3:7001"):
        with pytest.raises(InvalidInput) as e:
            await run_loadtest(url, agents=1, duration=1)
        assert e.value.field == "redis"
    with pytest.raises(InvalidInput, match="agents"):
        await run_loadtest("redis://127.0.0.1:6379", agents=0)
    with pytest.raises(InvalidInput, match="duration"):
        await run_loadtest("redis://127.0.0.1:6379", duration=601)
    with pytest.raises(InvalidInput, match="batch"):
        await run_loadtest("redis://127.0.0.1:6379", batch=0)
    with pytest.raises(InvalidInput, match="backlog"):
        await run_loadtest("redis://127.0.0.1:6379", backlog=-1)


@pytest.mark.timeout(60)
def test_loadtest_command_prints_one_json_report(redis_url: str) -> None:
    r = CliRunner().invoke(
        app,
        [
            "loadtest",
            "--url",
            redis_url,
            "--agents",
            "50",
            "--processes",
            "1",
            "--duration",
            "1",
            "--think",
            "0.01",
            "--rate",
            "100",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["agents"] == 50 and report["claims"] == report["done"] > 0
    r = CliRunner().invoke(app, ["loadtest", "--url", "redis://192.0.2.1:6379", "--duration", "1"])
    assert r.exit_code == 2 and "a local redis:// or redis+cluster:// only" in r.output
