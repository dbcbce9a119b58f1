"""The Grafana dashboard of a blackboard deployment, as plain dicts.

`python deploy/grafana/dashboard.py` writes deploy/grafana/dashboards/blackboard.json (Grafana
provisions it from there); `--check` exits 1 when the committed file differs from what this
generator makes. tests/test_observability.py asserts the same, and runs every query below
through a real Prometheus scraping a real daemon.

Template variables: `$board` (the `board` label: the board's own on board gauges, the scrape
target's on a daemon's counters, see deploy/prometheus/prometheus.yml), `$kind` and `$agent`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "blackboard.json"
UID = "blackboard-overview"
DS = {"type": "prometheus", "uid": "${datasource}"}

B = 'board=~"$board"'
BK = f'{B}, kind=~"$kind"'
BA = f'{B}, agent=~"$agent"'
BKA = f'{BK}, agent=~"$agent"'
RI = "$__rate_interval"
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))

Panel = dict[str, Any]


def target(expr: str, legend: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend}


def panel(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    stack: bool = False,
) -> Panel:
    custom: dict[str, Any] = {}
    if kind == "timeseries":
        custom = {"drawStyle": "line", "fillOpacity": 10, "showPoints": "never", "spanNulls": True}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
    options: dict[str, Any] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    if kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": options,
        "targets": targets,
    }


def rate(metric: str, labels: str, by: str, legend: str, window: str = RI) -> dict[str, Any]:
    return target(f"sum by ({by}) (rate({metric}{{{labels}}}[{window}]))", legend)


def quantiles(metric: str, labels: str, window: str = RI) -> list[dict[str, Any]]:
    """p50/p95/p99 of a histogram over every series `labels` select."""
    return [
        target(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{labels}}}[{window}])))", name)
        for q, name in QUANTILES
    ]


def rows() -> list[tuple[str, str, list[Panel]]]:
    """(title, description, panels) of each row, top to bottom."""
    return [
        (
            "Throughput",
            "Items through this board's daemons, per kind (counters summed across daemons).",
            [
                panel(
                    "Posted per kind",
                    "Items posted per second through the daemons (HTTP API and agents' children), "
                    "by kind: blackboard_items_posted_total.",
                    [rate("blackboard_items_posted_total", BK, "kind", "{{kind}}")],
                    unit="ops",
                ),
                panel(
                    "Completed per kind",
                    "Claims completed per second, by kind: blackboard_items_completed_total.",
                    [rate("blackboard_items_completed_total", BKA, "kind", "{{kind}}")],
                    unit="ops",
                ),
                panel(
                    "Failed attempts per kind",
                    "Attempts that failed per second (raised, timed out, bad result), by kind; a "
                    "failure is retried or dead-lettered: blackboard_items_failed_total.",
                    [rate("blackboard_items_failed_total", BKA, "kind", "{{kind}}")],
                    unit="ops",
                ),
                panel(
                    "Dead-lettered per kind",
                    "Items dead-lettered per second by the daemons' agents (attempts exhausted or "
                    "Fail raised), by kind: blackboard_items_dead_total. `blackboard dlq ls` lists them.",
                    [rate("blackboard_items_dead_total", BKA, "kind", "{{kind}}")],
                    unit="ops",
                ),
            ],
        ),
        (
            "Board depth",
            "The board's own counts, the same on every daemon (aggregated with max).",
            [
                panel(
                    "Items by kind and status",
                    "Items on the board by kind and status, from the board's counters "
                    "(blackboard_items, refreshed every presence beat).",
                    [target(f"max by (kind, status) (blackboard_items{{{BK}}})", "{{kind}} {{status}}")],
                    stack=True,
                ),
                panel(
                    "Open items per kind",
                    "Items waiting to be claimed (open, including those delayed by a post's delay or "
                    "a retry's back-off), by kind.",
                    [target(f'max by (kind) (blackboard_items{{{BK}, status="open"}})', "{{kind}}")],
                ),
                panel(
                    "Oldest open item age",
                    "Age of the oldest open item of each kind that is due: work nobody picks up "
                    "grows here (blackboard_oldest_open_item_age_seconds).",
                    [
                        target(
                            f"max by (kind) (blackboard_oldest_open_item_age_seconds{{{BK}}})",
                            "{{kind}}",
                        )
                    ],
                    unit="s",
                ),
                panel(
                    "Dead letters on the board",
                    "Items in the dead-letter state now, all kinds selected (blackboard_items with "
                    'status="dead"); `blackboard dlq retry` requeues them.',
                    [target(f'sum(max by (kind) (blackboard_items{{{BK}, status="dead"}}))', "dead")],
                    kind="stat",
                ),
            ],
        ),
        (
            "Latency",
            "Pickup latency and handler run time, from the daemons' histograms.",
            [
                panel(
                    "Pickup latency",
                    "From an item becoming claimable to its claim, p50/p95/p99 over the selected "
                    "kinds (blackboard_pickup_latency_seconds).",
                    quantiles("blackboard_pickup_latency_seconds", BK),
                    unit="s",
                ),
                panel(
                    "Handler duration",
                    "Handler run time, p50/p95/p99 over the selected kinds and agents "
                    "(blackboard_handler_duration_seconds).",
                    quantiles("blackboard_handler_duration_seconds", BKA),
                    unit="s",
                ),
                panel(
                    "Handler duration p95 by agent",
                    "The 95th percentile of handler run time, per agent.",
                    [
                        target(
                            "histogram_quantile(0.95, sum by (le, agent) "
                            f"(rate(blackboard_handler_duration_seconds_bucket{{{BKA}}}[{RI}])))",
                            "{{agent}}",
                        )
                    ],
                    unit="s",
                ),
                panel(
                    "Handlers in flight",
                    "Handlers running now, per agent, summed over daemons (blackboard_in_flight).",
                    [target(f"sum by (agent) (blackboard_in_flight{{{BA}}})", "{{agent}}")],
                ),
            ],
        ),
        (
            "Retries, leases and fencing",
            "Signs of failing handlers, dying daemons and work done twice.",
            [
                panel(
                    "Retries per kind",
                    "Failed attempts that will be retried, per second, by kind (blackboard_retries_total).",
                    [rate("blackboard_retries_total", BKA, "kind", "{{kind}}")],
                    unit="ops",
                ),
                panel(
                    "Lease expirations per kind",
                    "Claims whose lease ran out (a daemon died or its loop stalled) returned to open "
                    "or dead, per second (blackboard_lease_expirations_total).",
                    [rate("blackboard_lease_expirations_total", BK, "kind", "{{kind}}")],
                    unit="ops",
                ),
                panel(
                    "Fencing rejections",
                    "Writes refused because the claim was no longer current (lease expired and taken "
                    "over, or the item cancelled), per second, by kind and agent "
                    "(blackboard_fencing_rejections_total).",
                    [rate("blackboard_fencing_rejections_total", BKA, "kind, agent", "{{kind}} {{agent}}")],
                    unit="ops",
                ),
            ],
        ),
        (
            "Agents and daemons",
            "What is alive on the board, and each daemon's health.",
            [
                panel(
                    "Live agents",
                    "Agents alive on the board, over all daemons (blackboard_live_agents).",
                    [target(f"max by (board) (blackboard_live_agents{{{B}}})", "{{board}}")],
                    kind="stat",
                ),
                panel(
                    "Live daemons",
                    "Daemons whose heartbeat is fresh (blackboard_live_daemons).",
                    [target(f"max by (board) (blackboard_live_daemons{{{B}}})", "{{board}}")],
                    kind="stat",
                ),
                panel(
                    "Live agents per kind",
                    "Live agents that consume each kind; 0 for a kind with open items means nobody "
                    "will take them (blackboard_kind_consumers).",
                    [target(f"max by (kind) (blackboard_kind_consumers{{{BK}}})", "{{kind}}")],
                ),
                panel(
                    "Daemons ready",
                    "1 per daemon that reaches Redis and runs its agents (blackboard_ready, /readyz).",
                    [target(f"max by (instance) (blackboard_ready{{{B}}})", "{{instance}}")],
                ),
                panel(
                    "Agents loaded per daemon",
                    "Agents running in each daemon (blackboard_agents_loaded).",
                    [target(f"max by (instance) (blackboard_agents_loaded{{{B}}})", "{{instance}}")],
                ),
                panel(
                    "Plugin load errors",
                    "Plugins that failed to import or validate since each daemon started, by file "
                    "(blackboard_plugin_load_errors_total); `blackboard agents` shows the error.",
                    [
                        target(
                            f"sum by (instance, plugin) (blackboard_plugin_load_errors_total{{{B}}})",
                            "{{instance}} {{plugin}}",
                        )
                    ],
                ),
            ],
        ),
        (
            "Redis",
            "The daemons' view of Redis.",
            [
                panel(
                    "Redis errors",
                    "Redis commands that failed and were retried, per second, per daemon "
                    "(blackboard_redis_errors_total).",
                    [rate("blackboard_redis_errors_total", B, "instance", "{{instance}}")],
                    unit="ops",
                ),
                panel(
                    "Redis reconnects",
                    "Recoveries after Redis was unreachable, per daemon, in each interval "
                    "(blackboard_redis_reconnects_total).",
                    [
                        target(
                            f"sum by (instance) (increase(blackboard_redis_reconnects_total{{{B}}}[{RI}]))",
                            "{{instance}}",
                        )
                    ],
                ),
            ],
        ),
        (
            "LLM",
            "Model calls of LLM agents, by agent and model.",
            [
                panel(
                    "Tokens per second",
                    "Prompt and completion tokens per second, by agent and model "
                    "(blackboard_llm_tokens_total).",
                    [
                        rate(
                            "blackboard_llm_tokens_total",
                            BA,
                            "agent, model, type",
                            "{{agent}} {{model}} {{type}}",
                        )
                    ],
                    stack=True,
                ),
                panel(
                    "Cost per hour",
                    "Spend rate in USD per hour at litellm's prices, by agent and model "
                    "(blackboard_llm_cost_usd_total).",
                    [
                        target(
                            "sum by (agent, model) "
                            f"(rate(blackboard_llm_cost_usd_total{{{BA}}}[{RI}])) * 3600",
                            "{{agent}} {{model}}",
                        )
                    ],
                    unit="currencyUSD",
                    stack=True,
                ),
                panel(
                    "Model latency p95",
                    "95th percentile latency of one model call, by agent and model "
                    "(blackboard_llm_latency_seconds).",
                    [
                        target(
                            "histogram_quantile(0.95, sum by (le, agent, model) "
                            f"(rate(blackboard_llm_latency_seconds_bucket{{{BA}}}[{RI}])))",
                            "{{agent}} {{model}}",
                        )
                    ],
                    unit="s",
                ),
                panel(
                    "Model latency p50/p95/p99",
                    "Latency of one model call over the selected agents, all models.",
                    quantiles("blackboard_llm_latency_seconds", BA),
                    unit="s",
                ),
                panel(
                    "Model calls by outcome",
                    "Model calls per second by agent, model and outcome (ok, error): "
                    "blackboard_llm_requests_total.",
                    [
                        rate(
                            "blackboard_llm_requests_total",
                            BA,
                            "agent, model, outcome",
                            "{{agent}} {{model}} {{outcome}}",
                        )
                    ],
                    unit="ops",
                ),
                panel(
                    "Rate limited (429)",
                    "429 answers that cooled a model down for every daemon, per second, by model "
                    "(blackboard_llm_rate_limited_total).",
                    [rate("blackboard_llm_rate_limited_total", B, "model", "{{model}}")],
                    unit="ops",
                ),
                panel(
                    "Tool calls",
                    "Tools models asked for, per second, by agent, tool and outcome (called, error: "
                    "the tool raised or its MCP server failed, refused: by the policy or the agent's "
                    "list): blackboard_llm_tool_calls_total.",
                    [
                        rate(
                            "blackboard_llm_tool_calls_total",
                            BA,
                            "agent, tool, outcome",
                            "{{agent}} {{tool}} {{outcome}}",
                        )
                    ],
                    unit="ops",
                ),
            ],
        ),
        (
            "Governance: policy and budgets",
            "What the policy refused, and goals that hit a budget.",
            [
                panel(
                    "Policy denials by rule",
                    "Actions the policy refused per second, by action and deciding rule "
                    "(default-deny, visibility, agent-tools): blackboard_policy_denials_total.",
                    [rate("blackboard_policy_denials_total", BK, "action, rule", "{{action}} {{rule}}")],
                    unit="ops",
                ),
                panel(
                    "Budgets exceeded",
                    "Posts refused because their goal hit a budget, per second, by the limit "
                    "(blackboard_budgets_exceeded_total).",
                    [rate("blackboard_budgets_exceeded_total", B, "reason", "{{reason}}")],
                    unit="ops",
                ),
                panel(
                    "Policy load errors",
                    "Policy loads that failed in each interval (the previous policy stayed): "
                    "blackboard_policy_load_errors_total.",
                    [
                        target(
                            f"sum by (instance) (increase(blackboard_policy_load_errors_total{{{B}}}[{RI}]))",
                            "{{instance}}",
                        )
                    ],
                ),
            ],
        ),
        (
            "Approvals",
            "Items waiting for a human's decision, and how long decisions took.",
            [
                panel(
                    "Approvals pending",
                    "Items waiting for approval now (blackboard_approvals_pending); `blackboard "
                    "approvals` lists them.",
                    [target(f"max by (board) (blackboard_approvals_pending{{{B}}})", "{{board}}")],
                    kind="stat",
                ),
                panel(
                    "Longest approval wait",
                    "How long the longest-waiting pending item has waited "
                    "(blackboard_oldest_approval_age_seconds).",
                    [target(f"max by (board) (blackboard_oldest_approval_age_seconds{{{B}}})", "{{board}}")],
                    unit="s",
                ),
                panel(
                    "Approval wait time",
                    "How long the approvals decided in the last hour waited, p50/p95/p99 "
                    "(blackboard_approval_wait_seconds).",
                    quantiles("blackboard_approval_wait_seconds", B, window="1h"),
                    unit="s",
                ),
                panel(
                    "Decisions by verdict",
                    "Approvals decided in the last hour, by verdict (approve, reject; a timeout "
                    "rejects by default).",
                    [
                        target(
                            f"sum by (verdict) (increase(blackboard_approval_wait_seconds_count{{{B}}}[1h]))",
                            "{{verdict}}",
                        )
                    ],
                ),
            ],
        ),
        (
            "Audit",
            "The hash-chained audit log: records written on the board and moved to files.",
            [
                panel(
                    "Audit records written",
                    "Audit records appended to the board's chain per second (the derivative of "
                    "blackboard_audit_records, the chain's head).",
                    [target(f"max by (board) (deriv(blackboard_audit_records{{{B}}}[{RI}]))", "{{board}}")],
                    unit="ops",
                ),
                panel(
                    "Audit records exported",
                    "Audit records moved to JSONL files per second, per exporting daemon "
                    "(blackboard_audit_records_exported_total).",
                    [rate("blackboard_audit_records_exported_total", B, "instance", "{{instance}}")],
                    unit="ops",
                ),
                panel(
                    "Audit export lag",
                    "Audit records in Redis not yet exported, as the exporting daemon last saw "
                    "(blackboard_audit_export_lag_records); it grows without an exporter.",
                    [target(f"max by (board) (blackboard_audit_export_lag_records{{{B}}})", "{{board}}")],
                ),
                panel(
                    "Audit export errors",
                    "Audit exports that failed in each interval (broken chain, disk): "
                    "blackboard_audit_export_errors_total.",
                    [
                        target(
                            "sum by (instance) "
                            f"(increase(blackboard_audit_export_errors_total{{{B}}}[{RI}]))",
                            "{{instance}}",
                        )
                    ],
                ),
            ],
        ),
    ]


def variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, source: str) -> dict[str, Any]:
        q = f"label_values({source}, {label})"
        return {
            "type": "query",
            "name": name,
            "label": name,
            "datasource": DS,
            "query": {"query": q, "refId": f"{name}-values"},
            "definition": q,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
        }

    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Prometheus",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"},
        },
        query("board", "board", "blackboard_live_daemons"),
        query("kind", "kind", f"blackboard_items{{{B}}}"),
        query("agent", "agent", f"blackboard_items_claimed_total{{{B}}}"),
    ]


def dashboard() -> dict[str, Any]:
    panels: list[Panel] = []
    y, next_id = 0, 1
    for title, description, members in rows():
        panels.append(
            {
                "type": "row",
                "title": title,
                "description": description,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        per_line = min(len(members), 4)
        width = 24 // per_line
        for i, p in enumerate(members):
            x, line = (i % per_line) * width, i // per_line
            refs = [{**t, "refId": chr(ord("A") + n)} for n, t in enumerate(p["targets"])]
            panels.append(
                {
                    **p,
                    "id": next_id,
                    "gridPos": {"h": 8, "w": width, "x": x, "y": y + 8 * line},
                    "targets": refs,
                }
            )
            next_id += 1
        y += 8 * ((len(members) + per_line - 1) // per_line)
    return {
        "uid": UID,
        "title": "blackboard",
        "description": "Throughput, depth, latency, failures, agents, Redis, LLM usage, governance and "
        "audit of blackboard daemons. Generated by deploy/grafana/dashboard.py: edit that, not this file.",
        "tags": ["blackboard"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
