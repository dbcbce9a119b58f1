"""Budgets per goal and loop guards: checked by the board in the script that posts, so they hold
across every daemon; a goal that hits one stops growing, marked with the reason."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from blackboard import Board, NewItem, audit, policy
from blackboard.models import ModelCall, Status
from blackboard.policy import BudgetExceeded, RepeatedPost
from tests.conftest import FakeClock, unique_board
from tests.support.packs import daemon_settings

pytestmark = pytest.mark.anyio

OPEN_ROLES = """\
roles:
  anyone: {post: ["*"], claim: ["*"]}
principals:
  "*": [anyone]
"""


def rules(tmp_path: Path, budgets: str, more: str = "") -> policy.Policy:
    folder = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "p.yaml").write_text(OPEN_ROLES + textwrap.dedent(budgets) + textwrap.dedent(more))
    loaded = policy.load([folder])
    assert loaded is not None
    return loaded


async def goal_under(board: Board, tmp_path: Path, budget: str, more: str = "") -> Any:
    await policy.store(board, rules(tmp_path, f"budgets:\n  g.goal: {budget}\n", more))
    return await board.post("g.goal", {}, actor="cli")


def children(parent: str, n: int, start: int = 0) -> list[NewItem]:
    return [NewItem(kind="g.task", payload={"n": start + i}, parent=parent) for i in range(n)]


async def test_max_items_stops_the_goal_growing_and_marks_it(board: Board, tmp_path: Path) -> None:
    goal = await goal_under(board, tmp_path, "{max_items: 5}")
    await board.post_many(children(goal.id, 3))
    last = await board.last_event_id()
    with pytest.raises(BudgetExceeded, match="max_items") as e:
        await board.post_many(children(goal.id, 2, start=3))  # 1 + 3 + 2 > 5: the batch is refused whole
    assert e.value.goal == goal.id and e.value.reason == "max_items"
    tree = await board.tree(goal.id)
    assert len(list(tree.walk())) == 4  # nothing of the refused batch was written
    assert tree.item.budget_exceeded == "max_items"
    with pytest.raises(BudgetExceeded):  # even one that would fit: the goal is exhausted now
        await board.post_many(children(goal.id, 1, start=9))
    events = [ev for ev in (await board.read_events(last))[0] if ev.type == "budget_exceeded"]
    assert [(ev.id, ev.data.get("reason")) for ev in events] == [(goal.id, "max_items")]
    assert [r.op for r in await audit.tail(board, 1)] == ["budget_exceeded"]
    assert (await audit.verify_board(board))[0] is None


async def test_depth_fanout_and_wall_time(board: Board, tmp_path: Path, clock: FakeClock) -> None:
    goal = await goal_under(board, tmp_path, "{max_depth: 2, max_fanout: 2, max_seconds: 60}")
    [a, _] = await board.post_many(children(goal.id, 2))
    with pytest.raises(BudgetExceeded, match="max_fanout"):
        await board.post_many(children(goal.id, 1, start=2))

    goal = await board.post("g.goal", {"second": True}, actor="cli")
    [a] = await board.post_many(children(goal.id, 1))
    [b] = await board.post_many(children(a.id, 1, start=10))
    with pytest.raises(BudgetExceeded, match="max_depth"):
        await board.post_many(children(b.id, 1, start=20))

    goal = await board.post("g.goal", {"third": True}, actor="cli")
    await board.post_many(children(goal.id, 1))
    clock.advance(61)
    with pytest.raises(BudgetExceeded, match="max_seconds"):
        await board.post_many(children(goal.id, 1, start=1))


async def test_tokens_cost_and_rate_limits(board: Board, tmp_path: Path, clock: FakeClock) -> None:
    goal = await goal_under(board, tmp_path, "{max_tokens: 100, max_posts_per_minute: 3}")
    await board.post_many(children(goal.id, 1))
    [claim] = await board.claim("w", ["g.task"])
    call = ModelCall(model="m", agent="w", prompt_tokens=70, completion_tokens=40, at=0)
    await board.complete(claim, "x", usage=[call])  # the tree has now spent 110 tokens
    assert await policy.tokens_left(board, goal.id) == -10
    with pytest.raises(BudgetExceeded, match="max_tokens"):
        await board.post_many(children(goal.id, 1, start=1))

    goal = await board.post("g.goal", {"rate": True}, actor="cli")
    await board.post_many(children(goal.id, 3))
    with pytest.raises(BudgetExceeded, match="max_posts_per_minute"):
        await board.post_many(children(goal.id, 1, start=3))
    assert (await board.get(goal.id)).budget_exceeded == "max_posts_per_minute"

    await policy.store(board, rules(tmp_path, "budgets:\n  g.goal: {max_cost_usd: 0.01}\n"))
    goal = await board.post("g.goal", {"cost": True}, actor="cli")
    await board.post_many([NewItem(kind="g.priced", payload={}, parent=goal.id)])
    [claim] = await board.claim("w", ["g.priced"])
    await board.complete(claim, "x", usage=[call.model_copy(update={"cost": 0.02})])
    with pytest.raises(BudgetExceeded, match="max_cost_usd"):
        await board.post_many(children(goal.id, 1, start=1))


async def test_the_same_kind_and_payload_twice_under_a_goal_is_a_repeat(board: Board, tmp_path: Path) -> None:
    await policy.store(board, rules(tmp_path, "", "allow_repeats: [g.tick]\n"))
    goal = await board.post("g.goal", {}, actor="cli")
    [first] = await board.post_many([NewItem(kind="g.task", payload={"q": 1}, parent=goal.id)])
    with pytest.raises(RepeatedPost, match=r"g\.task"):
        await board.post_many([NewItem(kind="g.task", payload={"q": 1}, parent=goal.id)])
    with pytest.raises(RepeatedPost):  # within one batch too
        await board.post_many([NewItem(kind="g.task", payload={"q": 2}, parent=goal.id)] * 2)
    assert len(list((await board.tree(goal.id)).walk())) == 2
    # a different payload, a kind allowed to repeat, another goal, a re-post of the same id: fine
    await board.post_many([NewItem(kind="g.task", payload={"q": 3}, parent=goal.id)])
    await board.post_many([NewItem(kind="g.tick", payload={}, parent=goal.id)] * 1)
    await board.post_many([NewItem(kind="g.tick", payload={}, parent=goal.id)])
    other = await board.post("g.goal", {"other": True}, actor="cli")
    await board.post_many([NewItem(kind="g.task", payload={"q": 1}, parent=other.id)])
    again = NewItem(kind="g.task", payload={"q": 1}, parent=goal.id, id=first.id)
    assert [it.id for it in await board.post_many([again])] == [first.id]


RUNAWAY = """
from blackboard import agent

@agent(name="runaway", consumes=["loop.*"], produces=["loop.step"])
async def again(item, ctx):
    await ctx.post("loop.step", {"n": (item.payload or {}).get("n", 0) + 1})  # forever, if let
    return "again"
"""


async def test_a_runaway_agent_is_stopped_at_the_limit_and_the_daemon_stays_healthy(
    board_url: str, tmp_path: Path
) -> None:
    from blackboard.daemon import Daemon

    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "runaway.py").write_text(RUNAWAY)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "p.yaml").write_text(OPEN_ROLES + "budgets:\n  loop.goal: {max_items: 25}\n")
    name = unique_board()
    daemon = Daemon(daemon_settings(board_url, name, [tmp_path / "agents"], policies=[folder]))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        goal = await daemon.board.post("loop.goal", {}, actor="cli")
        with anyio.fail_after(20):
            while not (await daemon.board.get(goal.id)).budget_exceeded:  # noqa: ASYNC110 - in Redis
                await anyio.sleep(0.02)
            tree = await daemon.board.tree(goal.id)
            while any(it.status is Status.CLAIMED for it in tree.walk()):
                await anyio.sleep(0.02)
                tree = await daemon.board.tree(goal.id)
        items = list(tree.walk())
        assert len(items) == 25 and tree.item.budget_exceeded == "max_items"
        stuck = [it for it in items if it.error and "BudgetExceeded" in it.error]
        assert stuck, [(it.kind, it.status, it.error) for it in items]  # the step that hit the limit
        metric = daemon.metrics.registry.get_sample_value
        assert (metric("blackboard_budgets_exceeded_total", {"reason": "max_items"}) or 0) >= 1
        assert daemon.ready
        daemon.stop()


WORKER = """\
name: spender
consumes: [spend.task]
model: offline/spender
concurrency: 4
max_tokens: 64
prompt: "Task {{ payload.n }}"
output:
  schema: {type: object, properties: {answer: {type: string}}, required: [answer]}
"""


@pytest.mark.timeout(90)
async def test_two_daemons_overrun_one_token_budget_by_at_most_their_calls_in_flight(
    board_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blackboard.daemon import Daemon

    monkeypatch.setenv("BLACKBOARD_OFFLINE_LATENCY", "0.05")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "spender.yaml").write_text(WORKER)
    folder = tmp_path / "policies"
    folder.mkdir()
    budget = 1500
    (folder / "p.yaml").write_text(OPEN_ROLES + f"budgets:\n  spend.goal: {{max_tokens: {budget}}}\n")
    name = unique_board()
    daemons = [
        Daemon(daemon_settings(board_url, name, [tmp_path / "agents"], policies=[folder])) for _ in range(2)
    ]
    async with anyio.create_task_group() as tg:
        for d in daemons:
            await tg.start(d.run)
        board = daemons[0].board
        goal = await board.post("spend.goal", {}, actor="cli")
        tasks = await board.post_many(
            [NewItem(kind="spend.task", payload={"n": i}, parent=goal.id) for i in range(60)], actor="cli"
        )
        with anyio.fail_after(60):
            while any(  # noqa: ASYNC110 - the condition lives in Redis
                it is not None and it.status not in (Status.DONE, Status.DEAD)
                for it in await board.get_many([t.id for t in tasks])
            ):
                await anyio.sleep(0.05)
        usage = await board.usage(goal.id)
        items = [it for it in await board.get_many([t.id for t in tasks]) if it is not None]
        per_call = max(c.prompt_tokens + c.completion_tokens for it in items for c in it.usage)
        in_flight = sum(d.slots["spender"].runner.spec.concurrency for d in daemons)
        spent = usage.prompt_tokens + usage.completion_tokens
        # spent up to the limit (a call is refused when its estimate, <= 2 calls' worth, does
        # not fit) and over it by no more than the calls that were in flight at once
        assert budget - 2 * per_call <= spent <= budget + in_flight * per_call, (spent, per_call)
        refused = [it for it in items if it.status is Status.DEAD and "budget" in (it.error or "")]
        assert refused and all(not it.usage for it in refused)  # refused before the model was called
        for d in daemons:
            d.stop()
