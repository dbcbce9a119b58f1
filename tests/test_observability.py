"""Operating it: the Grafana dashboard and the Prometheus rules in deploy/, proven for real.

The committed dashboard is its generator's output, every panel is described and names only
metrics the daemon has; promtool checks the config and the rules and runs their unit tests
(every alert fires on its failure and stays quiet on healthy series); then a real Prometheus
scrapes a real daemon through a scenario that exercises every metric, and every dashboard query
must parse and return data there, and every alert rule must evaluate cleanly.
"""

from __future__ import annotations

import importlib.util
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
import yaml

from blackboard import Board, Retry, agent
from blackboard.context import Context
from blackboard.daemon import Daemon
from blackboard.metrics import Metrics
from blackboard.models import Item
from blackboard.settings import Settings
from tests.conftest import unique_board
from tests.support.prometheus import Prometheus, promtool, require

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
README = (ROOT / "README.md").read_text()

ALERTS = {
    "BlackboardKindWithoutAgents",
    "BlackboardOpenItemTooOld",
    "BlackboardDeadLettersGrowing",
    "BlackboardLeaseExpirationsSpiking",
    "BlackboardFencingRejectionsSpiking",
    "BlackboardDaemonUnready",
    "BlackboardDaemonDown",
    "BlackboardRedisErrors",
    "BlackboardLLMSpendOverBudget",
    "BlackboardApprovalsWaitingTooLong",
    "BlackboardAuditExportFailing",
}
METRIC_RE = re.compile(r"\b(blackboard_[a-z_]+|up)\b(?!\s*\()")


# -- the dashboard ----------------------------------------------------------------------------


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboard_generator", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((GRAFANA / "dashboards" / "blackboard.json").read_text())
    return data


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def exposed_names() -> set[str]:
    """Every sample name the daemon's registry can expose (counters `_total`, histograms'
    `_bucket`/`_sum`/`_count`, gauges as named)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix for family in Metrics().registry.collect() for suffix in suffixes[family.type]
    }


def test_the_committed_dashboard_is_what_the_generator_makes() -> None:
    committed = (GRAFANA / "dashboards" / "blackboard.json").read_text()
    assert committed == generator().render(), "run: python deploy/grafana/dashboard.py"


def test_every_panel_is_described_and_names_only_real_metrics() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    names = exposed_names()
    used: set[str] = set()
    for p in panels:
        assert len(p.get("description", "").strip()) >= 20, f"panel {p['title']!r} has no description"
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert 'board=~"$board"' in t["expr"], (p["title"], t["expr"])
            found = set(METRIC_RE.findall(t["expr"]))
            assert found, t["expr"]
            assert found <= names, f"{p['title']}: {sorted(found - names)} not in blackboard/metrics.py"
            used |= found
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == [
        "Throughput",
        "Board depth",
        "Latency",
        "Retries, leases and fencing",
        "Agents and daemons",
        "Redis",
        "LLM",
        "Governance: policy and budgets",
        "Approvals",
        "Audit",
    ]
    # What the issue asks the dashboard to show, metric by metric.
    wanted = {
        "blackboard_items_posted_total",
        "blackboard_items_completed_total",
        "blackboard_items_failed_total",
        "blackboard_items_dead_total",
        "blackboard_items",
        "blackboard_pickup_latency_seconds_bucket",
        "blackboard_handler_duration_seconds_bucket",
        "blackboard_retries_total",
        "blackboard_lease_expirations_total",
        "blackboard_fencing_rejections_total",
        "blackboard_live_agents",
        "blackboard_live_daemons",
        "blackboard_redis_errors_total",
        "blackboard_redis_reconnects_total",
        "blackboard_llm_tokens_total",
        "blackboard_llm_cost_usd_total",
        "blackboard_llm_latency_seconds_bucket",
        "blackboard_policy_denials_total",
        "blackboard_budgets_exceeded_total",
        "blackboard_approvals_pending",
        "blackboard_approval_wait_seconds_bucket",
        "blackboard_audit_records",
        "blackboard_audit_records_exported_total",
        "blackboard_audit_export_lag_records",
    }
    assert wanted <= used, sorted(wanted - used)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"board", "kind", "agent"} <= set(variables)
    for name in ("board", "kind", "agent"):
        assert set(METRIC_RE.findall(variables[name]["definition"])) <= names


def test_grafana_provisioning_points_at_the_dashboard_and_the_datasource_it_uses() -> None:
    [source] = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    [provider] = yaml.safe_load((GRAFANA / "provisioning/dashboards/blackboard.yml").read_text())["providers"]
    assert source["type"] == "prometheus"
    ds_var = next(v for v in dashboard()["templating"]["list"] if v["type"] == "datasource")
    assert ds_var["query"] == "prometheus" and ds_var["current"]["value"] == source["uid"]
    assert provider["type"] == "file"
    # The README's run command mounts the dashboards folder where the provider reads it.
    section = operating_section()
    assert f"deploy/grafana/dashboards:{provider['options']['path']}" in section
    assert "deploy/grafana/provisioning:/etc/grafana/provisioning" in section


# -- the alert rules --------------------------------------------------------------------------


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def operating_section() -> str:
    m = re.search(r"^## Operating it\n(.*?)^## ", README, re.S | re.M)
    assert m, "README has no '## Operating it' section"
    return m.group(1)


def test_every_alert_has_a_summary_a_runbook_a_severity_and_real_metrics() -> None:
    found = rules()
    assert set(found) == ALERTS
    names = exposed_names() | {"up"}
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        runbook = rule["annotations"]["runbook"]
        assert runbook.strip() and "\n" not in runbook, name
        assert rule["annotations"]["summary"].strip(), name
        metrics = set(METRIC_RE.findall(rule["expr"]))
        assert metrics and metrics <= names, (name, sorted(metrics - names))


def test_the_readme_lists_every_alert_with_its_runbook() -> None:
    section = operating_section()
    assert "<!-- dashboard-screenshot -->" in section
    table = dict(re.findall(r"^\| `(\w+)` \| \w+ \| .+? \| ([^|]+?) \|$", section, re.M))
    for name, rule in rules().items():
        assert table.get(name) == rule["annotations"]["runbook"], f"README row of {name}"
    assert README.index("## Operating it") < README.index("## Benchmark")


def test_the_alert_unit_tests_fire_every_alert_and_keep_each_quiet() -> None:
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group["alert_rule_test"]:
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fired == ALERTS, sorted(ALERTS - fired)
    assert quiet == ALERTS, sorted(ALERTS - quiet)


def test_promtool_checks_the_config() -> None:
    r = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr


def test_promtool_checks_the_rules() -> None:
    r = promtool("check", "rules", str(PROM / "alerts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(ALERTS)} rules found" in r.stdout + r.stderr


def test_promtool_runs_the_alert_unit_tests() -> None:
    r = promtool("test", "rules", "alerts_test.yml", cwd=PROM)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


# -- the gauges the alerts need ---------------------------------------------------------------


@agent(name="glob-taker", consumes=["w.*"])
async def glob_taker(item: Item, ctx: Context) -> None:
    await anyio.sleep(60)  # holds its claim: w.busy stays claimed, not open


@pytest.mark.anyio
async def test_the_consumer_and_age_gauges_follow_the_board(board_url: str) -> None:
    """Per kind: live agents consuming it (globs count), and the age of its oldest due open
    item (a delayed one isn't due); the longest approval wait."""
    name = unique_board()
    settings = Settings(
        url=board_url,
        board=name,
        http=False,
        reload=False,
        entry_points=False,
        agents=[],
        presence_interval=0.1,
        grace=0.5,
        log_level="warning",
    )
    daemon = Daemon(settings, agents=[glob_taker])
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        try:
            board = daemon.board
            await board.post("w.busy", {})
            stuck = await board.post("nobody.takes", {})
            await board.post("later.kind", {}, delay=3600)
            reg = daemon.metrics.registry

            def gauge(metric: str, **labels: str) -> float | None:
                return reg.get_sample_value(metric, {"board": name, **labels})

            async def ready() -> bool:
                age = gauge("blackboard_oldest_open_item_age_seconds", kind="nobody.takes")
                return (
                    age is not None and age > 0.2 and gauge("blackboard_kind_consumers", kind="w.busy") == 1
                )

            await until(ready, 10, "the gauges")
            assert gauge("blackboard_kind_consumers", kind="nobody.takes") == 0
            assert gauge("blackboard_kind_consumers", kind="later.kind") == 0
            assert gauge("blackboard_oldest_open_item_age_seconds", kind="w.busy") == 0  # claimed
            assert gauge("blackboard_oldest_open_item_age_seconds", kind="later.kind") == 0  # not due
            age = gauge("blackboard_oldest_open_item_age_seconds", kind="nobody.takes") or 0
            assert age <= time.time() - stuck.created_at / 1000 + 0.5
            assert gauge("blackboard_oldest_approval_age_seconds") == 0  # nothing waits
        finally:
            daemon.stop()


# -- a real Prometheus scraping a real daemon -------------------------------------------------

POLICY = """\
roles:
  work: {claim: ["obs.*"], post: ["obs.*"], read: ["obs.*"], tools: [lookup]}
  operator: {post: ["obs.*"], read: ["obs.*"], cancel: ["obs.*"], approve: ["obs.*"]}
principals:
  obs-worker: [work]
  obs-slow: [work]
  obs-llm: [work]
  obs-limited: [work]
  ghost: [work]
  http: [operator]
budgets:
  obs.capped: {max_items: 2}
approvals:
  - {kind: obs.approval}
"""
ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
TOOLS = '''\
def lookup(topic: str) -> str:
    """Look a topic up in the notes."""
    return f"notes on {topic}"
'''


@agent(name="obs-worker", consumes=["obs.task", "obs.approval"], concurrency=4)
async def obs_worker(item: Item, ctx: Context) -> dict[str, Any]:
    """ok: done; boom: raises (dead with max_attempts 1); flaky: fails its first attempt."""
    mode = (item.payload or {}).get("mode", "ok")
    if mode == "boom":
        raise RuntimeError("boom")
    if mode == "flaky" and item.attempts < 2:
        raise Retry(delay=0.05)
    return {"mode": mode}


@agent(name="obs-slow", consumes=["obs.slow"], lease=0.6)
async def obs_slow(item: Item, ctx: Context) -> dict[str, Any]:
    """Runs until its item is cancelled under it (its next heartbeat is fenced out)."""
    await anyio.sleep(60)
    return {}


def write_agents(folder: Path) -> Path:
    folder.mkdir()
    (folder / "_tools.py").write_text(TOOLS)
    llm = {
        "name": "obs-llm",
        "consumes": ["obs.ask"],
        "model": "offline/obs",
        "prompt": "Q: {{ payload.q }}",
        "output": {"schema": ANSWER},
        "tools": ["_tools.py:lookup"],
    }
    limited = {
        "name": "obs-limited",
        "consumes": ["obs.limited"],
        "model": "offline/limited",
        "prompt": "Q: {{ payload.q }}",
        "output": {"schema": ANSWER},
        "params": {"rate_limited": 1},  # the offline model answers each question's first call 429
    }
    (folder / "obs-llm.yaml").write_text(yaml.safe_dump(llm))
    (folder / "obs-limited.yaml").write_text(yaml.safe_dump(limited))
    (folder / "broken.py").write_text("raise RuntimeError('a plugin that fails to import')\n")
    return folder


def scenario_moves(board: str) -> list[tuple[str, dict[str, str]]]:
    """Samples each round of the scenario must move (so every dashboard query has data)."""
    task = {"kind": "obs.task", "agent": "obs-worker"}
    llm = {"agent": "obs-llm", "model": "offline/obs"}
    return [
        ("blackboard_items_posted_total", {"kind": "obs.task"}),
        ("blackboard_items_claimed_total", task),
        ("blackboard_items_completed_total", task),
        ("blackboard_items_completed_total", {"kind": "obs.approval", "agent": "obs-worker"}),
        ("blackboard_items_failed_total", task),
        ("blackboard_items_dead_total", task),
        ("blackboard_retries_total", task),
        ("blackboard_fencing_rejections_total", {"kind": "obs.slow", "agent": "obs-slow"}),
        ("blackboard_lease_expirations_total", {"kind": "obs.lease"}),
        ("blackboard_pickup_latency_seconds_count", {"kind": "obs.task"}),
        ("blackboard_handler_duration_seconds_count", task),
        ("blackboard_llm_requests_total", {**llm, "outcome": "ok"}),
        ("blackboard_llm_tokens_total", {**llm, "type": "prompt"}),
        ("blackboard_llm_tokens_total", {**llm, "type": "completion"}),
        ("blackboard_llm_cost_usd_total", llm),
        ("blackboard_llm_latency_seconds_count", llm),
        ("blackboard_llm_rate_limited_total", {"model": "offline/limited"}),
        ("blackboard_llm_tool_calls_total", {"agent": "obs-llm", "tool": "lookup", "outcome": "called"}),
        (
            "blackboard_policy_denials_total",
            {"action": "post", "kind": "forbidden.kind", "rule": "default-deny"},
        ),
        ("blackboard_budgets_exceeded_total", {"reason": "max_items"}),
        ("blackboard_approval_wait_seconds_count", {"verdict": "approve"}),
        ("blackboard_audit_records", {"board": board}),
        ("blackboard_audit_records_exported_total", {}),
    ]


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy (that value), or fail naming `what`."""
    try:
        with anyio.fail_after(timeout):
            while True:
                got = await check()
                if got:
                    return got
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def run_round(daemon: Daemon, api: httpx.AsyncClient, ghost: Board, n: int) -> None:
    """One pass over everything the dashboard shows; returns once the daemon's metrics show it."""
    reg, board = daemon.metrics.registry, daemon.settings.board
    moves = scenario_moves(board)

    def value(name: str, labels: dict[str, str]) -> float:
        return reg.get_sample_value(name, labels) or 0.0

    before = {(name, tuple(labels.items())): value(name, labels) for name, labels in moves}

    async def post(kind: str, payload: Any = None, status: int = 201, **fields: Any) -> dict[str, Any]:
        r = await api.post("/v1/items", json={"kind": kind, "payload": payload, **fields})
        assert r.status_code == status, r.text
        return dict(r.json())

    for mode, attempts in [("ok", 3)] * 3 + [("boom", 1), ("flaky", 3)]:
        await post("obs.task", {"mode": mode, "round": n}, max_attempts=attempts)
    for i in range(2):
        await post("obs.ask", {"q": f"{board} round {n} question {i}"})
    await post("obs.limited", {"q": f"{board} round {n} limited"})
    # A handler whose item is cancelled under it: its next heartbeat is fenced out.
    slow = await post("obs.slow", {"round": n})

    async def slow_claimed() -> bool:
        return bool((await api.get(f"/v1/items/{slow['id']}")).json()["status"] == "claimed")

    await until(slow_claimed, 10, "obs.slow to be claimed")
    assert (await api.post(f"/v1/items/{slow['id']}/cancel")).status_code == 200
    # A claim whose holder never heartbeats: the daemon's reaper expires its lease.
    await post("obs.lease", {"round": n})
    await until(lambda: ghost.claim("ghost", ["obs.lease"], lease=0.3), 5, "the ghost's claim")
    # A post the policy denies, and one over a goal's budget.
    await post("forbidden.kind", {}, status=403)
    goal = await post("obs.capped", {"round": n})
    await post("obs.part", {"n": 1}, parent=goal["id"])
    await post("obs.part", {"n": 2}, parent=goal["id"], status=429)
    # Two items gated for approval: one decided, one left waiting.
    decided = await post("obs.approval", {"round": n, "n": 1})
    await post("obs.approval", {"round": n, "n": 2})
    r = await api.post(f"/v1/items/{decided['id']}/approve", json={"note": "looks right"})
    assert r.status_code == 200, r.text

    async def moved() -> bool:
        stuck = [(name, lb) for name, lb in moves if value(name, lb) <= before[(name, tuple(lb.items()))]]
        return not stuck and value("blackboard_approvals_pending", {"board": board}) == n

    await until(moved, 20, f"round {n}'s metrics to move")


def prometheus_config(target: str, board: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, pointed at the test's daemon, scraping every second."""
    config: dict[str, Any] = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROM / "alerts.yml")]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "blackboard"]
    assert job["honor_labels"] is True  # the board label of board gauges is kept as scraped
    [static] = job["static_configs"]
    static.update(targets=[target], labels={**static["labels"], "board": board})
    return config


def instantiate(expr: str, board: str) -> str:
    """A dashboard query as Grafana sends it with $board = the board, All kinds and agents."""
    out = (
        expr.replace("$__rate_interval", "1m")
        .replace("$board", board)
        .replace("$kind", ".*")
        .replace("$agent", ".*")
    )
    assert "$" not in out, out
    return out


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_every_dashboard_query_returns_data_from_a_real_prometheus_scraping_a_real_daemon(
    redis_url: str, tmp_path: Path
) -> None:
    require("prometheus")
    board = unique_board()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "obs.yaml").write_text(POLICY)
    settings = Settings(
        url=redis_url,
        board=board,
        port=0,
        reload=False,
        entry_points=False,
        agents=[write_agents(tmp_path / "agents")],
        policies=[policies],
        audit_dir=tmp_path / "audit",
        audit_interval=0.3,
        presence_interval=0.2,
        reap_interval=0.2,
        sweep=1.0,
        grace=2.0,
        log_level="warning",
    )
    daemon = Daemon(settings, agents=[obs_worker, obs_slow])
    prom: Prometheus | None = None
    started = time.time()
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        try:
            assert daemon.http_url is not None
            target = daemon.http_url.removeprefix("http://")
            prom = Prometheus(tmp_path / "prometheus", prometheus_config(target, board))
            await anyio.to_thread.run_sync(prom.start)
            async with (
                httpx.AsyncClient(base_url=daemon.http_url, timeout=10) as api,
                httpx.AsyncClient(base_url=prom.url, timeout=10) as promql,
                await Board.connect(redis_url, board=board) as ghost,
            ):

                async def query(expr: str) -> dict[str, Any]:
                    r = await promql.get("/api/v1/query", params={"query": expr})
                    body: dict[str, Any] = r.json()
                    assert r.status_code == 200 and body["status"] == "success", (expr, body)
                    return body["data"]

                async def scraped_after(t: float) -> bool:
                    """Prometheus has scraped the daemon, successfully, since `t` (timestamp()
                    of a bare selector is the sample's own time)."""
                    up = f'up{{job="blackboard", board="{board}"}}'
                    [last] = (await query(f"timestamp({up})"))["result"] or [None]
                    [ok] = (await query(up))["result"] or [None]
                    return bool(last and ok) and float(last["value"][1]) > t and ok["value"][1] == "1"

                # Round 1 creates every labelled series; Prometheus scrapes them; round 2 moves
                # them all again, so rates and quantiles over the window have data.
                for n in (1, 2):
                    await run_round(daemon, api, ghost, n)
                    done = time.time()
                    await until(lambda: scraped_after(done), 15, f"a scrape after round {n}")  # noqa: B023
                await check_dashboard_queries(query, board)
                await check_scenario_values(query, board, time.time() - started)
                await check_alert_rules(promql, query, board, done)
        finally:
            if prom is not None:
                prom.stop()
            daemon.stop()


def scaler_queries(board: str) -> list[tuple[str, str]]:
    """The KEDA trigger queries of deploy/k8s (written for board "default"), for `board`."""
    scaled = yaml.safe_load((DEPLOY / "k8s" / "scaledobject.yaml").read_text())
    out = []
    for trigger in scaled["spec"]["triggers"]:
        expr = trigger["metadata"]["query"]
        assert 'board="default"' in expr, expr
        out.append(("KEDA trigger", expr.replace('board="default"', f'board="{board}"')))
    return out


async def check_dashboard_queries(query: Callable[[str], Awaitable[dict[str, Any]]], board: str) -> None:
    failures = []
    exprs = [(title, instantiate(expr, board)) for title, expr in queries()]
    assert len(exprs) >= 40
    for title, expr in [*exprs, *scaler_queries(board)]:
        data = await query(expr)
        values = [float(s["value"][1]) for s in data["result"]]
        if not any(math.isfinite(v) for v in values):
            failures.append(f"{title}: {expr} -> {data['result']}")
    assert not failures, "dashboard queries without data:\n" + "\n".join(failures)


async def check_scenario_values(
    query: Callable[[str], Awaitable[dict[str, Any]]], board: str, elapsed: float
) -> None:
    """What Prometheus holds is what the two rounds did."""

    async def one(expr: str) -> float:
        [sample] = (await query(expr))["result"]
        return float(sample["value"][1])

    b = f'board="{board}"'
    assert await one(f'blackboard_items_dead_total{{{b}, kind="obs.task"}}') == 2  # one boom a round
    assert await one(f'blackboard_retries_total{{{b}, kind="obs.task"}}') == 2  # one flaky a round
    assert await one(f'blackboard_items{{{b}, kind="obs.task", status="done"}}') == 8
    assert await one(f"blackboard_approvals_pending{{{b}}}") == 2  # one left waiting a round
    assert await one(f'blackboard_kind_consumers{{{b}, kind="obs.task"}}') == 1  # obs-worker
    assert await one(f'blackboard_kind_consumers{{{b}, kind="obs.capped"}}') == 0  # nobody
    assert 0 < await one(f'blackboard_oldest_open_item_age_seconds{{{b}, kind="obs.capped"}}') < elapsed
    assert 0 < await one(f"blackboard_oldest_approval_age_seconds{{{b}}}") < elapsed
    assert await one(f"sum(blackboard_plugin_load_errors_total{{{b}}})") == 1  # broken.py


async def check_alert_rules(
    promql: httpx.AsyncClient, query: Callable[[str], Awaitable[dict[str, Any]]], board: str, since: float
) -> None:
    """Every rule evaluates on the real series without error; those the scenario should trip do."""

    async def evaluated() -> list[dict[str, Any]] | None:
        groups = (await promql.get("/api/v1/rules")).json()["data"]["groups"]
        found = [r for g in groups for r in g["rules"]]
        fresh = all(r["lastEvaluation"] and _unix(r["lastEvaluation"]) > since for r in found)
        return found if fresh and {r["name"] for r in found} == ALERTS else None

    found = await until(evaluated, 15, "every alert rule to be evaluated")
    assert all(r["health"] == "ok" for r in found), [(r["name"], r.get("lastError")) for r in found]

    async def active() -> dict[tuple[str, str], str] | None:
        alerts = (await query(f'ALERTS{{board="{board}"}}'))["result"]
        got = {
            (a["metric"]["alertname"], a["metric"].get("kind", "")): a["metric"]["alertstate"] for a in alerts
        }
        return got if ("BlackboardDeadLettersGrowing", "obs.task") in got else None

    got = await until(active, 15, "the dead letters of the scenario to trip BlackboardDeadLettersGrowing")
    # Nobody consumes obs.capped (the budget's goal stays open): pending, for its 5 minutes.
    assert got.get(("BlackboardKindWithoutAgents", "obs.capped")) == "pending", got
    assert got.get(("BlackboardKindWithoutAgents", "obs.task")) is None, got  # obs-worker takes it
    for healthy in ("BlackboardDaemonUnready", "BlackboardDaemonDown", "BlackboardAuditExportFailing"):
        assert all(name != healthy for name, _ in got), got


def _unix(stamp: str) -> float:
    """Prometheus's RFC 3339 time (nanoseconds, a zone) as unix seconds."""
    m = re.fullmatch(r"([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    assert m, stamp
    whole = datetime.fromisoformat(m.group(1) + m.group(3).replace("Z", "+00:00"))
    return whole.timestamp() + float("0." + (m.group(2) or "0"))
