"""The data on a board: items, claims, events and what posting takes.

Models are frozen: a change is a new copy (`model_copy(update=...)`), and every effect goes
through `Board`, never through a model.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Status(StrEnum):
    """Where an item is in its life. See DESIGN.md for the transitions."""

    WAITING = "waiting"  # dependencies (or approval) pending
    OPEN = "open"  # claimable now, or at not_before
    CLAIMED = "claimed"  # leased to one worker
    DONE = "done"
    FAILED = "failed"  # an attempt failed; back to open after its backoff
    DEAD = "dead"  # attempts exhausted, or failed for good: the dead-letter set
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({Status.DONE, Status.DEAD, Status.CANCELLED})
CLAIMABLE_STATUSES = frozenset({Status.OPEN, Status.FAILED})

MAX_PRIORITY = 1000
# W3C trace context (version 00): the span that posted an item (see blackboard.tracing)
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Frozen):
    """One tool the model asked for in a model call's answer, and what running it did."""

    tool: str  # a Python tool's name, or an MCP tool's SERVER.TOOL
    args_hash: str = ""  # first 16 hex digits of the SHA-256 of its arguments (canonical JSON)
    duration_ms: float = 0.0
    error: str | None = None  # "refused: why", or the tool's or its server's error


class ModelCall(_Frozen):
    """One model (LLM) call made while handling an item, as recorded on the item."""

    model: str
    agent: str | None = None
    attempt: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None  # USD, litellm's price; None when the model has no known price
    latency_ms: float = 0.0
    error: str | None = None  # set when the call failed or its answer was invalid
    tools: tuple[str, ...] = ()  # tools the model called (refused ones are prefixed with '!')
    tool_calls: tuple[ToolCall, ...] = ()  # the tools it asked for, run (or refused) in order
    at: int = 0  # ms since the epoch


class UsageTotals(_Frozen):
    """Sums over model calls: of a goal (all its items), or of one model within it."""

    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    by_model: dict[str, UsageTotals] = Field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Item(_Frozen):
    """One entry on a board: an immutable payload with a mutable status."""

    id: str
    kind: str
    payload: Any = None
    status: Status
    priority: int = 0
    created_at: int  # ms since the epoch, by the Redis clock
    updated_at: int | None = None
    not_before: int | None = None
    attempts: int = 0
    max_attempts: int = 3
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_deadline: int | None = None
    handled_by: str | None = None  # agent of the latest claim, kept after it ends
    result: Any = None
    error: str | None = None
    reason: str | None = None  # why it waits, or why it was cancelled
    budget_exceeded: str | None = None  # a goal over its budget: which limit (it takes no more posts)
    parent: str | None = None
    root: str
    depth: int = 0
    after: tuple[str, ...] = ()
    pending: int = 0  # dependencies not yet done
    created_by: str | None = None
    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    visibility: tuple[str, ...] = ()
    traceparent: str | None = None  # W3C trace context of the span that posted it (tracing on)
    mark_strength: float | None = None
    ready_at: int | None = None  # when it last became claimable
    claimed_at: int | None = None
    finished_at: int | None = None
    usage: tuple[ModelCall, ...] = ()  # model calls made for it, over all attempts

    @property
    def is_goal(self) -> bool:
        return self.parent is None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Claim(_Frozen):
    """A lease on one item. Its `token` fences writes: only the current claim may write."""

    item: Item
    token: str
    agent: str
    deadline: int  # ms since the epoch

    @property
    def id(self) -> str:
        return self.item.id


def _check_finite(name: str, value: float | None) -> float | None:
    if value is not None and (math.isnan(value) or math.isinf(value) or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


class NewItem(_Frozen):
    """What posting takes. Validation here runs before anything reaches Redis."""

    kind: str
    payload: Any = None
    priority: int = Field(default=0, ge=0, le=MAX_PRIORITY)
    parent: str | None = None
    after: tuple[str, ...] = ()
    delay: float | None = None  # seconds from now
    not_before: float | None = None  # unix seconds
    max_attempts: int = Field(default=3, ge=1, le=1000)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=512)
    tags: tuple[str, ...] = ()
    visibility: tuple[str, ...] = ()  # labels: under a policy, only roles that `see` one may read it
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN)  # its poster's span
    id: str | None = None  # normally generated; deterministic for outputs

    @field_validator("delay", "not_before")
    @classmethod
    def _finite(cls, value: float | None, info: Any) -> float | None:
        return _check_finite(info.field_name, value)


class Event(_Frozen):
    """One state change from the board's event stream."""

    cursor: str  # stream id; pass back to resume after this event
    type: str  # posted, claimed, done, failed, dead, expired, released, cancelled, ...
    id: str
    kind: str
    status: Status
    root: str
    ts: int
    data: dict[str, str] = Field(default_factory=dict)


class KindStats(_Frozen):
    """Counts for one kind: items by status, plus the claim indexes' sizes."""

    kind: str
    by_status: dict[Status, int]
    ready: int
    delayed: int
    leased: int


class Stats(_Frozen):
    board: str
    kinds: dict[str, KindStats]
    dead_letters: int

    def total(self, status: Status) -> int:
        return sum(k.by_status.get(status, 0) for k in self.kinds.values())


class TreeNode(_Frozen):
    """A goal's lineage: an item and the items it posted."""

    item: Item
    children: tuple[TreeNode, ...] = ()

    def walk(self) -> list[Item]:
        out = [self.item]
        for child in self.children:
            out.extend(child.walk())
        return out


class Page(_Frozen):
    """One page of a query; pass `cursor` back to get the next (None: no more)."""

    items: tuple[Item, ...]
    cursor: str | None
