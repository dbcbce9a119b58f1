"""`AgentRunner`: one agent's life in a daemon — claim, run handlers, keep leases, finish.

A claim loop takes up to `concurrency` items; each handler runs in its own cancel scope under
the runner's task group; one heartbeat task renews every held lease in one call, and one
completer sends the completions that finish together in one call (`blackboard.completer`). Stopping
follows dramatiq's order: stop taking work, keep heartbeats going while handlers finish, then
give back (release) whatever is still running when the grace period ends.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from blackboard import tracing
from blackboard.agents import Agent, Fail, Retry
from blackboard.board import Board
from blackboard.completer import Completer
from blackboard.context import Context
from blackboard.errors import BlackboardError, BoardUnavailable, LeaseLost
from blackboard.metrics import Metrics
from blackboard.models import Claim, Status
from blackboard.settings import Settings

log = structlog.get_logger("blackboard.runner")

# Writes that must reach Redis after a cancellation get this long, shielded.
CLEANUP_TIMEOUT = 10.0


class _Running:
    """A handler in flight: its claim (kept current by heartbeats) and its cancel scope."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.scope = anyio.CancelScope()
        self.lost = False  # lease lost: nothing left to write


class AgentRunner:
    def __init__(
        self,
        board: Board,
        agent: Agent,
        metrics: Metrics,
        *,
        sweep: float = 5.0,
        settings: Settings | None = None,
    ) -> None:
        self.board = board
        self.settings = settings
        self.agent = agent
        self.spec = agent.spec
        self.metrics = metrics
        self.sweep = sweep
        self.running: dict[str, _Running] = {}
        self.completer = Completer(board)
        self.stopping = False
        self._claim_scope = anyio.CancelScope()
        self._changed = anyio.Event()  # a handler finished or stop was asked
        self.completed = 0
        self.set_up = anyio.Event()  # set once the agent's setup() has run (or failed)
        self.done = anyio.Event()  # set when run() has returned

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped and drained."""
        try:
            try:
                try:
                    await self.agent.setup(self.board, self.settings)
                finally:
                    self.set_up.set()
            except Exception as e:  # a broken agent is reported and skipped, never the daemon's end
                log.error(
                    "agent setup failed; not running it",
                    agent=self.spec.name,
                    error=f"{type(e).__name__}: {e}",
                )
                self.metrics.plugin_errors.labels(f"agent {self.spec.name}").inc()
                task_status.started()
                return
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeats)
                tg.start_soon(self.completer.run)
                task_status.started()
                with self._claim_scope:
                    await self._claim_loop(tg)
                while self.running:  # stopped claiming: let handlers finish (drain bounds this)
                    await self._wait_changed()
                tg.cancel_scope.cancel()  # heartbeats and the completer
        finally:
            # Not wrapped in a cancel scope of its own: teardown runs at setup's nesting, so what
            # setup entered (a task group, say) can be exited here; the agent bounds its own wait.
            try:
                await self.agent.teardown()
            except Exception as e:  # reported; the daemon carries on
                log.error("agent teardown failed", agent=self.spec.name, error=f"{type(e).__name__}: {e}")
            self.done.set()

    def stop_claiming(self) -> None:
        self.stopping = True
        self._claim_scope.cancel()
        self._notify()

    async def drain(self, grace: float) -> None:
        """Stop claiming; give handlers `grace` seconds, then cancel and release the rest."""
        self.stop_claiming()
        with anyio.move_on_after(grace):
            while self.running:
                await self._wait_changed()
        self.abort()

    def abort(self) -> None:
        """Cancel every running handler now; their claims are released."""
        self.stop_claiming()
        for r in list(self.running.values()):
            r.scope.cancel()

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self, tg: TaskGroup) -> None:
        spec, delay = self.spec, 0.05
        while not self.stopping:
            free = spec.concurrency - len(self.running)
            if free <= 0:
                await self._wait_changed()
                continue
            try:
                claims, due = await self.board.claim_with_due(
                    spec.name, spec.consumes, n=min(free, spec.batch), lease=spec.lease
                )
                if not claims:
                    wait = self.sweep if due is None else max(0.001, min(self.sweep, due - time.time()))
                    await self.board.wait_for_work(spec.consumes, timeout=wait)
                    continue
            except BoardUnavailable as e:  # Redis away: keep trying, never die
                log.warning("claim failed; retrying", agent=spec.name, error=str(e), retry_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            for claim in claims:
                self._count_claim(claim)
                running = _Running(claim)
                self.running[claim.id] = running
                tg.start_soon(self._handle, running)

    def _count_claim(self, claim: Claim) -> None:
        item = claim.item
        self.metrics.claimed.labels(item.kind, self.spec.name).inc()
        if item.attempts > 1 and (item.error or "").startswith("lease expired"):
            self.metrics.reclaims.labels(item.kind).inc()
        if item.claimed_at and item.ready_at:
            self.metrics.pickup_seconds.labels(item.kind).observe(
                max(0, item.claimed_at - item.ready_at) / 1000
            )

    # -- running a handler ------------------------------------------------------------------

    async def _handle(self, running: _Running) -> None:
        claim, spec = running.claim, self.spec
        ctx = Context(self.board, claim, spec, self.metrics)
        labels = (claim.item.kind, spec.name)
        self.metrics.in_flight.labels(spec.name).inc()
        started = time.perf_counter()
        outcome: tuple[str, Any, float | bool | None] | None = None
        span = tracing.start_handle(self.board, claim) if tracing.enabled else None
        error: BaseException | None = None
        try:
            with running.scope, tracing.NO_SPAN if span is None else tracing.use(span):
                with anyio.fail_after(spec.timeout) if spec.timeout else nullcontext():
                    result = await self.agent.handle(claim.item, ctx)
                outcome = ("complete", result, None)
        except TimeoutError as e:
            error, outcome = e, ("fail", f"handler timed out after {spec.timeout}s", None)
        except Retry as e:
            error, outcome = e, ("fail", e.reason, e.delay)
        except Fail as e:
            error, outcome = e, ("fail", e.reason, False)
        except Exception as e:  # a failing handler fails its claim, never the daemon
            error = e
            # Our own errors (invalid output, bad posts) say all in one line; others get a traceback.
            ctx.log.warning(
                "handler raised",
                error=f"{type(e).__name__}: {e}",
                exc_info=not isinstance(e, BlackboardError),
            )
            outcome = ("fail", f"{type(e).__name__}: {e}", None)
        finally:
            self.metrics.handler_seconds.labels(*labels).observe(time.perf_counter() - started)
            self.metrics.in_flight.labels(spec.name).dec()
            self.metrics.count_model_calls(spec.name, ctx.usage)
            if span is not None:
                tracing.end_handle(span, outcome, len(ctx.outputs), error)
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT) as cleanup:
                await self._finish(running, ctx, outcome)
            if cleanup.cancelled_caught:
                ctx.log.error("could not record the outcome in time; the lease will expire and retry")
        finally:
            self.running.pop(claim.id, None)
            self._notify()

    async def _finish(
        self, running: _Running, ctx: Context, outcome: tuple[str, Any, float | bool | None] | None
    ) -> None:
        claim = running.claim
        labels = (claim.item.kind, self.spec.name)
        try:
            if running.lost:
                return
            if outcome is None:  # cancelled by drain/abort: give it back untouched
                await self.board.release([claim])
                return
            op, value, delay = outcome
            if op == "complete":
                try:
                    await self.completer.complete(claim, value, ctx.outputs, ctx.usage)
                    self.metrics.completed.labels(*labels).inc()
                    for out in ctx.outputs:
                        self.metrics.posted.labels(out.kind).inc()
                    self.completed += 1
                    return
                except LeaseLost:
                    raise
                except BlackboardError as e:  # unserialisable result, invalid outputs
                    value, delay = f"{type(e).__name__}: {e}", None
            status = await self.board.fail(claim, value, retry=delay, usage=ctx.usage)
            self.metrics.failed.labels(*labels).inc()
            (self.metrics.dead if status is Status.DEAD else self.metrics.retries).labels(*labels).inc()
            ctx.log.info("attempt failed", error=value, status=status.value)
        except LeaseLost as e:
            self.metrics.fenced.labels(*labels).inc()
            ctx.log.warning("claim no longer current; result dropped", status=e.status)
        except BoardUnavailable as e:
            ctx.log.error("could not record the outcome; the lease will expire and retry", error=str(e))

    # -- leases -----------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        """Renew every held lease a few times per lease period, in one call."""
        interval = max(0.05, self.spec.lease / 3)
        while True:
            await anyio.sleep(interval)
            held = list(self.running.values())
            if not held:
                continue
            try:
                renewed = await self.board.heartbeat([r.claim for r in held], lease=self.spec.lease)
            except BlackboardError as e:
                log.warning("heartbeat failed", agent=self.spec.name, error=str(e))
                continue
            for r, new in zip(held, renewed, strict=True):
                if isinstance(new, LeaseLost):
                    r.lost = True  # cancelled, or expired and taken over: stop working on it
                    r.scope.cancel()
                    self.metrics.fenced.labels(r.claim.item.kind, self.spec.name).inc()
                else:
                    r.claim = new
