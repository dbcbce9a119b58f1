"""`Context`: what a handler gets besides its item — the board, seen from one claim.

Posts are collected and written by the completion, in the same atomic step that stores the
result, so a failed attempt leaves no children behind; their ids derive from the item's id and
the post's position, so a retried attempt that posts the same things posts each once.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import structlog

from blackboard import ids, policy, posting, tracing
from blackboard.agents import AgentSpec
from blackboard.board import Board
from blackboard.errors import InvalidInput
from blackboard.memory import Memory
from blackboard.metrics import Metrics
from blackboard.models import Claim, Item, ModelCall, NewItem, Page
from blackboard.views import ReadView


class Context:
    """Passed to `handle(item, ctx)`. One per claim."""

    def __init__(self, board: Board, claim: Claim, spec: AgentSpec, metrics: Metrics | None = None) -> None:
        self.board = board
        self.claim = claim
        self.spec = spec
        self.metrics = metrics
        self.outputs: list[NewItem] = []
        # Model calls of this attempt; recorded on the item with the outcome, success or not.
        self.usage: list[ModelCall] = []
        self.log = structlog.get_logger("blackboard.agent").bind(
            agent=spec.name,
            item_id=claim.id,
            kind=claim.item.kind,
            root=claim.item.root,
            board=board.name,
        )

    @property
    def item(self) -> Item:
        return self.claim.item

    @property
    def memory(self) -> Memory:
        """This agent's private scratch store (JSON values by name), shared by its handlers in
        every daemon and readable by no other agent's context."""
        return Memory(self.board, self.spec.name)

    @property
    def deadline(self) -> int:
        """The lease deadline (ms since the epoch) as of the claim; renewed automatically."""
        return self.claim.deadline

    def may_post(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, p) for p in self.spec.produces)

    async def post(self, kind: str, payload: Any = None, **fields: Any) -> NewItem:
        """Post a child of this item when the handler returns (atomically with the result).

        Returns the item as it will be posted; its `id` is final, so later posts may name it
        in `after`. The kind must be one the agent declares in `produces`.
        """
        if not self.may_post(kind):
            raise InvalidInput(
                "kind",
                f"agent {self.spec.name!r} may post only {list(self.spec.produces) or 'nothing'}, "
                f"not {kind!r}",
            )
        await policy.enforce(self.board, self.spec.name, "post", [kind])  # PolicyDenied, here
        slot = len(self.outputs)
        fields.setdefault("id", ids.child_id(self.claim.id, f"o{slot}"))
        if tracing.enabled and "traceparent" not in fields:  # a child span of the current one
            fields["traceparent"] = tracing.current_traceparent()
        new = posting.new_item("", kind=kind, payload=payload, **fields)
        # Check now (schema, size, ids) so the handler sees the error where it posted.
        posting.encode_batch(
            [new.model_copy(update={"parent": self.claim.id})],
            self.board.registry,
            strict=self.board.strict,
            max_payload_bytes=self.board.max_payload_bytes,
            actor=None,
        )
        self.outputs.append(new)
        return new

    async def get(self, item_id: str) -> Item:
        """An item, if this agent may read it (under a policy: `PolicyDenied` otherwise)."""
        return await ReadView(self.board, self.spec.name).get(item_id)

    async def query(self, **filters: Any) -> Page:
        """`Board.query` (kind, status, root, parent, limit, cursor), with only the items this
        agent may read (under a policy)."""
        return await ReadView(self.board, self.spec.name).query(**filters)

    async def dependency_results(self) -> dict[str, Any]:
        """Results of this item's `after` dependencies, by id (all done when it was opened)."""
        deps = await self.board.get_many(list(self.item.after))
        return {d.id: d.result for d in deps if d is not None}

    async def mark(self, item_id: str, strength: float = 1.0) -> float:
        return await self.board.mark(item_id, strength, actor=self.spec.name)
