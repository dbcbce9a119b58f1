"""Agents: what they declare (`AgentSpec`), the `Agent` base class and the `@agent` decorator.

An agent consumes items of some kinds and returns a result; it may post child items of the
kinds it declares it produces. It never talks to another agent: everything goes through the
board. Raising fails the claim (the board's retry and dead-letter rules apply); `Retry`
asks for a retry after a given delay.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from blackboard.errors import BlackboardError, InvalidInput
from blackboard.kinds import check_pattern
from blackboard.models import Item

if TYPE_CHECKING:
    from blackboard.board import Board
    from blackboard.context import Context
    from blackboard.settings import Settings

M = TypeVar("M", bound=BaseModel)
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class Retry(BlackboardError):
    """Raise from a handler to fail this attempt and retry after `delay` seconds."""

    def __init__(self, delay: float, reason: str = "retry requested") -> None:
        self.delay, self.reason = delay, reason
        super().__init__(f"{reason} (retry in {delay}s)")


class Fail(BlackboardError):
    """Raise from a handler to fail this attempt for good: the item is dead-lettered now."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AgentSpec(BaseModel):
    """What an agent declares. Validated when a plugin loads, so a bad one is reported."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    consumes: tuple[str, ...] = Field(min_length=1)
    produces: tuple[str, ...] = ()
    concurrency: int = Field(default=1, ge=1, le=10_000)
    lease: float = Field(default=30.0, gt=0, le=86_400)  # seconds; renewed while the handler runs
    timeout: float | None = Field(default=None, gt=0)  # handler timeout in seconds
    batch: int = Field(default=1, ge=1, le=1000)  # claims taken per round trip
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("expected 1-64 letters, digits, '_', '.', '-', starting with a letter")
        return v

    @field_validator("consumes", "produces")
    @classmethod
    def _kinds(cls, v: tuple[str, ...], info: Any) -> tuple[str, ...]:
        for i, k in enumerate(v):
            check_pattern(k, f"{info.field_name}[{i}]")
        return v


def spec_from(fields: dict[str, Any], where: str) -> AgentSpec:
    """An AgentSpec, or `InvalidInput` naming `where` and the field."""
    return validated(AgentSpec, fields, where)


def validated(model: type[M], fields: dict[str, Any], where: str) -> M:
    """`model` validated from `fields` (a declaration: agent, LLM agent, critic), or
    `InvalidInput` naming `where` and the first bad field."""
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, InvalidInput):  # raised by a validator below; keep its exact field
            raise InvalidInput(f"{where}.{cause.field}", cause.problem) from None
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{where}.{loc}" if loc else where, err["msg"]) from None
    except InvalidInput as e:
        raise InvalidInput(f"{where}.{e.field}", e.problem) from None


class Agent:
    """Subclass, set the class attributes, and implement `handle`.

    class Summarise(Agent):
        name = "summariser"
        consumes = ("doc.text",)
        produces = ("doc.summary",)

        async def handle(self, item, ctx):
            return {"summary": item.payload["text"][:100]}
    """

    name: ClassVar[str]
    consumes: ClassVar[tuple[str, ...]]
    produces: ClassVar[tuple[str, ...]] = ()
    concurrency: ClassVar[int] = 1
    lease: ClassVar[float] = 30.0
    timeout: ClassVar[float | None] = None
    batch: ClassVar[int] = 1

    _spec: AgentSpec | None = None

    @property
    def spec(self) -> AgentSpec:
        if self._spec is None:
            fields = {k: getattr(self, k) for k in AgentSpec.model_fields if hasattr(self, k)}
            fields.setdefault("description", (type(self).__doc__ or "").strip().split("\n")[0])
            self._spec = spec_from(fields, type(self).__name__)
        return self._spec

    async def setup(self, board: Board, settings: Settings | None) -> None:
        """Called once by the runner before the first claim (e.g. to read deployment settings
        or register something on the board). Raising keeps the agent from running."""

    async def teardown(self) -> None:
        """Called once by the runner when it is done: after the last handler has finished, or
        after `setup` raised. Close what `setup` opened: it runs in the same task as `setup` and
        at the same cancel-scope nesting, so `setup` may enter a task group that this exits
        (it may run cancelled, and must bound its own waits)."""

    async def handle(self, item: Item, ctx: Context) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<agent {self.spec.name} consumes={list(self.spec.consumes)}>"


Handler = Callable[[Item, "Context"], Awaitable[Any]]


class FunctionAgent(Agent):
    """An agent made from an async function by `@agent`."""

    def __init__(self, fn: Handler, spec: AgentSpec) -> None:
        self.fn = fn
        self._spec = spec
        self.__doc__ = fn.__doc__

    async def handle(self, item: Item, ctx: Context) -> Any:
        return await self.fn(item, ctx)

    async def __call__(self, item: Item, ctx: Context) -> Any:
        return await self.fn(item, ctx)


def agent(
    *,
    consumes: list[str] | tuple[str, ...],
    name: str | None = None,
    produces: list[str] | tuple[str, ...] = (),
    concurrency: int = 1,
    lease: float = 30.0,
    timeout: float | None = None,
    batch: int = 1,
) -> Callable[[Handler], FunctionAgent]:
    """Make an agent of an `async def handle(item, ctx)` function (its name by default)."""

    def wrap(fn: Handler) -> FunctionAgent:
        spec = spec_from(
            {
                "name": name or fn.__name__,
                "consumes": tuple(consumes),
                "produces": tuple(produces),
                "concurrency": concurrency,
                "lease": lease,
                "timeout": timeout,
                "batch": batch,
                "description": (fn.__doc__ or "").strip().split("\n")[0],
            },
            f"@agent {fn.__name__}",
        )
        return FunctionAgent(fn, spec)

    return wrap
