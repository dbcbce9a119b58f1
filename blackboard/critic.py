"""The critic: a stock agent that reviews items of guarded kinds before anyone may claim them.

Placing a critic on kind K (`guards: [K]`) registers K as guarded on the board. From then on,
every item of K is posted waiting on a review item (`review.K`, posted with it in the same
atomic step, by the board itself, whoever posts), so downstream agents cannot claim it until
the critic has approved it. A rejected item is cancelled and its producer's input is posted
again with the critique (`critique`, `rejected`, `revision` added to its payload), so the
producer revises it; after `max_revisions` the review is dead-lettered, which cancels the item.

    name: fix-critic
    guards: [software.fix]
    check: checks.py:review_fix      # Python: (item, producer_input) -> None/True | False | "critique"
    max_revisions: 3
    # or judge with a model instead of `check`:
    # model: offline/critic
    # prompt: "Review this fix: {{ target.payload | tojson }}"
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from blackboard.agents import Agent, Fail, spec_from, validated
from blackboard.models import Item, Status

if TYPE_CHECKING:
    from blackboard.board import Board
    from blackboard.context import Context
    from blackboard.llm.agent import LLMAgent
    from blackboard.settings import Settings

REVIEW_PREFIX = "review."
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "critique": {"type": "string"}},
    "required": ["approved", "critique"],
}


def review_kind(kind: str) -> str:
    return REVIEW_PREFIX + kind


class CriticSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    guards: tuple[str, ...] = Field(min_length=1)
    check: str | None = None  # "file.py:function"
    model: str | None = None
    system: str = "You review work handed from one agent to the next. Approve it only if it is correct."
    prompt: str = "Review this {{ target.kind }}:\n{{ target.payload | tojson }}"
    max_revisions: int = Field(default=3, ge=0, le=100)
    concurrency: int = 1
    lease: float = 60.0
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> CriticSpec:
        if (self.check is None) == (self.model is None):
            raise ValueError("expected exactly one of 'check' (file.py:function) or 'model' (an LLM judge)")
        return self


class Critic(Agent):
    def __init__(self, spec: CriticSpec, base: Path, where: str, resolve: Any) -> None:
        self.critic = spec
        self._spec = spec_from(
            {
                "name": spec.name,
                "consumes": tuple(review_kind(k) for k in spec.guards),
                "produces": ("*",),  # revisions go back as the producer's input kind
                "concurrency": spec.concurrency,
                "lease": spec.lease,
                "description": spec.description or f"critic of {', '.join(spec.guards)}",
            },
            where,
        )
        self.check = resolve(spec.check, base) if spec.check else None
        self.judge: LLMAgent | None = None
        if spec.model is not None:
            from blackboard.llm.agent import LLMAgent
            from blackboard.llm.spec import LLMSpec

            llm = LLMSpec(
                name=spec.name,
                consumes=self._spec.consumes,
                model=spec.model,
                system=spec.system,
                prompt=spec.prompt,
                output={"schema": VERDICT_SCHEMA},  # type: ignore[arg-type]
                params=spec.params,
            )
            self.judge = LLMAgent(llm, base, where, resolve)

    async def setup(self, board: Board, settings: Settings | None) -> None:
        for kind in self.critic.guards:
            await board.guard(kind, review_kind(kind))
        if self.judge is not None:
            await self.judge.setup(board, settings)

    async def handle(self, item: Item, ctx: Context) -> Any:
        target = await ctx.get(str(item.payload["target"]))
        if target.status is not Status.WAITING:  # cancelled meanwhile, or reviewed already
            return {"target": target.id, "skipped": target.status.value}
        producer = await ctx.get(target.parent) if target.parent else None
        approved, critique = await self._verdict(item, target, producer, ctx)
        if approved:
            return {"target": target.id, "approved": True, "critique": critique}
        base = producer.payload if producer is not None and isinstance(producer.payload, dict) else {}
        revision = int(base.get("revision", 0)) + 1
        if producer is None or revision > self.critic.max_revisions:
            raise Fail(f"rejected {target.id} for good (revision {revision - 1}): {critique}")
        await ctx.board.cancel(
            target.id, f"rejected by {self.critic.name}: {critique}", actor=self.critic.name
        )
        payload = base if base or producer.payload is None else {"input": producer.payload}
        await ctx.post(  # the same input again (its dependencies are done: it opens at once)
            producer.kind,
            {**payload, "critique": critique, "rejected": target.payload, "revision": revision},
            after=producer.after,
        )
        return {"target": target.id, "approved": False, "critique": critique, "revision": revision}

    async def _verdict(
        self, item: Item, target: Item, producer: Item | None, ctx: Context
    ) -> tuple[bool, str]:
        if self.judge is not None:
            brief = {"id": target.id, "kind": target.kind, "payload": target.payload}
            variables = {
                "target": brief,
                "producer": None
                if producer is None
                else {"kind": producer.kind, "payload": producer.payload},
                "payload": item.payload,
                "file": self.judge.files,
            }
            out = await self.judge.ask(item, variables, ctx)
            return bool(out["approved"]), str(out.get("critique", ""))
        assert self.check is not None
        verdict = self.check(target, producer)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is None or verdict is True:
            return True, ""
        if verdict is False:
            return False, "rejected by review"
        if isinstance(verdict, tuple):
            return bool(verdict[0]), str(verdict[1])
        return False, str(verdict)


def parse(data: dict[str, Any], path: Path) -> CriticSpec:
    """A CriticSpec, or `InvalidInput` naming the file and the field."""
    return validated(CriticSpec, data, path.name)
