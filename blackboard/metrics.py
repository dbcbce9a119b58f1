"""Every Prometheus metric of a daemon, on one explicit registry. Seconds, `_total` counters,
bounded labels only (kind, agent, status, board; never an item id).

Counters count what this daemon did; sum them across daemons. Gauges of board depth are the
board's own counts (the same on every daemon of a board); aggregate them with `max`.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from blackboard.models import ModelCall

HANDLER_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    3600,
)
APPROVAL_BUCKETS = (1, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400)
PICKUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ka = ["kind", "agent"]
        self.posted = Counter(
            "blackboard_items_posted", "Items posted through this daemon.", ["kind"], registry=r
        )
        self.claimed = Counter(
            "blackboard_items_claimed", "Items claimed by this daemon's agents.", ka, registry=r
        )
        self.completed = Counter("blackboard_items_completed", "Claims completed.", ka, registry=r)
        self.failed = Counter(
            "blackboard_items_failed", "Failed attempts (raised, timed out, bad result).", ka, registry=r
        )
        self.dead = Counter(
            "blackboard_items_dead", "Items dead-lettered by this daemon's agents.", ka, registry=r
        )
        self.retries = Counter("blackboard_retries", "Failed attempts that will be retried.", ka, registry=r)
        self.fenced = Counter(
            "blackboard_fencing_rejections",
            "Writes rejected because the claim was no longer current.",
            ka,
            registry=r,
        )
        self.lease_expired = Counter(
            "blackboard_lease_expirations",
            "Expired leases returned to open or dead by this daemon.",
            ["kind"],
            registry=r,
        )
        self.reclaims = Counter(
            "blackboard_reclaims", "Claims of items whose previous lease had expired.", ["kind"], registry=r
        )
        self.handler_seconds = Histogram(
            "blackboard_handler_duration_seconds",
            "Handler run time.",
            ka,
            buckets=HANDLER_BUCKETS,
            registry=r,
        )
        self.pickup_seconds = Histogram(
            "blackboard_pickup_latency_seconds",
            "From an item becoming claimable to its claim.",
            ["kind"],
            buckets=PICKUP_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("blackboard_in_flight", "Handlers running now.", ["agent"], registry=r)
        self.items = Gauge(
            "blackboard_items",
            "Items on the board by kind and status.",
            ["board", "kind", "status"],
            registry=r,
        )
        self.live_agents = Gauge(
            "blackboard_live_agents", "Agents alive on the board (all daemons).", ["board"], registry=r
        )
        self.live_daemons = Gauge(
            "blackboard_live_daemons", "Daemons alive on the board.", ["board"], registry=r
        )
        self.kind_consumers = Gauge(
            "blackboard_kind_consumers",
            "Live agents (all daemons) that consume a kind, for each kind on the board.",
            ["board", "kind"],
            registry=r,
        )
        self.oldest_open = Gauge(
            "blackboard_oldest_open_item_age_seconds",
            "Age of the oldest open item of a kind that is due (0: none).",
            ["board", "kind"],
            registry=r,
        )
        self.agents_loaded = Gauge("blackboard_agents_loaded", "Agents running in this daemon.", registry=r)
        self.plugin_errors = Counter(
            "blackboard_plugin_load_errors",
            "Plugins that failed to import or validate.",
            ["plugin"],
            registry=r,
        )
        self.redis_errors = Counter(
            "blackboard_redis_errors", "Redis commands that failed and were retried.", registry=r
        )
        self.reconnects = Counter(
            "blackboard_redis_reconnects", "Recoveries after Redis was unreachable.", registry=r
        )
        self.ready = Gauge(
            "blackboard_ready", "1 when the daemon can reach Redis and runs its agents.", registry=r
        )
        self.policy_denials = Counter(
            "blackboard_policy_denials",
            "Actions the policy refused, by the deciding rule (default-deny, visibility, agent-tools).",
            ["action", "kind", "rule"],
            registry=r,
        )
        self.budgets_exceeded = Counter(
            "blackboard_budgets_exceeded",
            "Posts refused because their goal hit a budget.",
            ["reason"],
            registry=r,
        )
        self.approvals_pending = Gauge(
            "blackboard_approvals_pending", "Items waiting for a human's approval.", ["board"], registry=r
        )
        self.oldest_approval = Gauge(
            "blackboard_oldest_approval_age_seconds",
            "How long the longest-waiting item pending approval has waited (0: none waits).",
            ["board"],
            registry=r,
        )
        self.approval_wait = Histogram(
            "blackboard_approval_wait_seconds",
            "How long decided approvals waited, by verdict (approve, reject).",
            ["verdict"],
            buckets=APPROVAL_BUCKETS,
            registry=r,
        )
        self.policy_errors = Counter(
            "blackboard_policy_load_errors",
            "Policy loads that failed (the previous policy stayed).",
            registry=r,
        )
        self.audit_exported = Counter(
            "blackboard_audit_records_exported", "Audit records this daemon moved to files.", registry=r
        )
        self.audit_records = Gauge(
            "blackboard_audit_records",
            "Audit records written on the board (the chain's head).",
            ["board"],
            registry=r,
        )
        self.audit_lag = Gauge(
            "blackboard_audit_export_lag_records", "Audit records in Redis not yet exported.", registry=r
        )
        self.audit_errors = Counter(
            "blackboard_audit_export_errors", "Audit exports that failed (broken chain, disk).", registry=r
        )
        self.purged = Counter(
            "blackboard_items_purged", "Items of finished goals deleted by retention.", registry=r
        )
        am = ["agent", "model"]
        self.llm_requests = Counter(
            "blackboard_llm_requests", "Model calls, by outcome (ok or error).", [*am, "outcome"], registry=r
        )
        self.llm_tokens = Counter(
            "blackboard_llm_tokens",
            "Tokens used by model calls, by type (prompt, completion).",
            [*am, "type"],
            registry=r,
        )
        self.llm_cost = Counter(
            "blackboard_llm_cost_usd", "Cost of model calls (litellm's prices).", am, registry=r
        )
        self.llm_latency = Histogram(
            "blackboard_llm_latency_seconds",
            "Latency of one model call.",
            am,
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80),
        )
        self.llm_rate_limited = Counter(
            "blackboard_llm_rate_limited", "429 answers that made a model cool down.", ["model"], registry=r
        )
        self.llm_tool_calls = Counter(
            "blackboard_llm_tool_calls",
            "Tools models asked for, by outcome (called, error, refused).",
            ["agent", "tool", "outcome"],
            registry=r,
        )
        self.llm_tool_seconds = Histogram(
            "blackboard_llm_tool_duration_seconds",
            "Run time of one tool call (Python or MCP), refusals excluded.",
            ["agent", "tool"],
            registry=r,
            buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    def count_model_calls(self, agent: str, calls: Sequence[ModelCall]) -> None:
        """Count one attempt's model calls by agent and model."""
        for c in calls:
            labels = (agent, c.model)
            self.llm_requests.labels(*labels, "error" if c.error else "ok").inc()
            self.llm_tokens.labels(*labels, "prompt").inc(c.prompt_tokens)
            self.llm_tokens.labels(*labels, "completion").inc(c.completion_tokens)
            if c.cost:
                self.llm_cost.labels(*labels).inc(c.cost)
            self.llm_latency.labels(*labels).observe(c.latency_ms / 1000)
