"""Declaring agents, and what a handler's Context allows."""

from __future__ import annotations

import pytest

from blackboard import Agent, Board, Context, InvalidInput, Item, agent
from blackboard.agents import AgentSpec

pytestmark = pytest.mark.anyio


def test_decorator_keeps_the_function_and_declares_a_spec() -> None:
    @agent(consumes=["a.*"], produces=["b"], concurrency=4, lease=10, timeout=5, batch=2)
    async def worker(item: Item, ctx: Context) -> str:
        """Does the work."""
        return "ok"

    assert worker.spec == AgentSpec(
        name="worker",
        consumes=("a.*",),
        produces=("b",),
        concurrency=4,
        lease=10,
        timeout=5,
        batch=2,
        description="Does the work.",
    )


def test_class_agents_declare_with_attributes() -> None:
    class Summarise(Agent):
        """Summarises docs."""

        name = "summariser"
        consumes = ("doc.text",)

    assert Summarise().spec.name == "summariser" and Summarise().spec.description == "Summarises docs."


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"consumes": []}, "consumes"),
        ({"consumes": ["Bad Kind"]}, "consumes[0]"),
        ({"consumes": ["a"], "produces": ["no good"]}, "produces[0]"),
        ({"consumes": ["a"], "name": "9lives"}, "name"),
        ({"consumes": ["a"], "concurrency": 0}, "concurrency"),
        ({"consumes": ["a"], "lease": 0}, "lease"),
        ({"consumes": ["a"], "timeout": -1}, "timeout"),
    ],
)
def test_bad_declarations_name_the_field(fields: dict, where: str) -> None:
    with pytest.raises(InvalidInput) as caught:

        @agent(**fields)
        async def worker(item: Item, ctx: Context) -> None: ...

    assert caught.value.field == f"@agent worker.{where}"


async def test_context_posts_only_declared_kinds_and_checks_them_early(board: Board) -> None:
    goal = await board.post("task")
    [claim] = await board.claim("w", ["task"])
    spec = AgentSpec(name="w", consumes=("task",), produces=("note.*",))
    ctx = Context(board, claim, spec)
    first = await ctx.post("note.text", {"n": 1})
    await ctx.post("note.text", {"n": 2}, after=[first.id])
    with pytest.raises(InvalidInput, match=r"may post only \['note\.\*'\], not 'task'"):
        await ctx.post("task")
    with pytest.raises(InvalidInput, match="payload"):
        await ctx.post("note.text", {"bad": float("nan")})
    assert len(ctx.outputs) == 2  # the rejected posts were not collected
    outs = await board.complete(claim, "ok", ctx.outputs)
    assert [o.id for o in outs] == [o.id for o in ctx.outputs] and outs[0].parent == goal.id
    assert outs[1].status.value == "waiting" and outs[1].after == (first.id,)


async def test_context_reads_dependency_results(board: Board) -> None:
    a = await board.post("part")
    [ca] = await board.claim("w", ["part"])
    await board.complete(ca, {"v": 1})
    join = await board.post("join", after=[a.id])
    [cj] = await board.claim("w", ["join"])
    ctx = Context(board, cj, AgentSpec(name="w", consumes=("join",)))
    assert await ctx.dependency_results() == {a.id: {"v": 1}}
    assert (await ctx.get(join.id)).status.value == "claimed"
    assert len((await ctx.query(kind="part")).items) == 1
