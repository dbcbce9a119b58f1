"""Reads under a policy on every path: a principal's view of trees, event feeds, dead letters and
approvals leaves out what it may not read; the HTTP tree and event routes and the CLI's board
commands go through the same view; the CLI user is held to the board's policy as `cli`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from blackboard import Board, NewItem, audit, policy
from blackboard.cli import app
from blackboard.models import Status, TreeNode
from blackboard.policy import PolicyDenied
from blackboard.views import ReadView
from tests.conftest import unique_board

pytestmark = pytest.mark.anyio

RULES = """\
roles:
  lead: {post: ["v.*"], read: ["v.*"], sees: [secret], cancel: ["v.*"]}
  viewer: {read: ["v.*"]}
  outsider: {read: ["other.*"]}
  op: {post: ["*"], claim: ["*"]}
principals:
  lead: [lead]
  cli: [viewer]
  http: [viewer]
  boss: [lead]
  stranger: [outsider]
  seed: [op]
"""


async def under_rules(board: Board, folder: Path) -> Path:
    (folder / "p.yaml").write_text(RULES)
    loaded = policy.load([folder])
    assert loaded is not None
    await policy.store(board, loaded)
    return folder


async def goal_with_a_secret_step(board: Board) -> tuple[str, str, str]:
    """goal (public) -> step (labelled secret) -> leaf (public); returns their ids."""
    goal = await board.post("v.goal", {"q": 1}, actor="lead")
    [step] = await board.post_many(
        [NewItem(kind="v.step", payload={"pin": 4321}, parent=goal.id, visibility=("secret",))], actor="lead"
    )
    leaf = await board.post("v.leaf", {"n": 1}, parent=step.id, actor="lead")
    return goal.id, step.id, leaf.id


def shape(node: TreeNode | dict[str, Any]) -> tuple[str, list[Any]]:
    """(id, [children's shapes]) of a tree or of its JSON."""
    if isinstance(node, dict):
        return node["item"]["id"], [shape(c) for c in node["children"]]
    return node.item.id, [shape(c) for c in node.children]


async def denials_after(board: Board, seq: int) -> list[audit.AuditRecord]:
    return [r for r in await audit.tail(board, 20) if r.seq > seq and r.op == "denied"]


async def test_a_tree_leaves_out_what_its_reader_may_not_read(board: Board, tmp_path: Path) -> None:
    await under_rules(board, tmp_path)
    goal, step, leaf = await goal_with_a_secret_step(board)
    assert shape(await ReadView(board, "lead").tree(goal)) == (goal, [(step, [(leaf, [])])])
    # the secret step is left out; its readable child moves up under the goal
    assert shape(await ReadView(board, "cli").tree(goal)) == (goal, [(leaf, [])])
    before = await audit.head(board)
    with pytest.raises(PolicyDenied) as caught:
        await ReadView(board, "stranger").tree(goal)
    assert caught.value.principal == "stranger" and caught.value.action == "read"
    [record] = await denials_after(board, before.seq)
    assert record.actor == "stranger" and record.id == goal
    with pytest.raises(PolicyDenied):
        await ReadView(board, "cli").usage(step)  # a goal's usage through an item it may not read


async def test_event_feeds_and_dead_letters_leave_out_unreadable_items(board: Board, tmp_path: Path) -> None:
    await under_rules(board, tmp_path)
    since = await board.last_event_id()
    goal, step, leaf = await goal_with_a_secret_step(board)
    other = await board.post("other.note", {}, actor="seed", max_attempts=1)
    [claim] = await board.claim("seed", ["other.note"])
    await board.fail(claim, "boom", retry=False)
    everything, _ = await board.read_events(since)
    assert {e.id for e in everything} == {goal, step, leaf, other.id}
    view = ReadView(board, "cli")
    seen, _ = await view.read_events(since)
    assert {e.id for e in seen} == {goal, leaf}  # not the labelled step, not the other kind
    assert [e.type for e in seen] == [e.type for e in everything if e.id in (goal, leaf)]
    seen_again, _ = await view.read_events(since)  # from its cache of verdicts: the same
    assert seen_again == seen
    assert {e.id for e in (await ReadView(board, "stranger").read_events(since))[0]} == {other.id}
    assert (await board.dead_letters()).items[0].id == other.id
    assert (await view.dead_letters()).items == ()
    assert [i.id for i in (await ReadView(board, "stranger").dead_letters()).items] == [other.id]
    async with anyio.create_task_group() as tg:  # the live feed filters the same way

        async def follow() -> None:
            async for ev in view.events(since):
                assert ev.id in (goal, leaf)
                if ev.id == leaf:
                    tg.cancel_scope.cancel()

        tg.start_soon(follow)


async def test_an_open_board_view_passes_everything_through(board: Board) -> None:
    goal, step, leaf = await goal_with_a_secret_step(board)
    view = ReadView(board, "anyone")
    assert shape(await view.tree(goal)) == (goal, [(step, [(leaf, [])])])
    assert (await view.get(step)).payload == {"pin": 4321}
    assert len((await view.read_events("0-0"))[0]) == len((await board.read_events("0-0"))[0])


async def test_http_tree_events_usage_and_approvals_follow_the_token_principal(
    board_url: str, tmp_path: Path
) -> None:
    from tests.test_http import client_for, running

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "p.yaml").write_text(RULES)
    tokens = {"boss": "boss-token-1234567890", "http": "viewer-token-1234567890"}
    async with running(
        board_url, policies=[folder], api_token=tokens["http"], api_principals={"boss": tokens["boss"]}
    ) as daemon:
        goal, step, leaf = await goal_with_a_secret_step(daemon.board)
        async with client_for(daemon, tokens["boss"]) as boss, client_for(daemon, tokens["http"]) as viewer:
            r = await boss.get(f"/v1/goals/{goal}/tree")
            assert r.status_code == 200 and shape(r.json()) == (goal, [(step, [(leaf, [])])]), r.text
            r = await viewer.get(f"/v1/goals/{goal}/tree")
            assert r.status_code == 200 and shape(r.json()) == (goal, [(leaf, [])]), r.text
            r = await viewer.get(f"/v1/goals/{step}/tree")
            assert r.status_code == 403 and r.json()["error"]["type"] == "PolicyDenied", r.text
            r = await viewer.get(f"/v1/goals/{step}/usage")
            assert r.status_code == 403, r.text
            assert (await boss.get(f"/v1/goals/{step}/usage")).status_code == 200
            seen: list[str] = []
            with anyio.fail_after(10):
                async with viewer.stream("GET", "/v1/events", params={"since": "0-0"}) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            seen.append(json.loads(line[5:])["id"])
                            if seen[-1] == leaf:
                                break
            assert seen == [goal, leaf]


def test_the_cli_is_held_to_the_boards_policy_as_cli(board_url: str, tmp_path: Path) -> None:
    name = unique_board()
    where = ["--url", board_url, "--board", name]

    async def setup() -> tuple[str, str, str, str, int]:
        async with await Board.connect(board_url, board=name) as b:
            await under_rules(b, tmp_path)
            goal, step, leaf = await goal_with_a_secret_step(b)
            job = await b.post("v.job", {}, actor="seed", max_attempts=1)
            [claim] = await b.claim("seed", ["v.job"])
            await b.fail(claim, "boom", retry=False)
            return goal, step, leaf, job.id, (await audit.head(b)).seq

    goal, step, leaf, job, seq = anyio.run(setup)
    runner = CliRunner()
    r = runner.invoke(app, ["post", "v.goal", "--data", "{}", *where])  # cli may read, not post
    assert r.exit_code == 1 and "policy denies 'cli' to post 'v.goal'" in r.output, r.output
    r = runner.invoke(app, ["ls", "--json", *where])
    assert r.exit_code == 0, r.output
    assert {i["id"] for i in json.loads(r.output)} == {goal, leaf, job}  # not the secret step
    r = runner.invoke(app, ["show", step, *where])
    assert r.exit_code == 1 and "policy denies 'cli' to read 'v.step'" in r.output and "4321" not in r.output
    r = runner.invoke(app, ["show", leaf, "--json", *where])
    assert r.exit_code == 0 and json.loads(r.output)["id"] == leaf
    r = runner.invoke(app, ["trace", goal, "--json", *where])
    assert r.exit_code == 0 and shape(json.loads(r.output)) == (goal, [(leaf, [])]), r.output
    r = runner.invoke(app, ["cancel", goal, *where])
    assert r.exit_code == 1 and "to cancel 'v.goal'" in r.output
    r = runner.invoke(app, ["wait", step, "--timeout", "5", *where])
    assert r.exit_code == 1 and "to read 'v.step'" in r.output
    r = runner.invoke(app, ["dlq", "ls", "--json", *where])
    assert r.exit_code == 0 and [i["id"] for i in json.loads(r.output)] == [job]
    r = runner.invoke(app, ["dlq", "retry", job, *where])
    assert r.exit_code == 1 and "to post 'v.job'" in r.output

    async def after() -> tuple[list[audit.AuditRecord], int, Status, Status]:
        async with await Board.connect(board_url, board=name) as b:
            return (
                await denials_after(b, seq),
                len((await b.query(kind="v.goal")).items),
                (await b.get(goal)).status,
                (await b.get(job)).status,
            )

    denied, goals, status, dead = anyio.run(after)
    assert [(r.actor, r.kind) for r in denied] == [
        ("cli", "v.goal"),  # post
        ("cli", "v.step"),  # show
        ("cli", "v.goal"),  # cancel
        ("cli", "v.step"),  # wait
        ("cli", "v.job"),  # dlq retry
    ]
    # the denied post, cancel and retry wrote nothing
    assert goals == 1 and status is Status.OPEN and dead is Status.DEAD
