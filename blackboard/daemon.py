"""The daemon: wiring. One task group owns every long-lived task — signal handling, Redis health,
the reaper, the presence heartbeat, the plugin watcher, one runner per agent, the HTTP server.

Shutdown order (as in dramatiq's Worker.stop): stop claiming everywhere; let in-flight handlers
finish within the grace period while heartbeats keep their leases; release what is left; then
leave the board's presence list and stop. A second signal skips the grace period, but leases
are still released.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from blackboard import approvals, connection, gauges, plugins, policy, presence, retention, tracing
from blackboard.agents import Agent
from blackboard.board import Board
from blackboard.errors import BlackboardError, InvalidInput
from blackboard.metrics import Metrics
from blackboard.models import Status
from blackboard.presence import AgentInfo, DaemonInfo
from blackboard.runner import CLEANUP_TIMEOUT, AgentRunner
from blackboard.settings import Settings

log = structlog.get_logger("blackboard.daemon")

UNFINISHED = (Status.OPEN, Status.CLAIMED, Status.WAITING, Status.FAILED)
# Collector thresholds once the startup heap is frozen. Python's default (700, 10, 10) runs a
# young collection every 700 allocations: a hundred concurrent handlers (and litellm) make that
# ~200 pauses per swarm goal, 20-30 ms of stalled loop. A long-lived server can afford to let
# 50,000 young objects pile up (memory bounded, cycles still collected); the swarm bench's CPU per
# goal drops by a fifth with it (docs/ARCHITECTURE.md).
GC_THRESHOLD = (50_000, 50, 100)
LEAVE_TIMEOUT = 5.0  # seconds to remove the presence record on the way out (Redis may be away)


class _Slot:
    """A running agent and the plugin it came from."""

    def __init__(self, runner: AgentRunner, source: str) -> None:
        self.runner, self.source = runner, source


class Daemon:
    def __init__(self, settings: Settings, *, agents: Sequence[Agent] = (), until_idle: bool = False) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.id = presence.new_daemon_id()
        self.started_at = time.time()
        self.static_agents = list(agents)
        self.until_idle = until_idle
        self.slots: dict[str, _Slot] = {}
        self.plugin_errors: dict[str, str] = {}
        self.redis_ok = False
        self.running = False
        self.http_url: str | None = None
        self._stop = anyio.Event()
        self._stopping = False
        self._tg: TaskGroup | None = None
        self._files_policy: policy.Policy | None = None  # what this daemon's policy files say
        self._retention_cursor: str | None = None  # where the next retention sweep goes on
        self.board = Board(
            connection.connect(settings.url),
            settings.board,
            url=settings.url,
            shards=settings.shards,
            strict=settings.strict,
            on_redis_error=self._redis_error,
            on_lease_expired=self._lease_expired,
        )
        self.board.daemon_id = self.id
        self.board.on_denied = lambda action, kind, rule: self.metrics.policy_denials.labels(
            action, kind, rule
        ).inc()
        self.board.on_budget_exceeded = lambda reason: self.metrics.budgets_exceeded.labels(reason).inc()

    @property
    def ready(self) -> bool:
        return self.redis_ok and self.running and not self._stopping

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`), then shut down gracefully."""
        traced = tracing.configure(self.settings.otel_endpoint, instance=self.id)  # off: imports nothing
        try:
            # Every log line of this daemon's tasks (they inherit the context) names board and daemon.
            with structlog.contextvars.bound_contextvars(board=self.settings.board, daemon=self.id):
                await self._run(task_status)
        finally:
            if traced:  # flush the spans still batched (in a thread: it may wait for the collector)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(tracing.shutdown)

    async def _run(self, task_status: TaskStatus[None]) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._signals)
                await tg.start(self._health)
                await self._load_policy()
                self._load_everything()
                # Ready means set up: a critic's guard is on the board before anything is posted.
                for slot in list(self.slots.values()):
                    await slot.runner.set_up.wait()
                # Agents are loaded (litellm's large heap among them): keep what exists now out of
                # the collector's full passes, which otherwise stall the loop for ~170 ms.
                gc.collect()
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLD)
                if self.settings.reload:
                    tg.start_soon(self._watch)
                    tg.start_soon(self._watch_policies)
                tg.start_soon(self._reaper)
                if self.settings.audit_dir is not None:
                    tg.start_soon(self._audit_exporter)
                tg.start_soon(self._presence)
                if self.settings.http:
                    from blackboard.http import serve

                    await tg.start(serve, self)
                if self.until_idle:
                    tg.start_soon(self._exit_when_idle)
                self.running = True
                log.info(
                    "daemon started",
                    daemon=self.id,
                    board=self.settings.board,
                    url=self.board.url,
                    agents=sorted(self.slots),
                    http=self.http_url,
                )
                task_status.started()
                await self._stop.wait()
                await self._shutdown()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(LEAVE_TIMEOUT):
                with suppress(BlackboardError):
                    await presence.leave(self.board, self.id)
                await self.board.close()
            log.info("daemon stopped", daemon=self.id)

    def stop(self) -> None:
        """Begin a graceful shutdown."""
        self._stop.set()

    async def wait_stopping(self) -> None:
        """Return once a shutdown has begun (a signal, `stop()`, or idle with `until_idle`)."""
        await self._stop.wait()

    def abort(self) -> None:
        """Skip the grace period: cancel handlers now (their leases are still released)."""
        self._stop.set()
        for slot in self.slots.values():
            slot.runner.abort()

    async def _shutdown(self) -> None:
        self._stopping = True
        log.info("shutting down", grace=self.settings.grace, in_flight=self.in_flight)
        async with anyio.create_task_group() as tg:
            for slot in list(self.slots.values()):
                tg.start_soon(slot.runner.drain, self.settings.grace)
        for slot in list(self.slots.values()):
            await slot.runner.done.wait()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self._stop.is_set():
                    log.info("signal received; draining", signal=signal.Signals(signum).name)
                    self.stop()
                else:
                    log.warning("second signal; releasing in-flight work now")
                    self.abort()

    @property
    def in_flight(self) -> int:
        return sum(s.runner.in_flight for s in self.slots.values())

    # -- agents -----------------------------------------------------------------------------

    def _load_everything(self) -> None:
        if self.static_agents:
            self.apply(plugins.Plugin("(programmatic)", list(self.static_agents)))
        if self.settings.entry_points:
            for plugin in plugins.load_entry_points():
                self.apply(plugin)
        for folder in self.settings.agents:
            for path in plugins.plugin_files(folder):
                self.apply(plugins.load_file(path))

    def apply(self, plugin: plugins.Plugin) -> None:
        """Start a plugin's agents, draining the ones its previous version ran."""
        if plugin.ok:
            taken = [
                a.spec.name
                for a in plugin.agents
                if a.spec.name in self.slots and self.slots[a.spec.name].source != plugin.source
            ]
            names = [a.spec.name for a in plugin.agents]
            if taken:
                plugin.error = f"agent name already used by another plugin: {', '.join(taken)}"
            elif len(set(names)) != len(names):
                plugin.error = "defines two agents with the same name"
        if not plugin.ok:
            self.plugin_errors[plugin.source] = plugin.error or ""
            self.metrics.plugin_errors.labels(Path(plugin.source).name).inc()
            log.error("plugin not loaded; other agents carry on", plugin=plugin.source, error=plugin.error)
            return
        self.plugin_errors.pop(plugin.source, None)
        self.remove(plugin.source)
        assert self._tg is not None
        for agent in plugin.agents:
            runner = AgentRunner(
                self.board, agent, self.metrics, sweep=self.settings.sweep, settings=self.settings
            )
            self.slots[agent.spec.name] = _Slot(runner, plugin.source)
            self._tg.start_soon(runner.run)
        self.metrics.agents_loaded.set(len(self.slots))
        log.info("plugin loaded", plugin=plugin.source, agents=[a.spec.name for a in plugin.agents])

    def remove(self, source: str) -> None:
        """Drain and forget the agents that `source` provided."""
        assert self._tg is not None
        for name, slot in list(self.slots.items()):
            if slot.source == source:
                del self.slots[name]
                self._tg.start_soon(slot.runner.drain, self.settings.grace)
                log.info("agent stopping", agent=name, plugin=source)
        self.metrics.agents_loaded.set(len(self.slots))

    async def _watch(self) -> None:
        """Hot reload: a new or changed plugin file (re)starts its agents; a deleted one stops them."""
        from watchfiles import Change, awatch

        folders = [f for f in self.settings.agents if await anyio.Path(f).is_dir()]
        if not folders:
            return
        async for changes in awatch(*folders, stop_event=self._stop, debounce=200, step=50):
            for change, raw in sorted(changes, key=lambda c: c[1]):
                path = Path(raw)
                if path.suffix not in plugins.SUFFIXES or path.name.startswith((".", "_")):
                    continue
                if change == Change.deleted or not await anyio.Path(path).exists():
                    self.plugin_errors.pop(str(path), None)
                    self.remove(str(path))
                else:
                    self.apply(plugins.load_file(path))

    # -- background duties ------------------------------------------------------------------

    async def _health(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Ping Redis every second: readiness follows it; reconnects are counted."""
        started = False
        while True:
            try:
                with anyio.fail_after(2):
                    await self.board.redis.ping()
                if not self.redis_ok:
                    if started:
                        self.metrics.reconnects.inc()
                        log.info("redis reachable again")
                    await self.board.check_shard_count()
                    await self.board.load_kinds()
                self.redis_ok = True
            except InvalidInput:  # the board's shard count is not the configured one: can't run
                raise
            except Exception as e:  # any failure to reach Redis means unready, never dead
                if self.redis_ok or not started:
                    log.warning("redis unreachable; daemon unready", error=str(e) or type(e).__name__)
                self.redis_ok = False
            self.metrics.ready.set(1 if self.ready else 0)
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(1.0)

    async def _reaper(self) -> None:
        while True:
            await anyio.sleep(self.settings.reap_interval)
            try:
                await self.board.reap()
                if self.board.policy is not None and self.board.policy.approvals:
                    await approvals.decide_due(self.board)
                if self.settings.retention is not None:  # a page of the lineage per beat, in turn
                    n, self._retention_cursor = await retention.purge(
                        self.board, self.settings.retention, cursor=self._retention_cursor, scan_limit=2000
                    )
                    self.metrics.purged.inc(n)
            except BlackboardError as e:
                log.warning("reap failed", error=str(e))

    async def _load_policy(self) -> None:
        """Load the policy files and make them the board's. No files: the board's stored policy,
        or open. Files that fail to load: the policy in force stays, else everything is denied."""
        folders = [str(f) for f in self.settings.policies]
        try:
            loaded = self._files_policy = policy.load(self.settings.policies)
        except (policy.PolicyError, OSError) as e:
            self.metrics.policy_errors.inc()
            log.error("policy not loaded; the policy in force stays", error=str(e))
            if self.board.policy is None:
                self.board.policy = await self._stored_policy() or policy.DENY_ALL
            return
        try:
            if loaded is None:
                self.board.policy = await self._stored_policy()
                if self.board.policy is None:
                    log.warning(
                        "no policy files: the board runs open, everything is allowed", folders=folders
                    )
                return
            await policy.store(self.board, loaded, actor=f"daemon:{self.id}")
            log.info("policy loaded", version=loaded.version, files=list(loaded.sources))
        except BlackboardError as e:  # Redis away: enforce what the files say, store it later
            self.board.policy = loaded or self.board.policy
            log.error("policy not stored on the board", error=str(e))

    async def _stored_policy(self) -> policy.Policy | None:
        try:
            return await policy.fetch(self.board)
        except BlackboardError as e:
            log.error("could not read the board's policy", error=str(e))
            return None

    async def _follow_policy(self) -> None:
        """Adopt the version another daemon stored. A board with none stored (Redis was away at
        load) or cleared (`policy clear`) gets this daemon's files again, if it has any: policy
        never fails open while a daemon is configured with one. Cleared and no files: open."""
        raw = await self.board.retrying(lambda: self.board.redis.hget(self.board.keys.meta, "policy_version"))
        version = raw.decode() if raw else None
        current = self.board.policy.version if self.board.policy is not None else None
        if version in (None, "open") and self._files_policy is not None:
            await policy.store(self.board, self._files_policy, actor=f"daemon:{self.id}")
            log.warning("the board had no policy stored: this daemon's files stored again", was=version)
        elif version == "open" and current is not None:
            self.board.policy = None
            log.warning("the board's policy was cleared: it runs open, everything is allowed")
        elif version not in (None, "open", current) and (stored := await policy.fetch(self.board)):
            self.board.policy = stored
            log.info("policy changed on the board", version=stored.version)

    async def _watch_policies(self) -> None:
        """Hot reload of the policy folders: a change reloads them all (a bad file keeps the
        policy in force)."""
        from watchfiles import awatch

        folders = [f for f in self.settings.policies if await anyio.Path(f).is_dir()]
        if folders:
            async for _ in awatch(*folders, stop_event=self._stop, debounce=200, step=50):
                await self._load_policy()

    async def _audit_exporter(self) -> None:
        """Move the board's audit records into `audit_dir`, every `audit_interval` (the board's
        lock lets one daemon at a time do it). A failure is logged and counted, never fatal."""
        from blackboard import audit
        from blackboard.audit_export import AuditChainBroken, AuditExporter

        assert self.settings.audit_dir is not None
        key = self.settings.audit_key.get_secret_value().encode() if self.settings.audit_key else None
        exporter = AuditExporter(self.board, self.settings.audit_dir, key)
        while True:
            try:
                self.metrics.audit_exported.inc(await exporter.export())
                self.metrics.audit_lag.set(await audit.export_lag(self.board))  # all shards
            except AuditChainBroken as e:  # the shards not broken were exported all the same
                self.metrics.audit_exported.inc(e.exported)
                self.metrics.audit_errors.inc()
                log.error("audit export failed", error=f"{type(e).__name__}: {e}")
            except (BlackboardError, OSError) as e:
                self.metrics.audit_errors.inc()
                log.error("audit export failed", error=f"{type(e).__name__}: {e}")
            await anyio.sleep(self.settings.audit_interval)

    async def _presence(self) -> None:
        while True:
            try:
                await presence.beat(self.board, self.info())
                await self._follow_policy()
                await gauges.report(self.board, self.metrics)
            except BlackboardError as e:
                log.warning("presence update failed", error=str(e))
            await anyio.sleep(self.settings.presence_interval)

    def info(self) -> DaemonInfo:
        return DaemonInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            beat_at=time.time(),
            ready=self.ready,
            http=self.http_url,
            plugin_errors=dict(self.plugin_errors),
            agents=tuple(
                AgentInfo(
                    name=n,
                    consumes=s.runner.spec.consumes,
                    produces=s.runner.spec.produces,
                    concurrency=s.runner.spec.concurrency,
                    in_flight=s.runner.in_flight,
                    completed=s.runner.completed,
                    source=s.source,
                )
                for n, s in sorted(self.slots.items())
            ),
        )

    async def _exit_when_idle(self) -> None:
        """For demos and batch runs: stop once the board has items and none is unfinished."""
        cursor = await self.board.last_event_id()
        while True:
            _, cursor = await self.board.read_events(cursor, block=1.0)
            stats = await self.board.stats()
            if stats.kinds and not any(stats.total(s) for s in UNFINISHED):
                log.info("board idle; stopping")
                self.stop()
                return

    # -- metric hooks -----------------------------------------------------------------------

    def _redis_error(self, error: BaseException) -> None:
        self.metrics.redis_errors.inc()

    def _lease_expired(self, kind: str, n: int) -> None:
        self.metrics.lease_expired.labels(kind).inc(n)


def longest_shutdown(grace: float) -> float:
    """The longest a graceful shutdown can take (drain, shielded cleanup, leaving the presence
    record): a supervisor's stop timeout must be longer, or it kills a daemon still draining."""
    return grace + CLEANUP_TIMEOUT + LEAVE_TIMEOUT


def check_bind(settings: Settings) -> None:
    """Refuse to serve the API beyond loopback without a token."""
    loopback = settings.host in connection.LOOPBACK
    if settings.http and not loopback and settings.api_token is None and not settings.api_principals:
        raise InvalidInput(
            "host", f"binding to {settings.host} needs an API token (BLACKBOARD_API_TOKEN or --api-token)"
        )
