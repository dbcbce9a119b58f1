"""Human approval gates: gated items wait, unclaimable, until a principal with `approve` decides;
a rejection dead-letters them with the note; a timeout decides as its rule says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from blackboard import Board, NewItem, approvals, audit, policy
from blackboard.cli import app
from blackboard.errors import InvalidState
from blackboard.models import Status
from blackboard.policy import PolicyDenied
from blackboard.views import ReadView
from tests.conftest import FakeClock, unique_board

pytestmark = pytest.mark.anyio

RULES = """\
roles:
  worker: {claim: ["pay.*"], post: ["pay.*"]}
  approver: {approve: ["pay.*"], post: ["pay.*"], read: ["pay.*"]}
  blind: {approve: ["pay.*"]}
principals:
  worker: [worker]
  cli: [approver]
  http: [approver]
  alice: [approver]
  bob: [blind]
approvals:
  - {kind: pay.refund, when: "payload.amount > 500", timeout_seconds: 60}
  - {kind: pay.wire, timeout_seconds: 30, on_timeout: escalate}
"""


async def under_rules(board: Board, tmp_path: Path) -> policy.Policy:
    (tmp_path / "p.yaml").write_text(RULES)
    loaded = policy.load([tmp_path])
    assert loaded is not None
    await policy.store(board, loaded)
    return loaded


async def test_a_gated_item_is_claimed_only_after_approval(
    board: Board, tmp_path: Path, clock: FakeClock
) -> None:
    await under_rules(board, tmp_path)
    big = await board.post("pay.refund", {"amount": 900}, actor="worker")
    small = await board.post("pay.refund", {"amount": 20}, actor="worker")
    assert big.status is Status.WAITING and big.reason == "approval"
    assert small.status is Status.OPEN  # the rule's `when` does not hold for it
    claimed = await board.claim("worker", ["pay.refund"], n=10)
    assert [c.id for c in claimed] == [small.id]  # the big one is not claimable
    [(pending, deadline)] = await approvals.pending(board)
    assert pending.id == big.id and deadline is not None
    assert [it.id for it, _ in await ReadView(board, "alice").approvals()] == [big.id]
    assert await ReadView(board, "bob").approvals() == []  # approve alone does not let it read
    clock.advance(42.5)
    item = await approvals.approve(board, big.id, "checked the receipt", actor="alice")
    assert item.status is Status.OPEN
    assert await approvals.pop_waits(board) == [("approve", 42.5)]  # how long it waited, once
    assert await approvals.pop_waits(board) == []
    # Now claimable (with the small one, whose lease the clock let expire; in either order on a
    # board of several shards).
    assert big.id in [c.id for c in await board.claim("worker", ["pay.refund"], n=10)]
    record = next(r for r in reversed(await audit.tail(board, 10)) if r.op == "approved")
    assert record.actor == "alice" and record.detail == "checked the receipt" and record.id == big.id
    with pytest.raises(InvalidState, match="waiting for approval"):  # decided already
        await approvals.approve(board, big.id, actor="alice")
    assert await approvals.pending(board) == []


async def test_a_rejection_dead_letters_it_with_the_note(board: Board, tmp_path: Path) -> None:
    await under_rules(board, tmp_path)
    wire = await board.post("pay.wire", {"to": "X"}, actor="worker")
    after = await board.post_many([NewItem(kind="pay.note", payload={}, after=[wire.id])], actor="worker")
    item = await approvals.reject(board, wire.id, "unknown payee", actor="cli")
    assert item.status is Status.DEAD and item.error == "rejected: unknown payee"
    assert (await board.get(after[0].id)).status is Status.CANCELLED  # what waited on it
    assert [i.id for i in (await board.dead_letters()).items] == [wire.id]
    ops = [r.op for r in await audit.tail(board, 3)]
    assert ops[:2] == ["rejected", "dead"]


async def test_approval_needs_the_approve_grant_and_waits_for_dependencies(
    board: Board, tmp_path: Path
) -> None:
    await under_rules(board, tmp_path)
    first = await board.post("pay.first", {}, actor="worker")
    wire = await board.post_many([NewItem(kind="pay.wire", payload={}, after=[first.id])], actor="worker")
    with pytest.raises(PolicyDenied, match=r"'worker' to approve 'pay\.wire'"):
        await approvals.approve(board, wire[0].id, actor="worker")
    item = await approvals.approve(board, wire[0].id, actor="alice")
    assert item.status is Status.WAITING and item.reason == "dependencies"  # approved, still waiting
    [claim] = await board.claim("worker", ["pay.first"])
    await board.complete(claim, "done")
    assert (await board.get(wire[0].id)).status is Status.OPEN


async def test_timeouts_reject_or_escalate_as_their_rule_says(
    board: Board, tmp_path: Path, clock: FakeClock
) -> None:
    await under_rules(board, tmp_path)
    refund = await board.post("pay.refund", {"amount": 1000}, actor="worker")
    wire = await board.post("pay.wire", {}, actor="worker")
    assert await approvals.decide_due(board) == 0  # nothing due yet
    clock.advance(31)
    assert await approvals.decide_due(board) == 1  # the wire (30 s) escalates: it waits on
    item = await board.get(wire.id)
    assert item.status is Status.WAITING
    assert [r.op for r in await audit.tail(board, 1)] == ["escalated"]
    clock.advance(30)
    assert await approvals.decide_due(board) == 1  # the refund (60 s) is rejected
    item = await board.get(refund.id)
    assert item.status is Status.DEAD and item.error == "rejected: approval timed out"
    assert await approvals.decide_due(board) == 0  # the escalated one has no deadline now
    assert [it.id for it, _ in await approvals.pending(board)] == [wire.id]


def test_cli_approvals_approve_and_reject(tmp_path: Path) -> None:
    url, name = f"memory://approvals-{unique_board()}", unique_board()
    where = ["--url", url, "--board", name]

    async def setup() -> tuple[str, str]:
        async with await Board.connect(url, board=name) as b:
            await under_rules(b, tmp_path)
            one = await b.post("pay.wire", {"n": 1}, actor="worker")
            two = await b.post("pay.wire", {"n": 2}, actor="worker")
            return one.id, two.id

    one, two = anyio.run(setup)
    runner = CliRunner()
    r = runner.invoke(app, ["approvals", "--json", *where])
    assert r.exit_code == 0, r.output
    assert "pay.wire" in r.output and one in r.output and two in r.output
    r = runner.invoke(app, ["approve", one, "--note", "ok", *where])
    assert r.exit_code == 0 and f"{one}: approved, now open" in r.output, r.output
    r = runner.invoke(app, ["reject", two, *where, "--note", ""])
    assert r.exit_code == 2 and "needs a note" in r.output
    r = runner.invoke(app, ["reject", two, "--note", "no", *where])
    assert r.exit_code == 0 and f"{two}: rejected, now dead" in r.output, r.output
    r = runner.invoke(app, ["approve", two, *where])
    assert r.exit_code == 1 and "waiting for approval" in r.output


async def test_http_approve_reject_and_list(board_url: str, tmp_path: Path) -> None:
    from tests.test_http import client_for, running

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "p.yaml").write_text(RULES)
    async with running(board_url, policies=[folder]) as daemon, client_for(daemon) as c:
        wire = await daemon.board.post("pay.wire", {}, actor="worker")
        other = await daemon.board.post("pay.wire", {"n": 2}, actor="worker")
        listed: Any = (await c.get("/v1/approvals")).json()
        assert {x["item"]["id"] for x in listed} == {wire.id, other.id}
        r = await c.post(f"/v1/items/{wire.id}/approve", json={"note": "fine"})
        assert r.status_code == 200 and r.json()["status"] == "open", r.text
        r = await c.post(f"/v1/items/{wire.id}/approve")
        assert r.status_code == 409, r.text
        r = await c.post(f"/v1/items/{other.id}/reject", json={})
        assert r.status_code == 422 and r.json()["error"]["field"] == "note"
        r = await c.post(f"/v1/items/{other.id}/steal")
        assert r.status_code == 404
        r = await c.post(f"/v1/items/{other.id}/reject", json={"note": "nope"})
        assert r.status_code == 200 and r.json()["status"] == "dead"
        metric, board = daemon.metrics.registry.get_sample_value, {"board": daemon.settings.board}
        written = (await audit.head(daemon.board)).seq
        with anyio.fail_after(10):
            while (  # noqa: ASYNC110 - the presence beat sets them
                metric("blackboard_approvals_pending", board)
                or (metric("blackboard_audit_records", board) or 0) < written
                or metric("blackboard_approval_wait_seconds_count", {"verdict": "reject"}) is None
            ):
                await anyio.sleep(0.05)
        # each decision's wait was observed once (popped from the board), under its verdict
        for verdict in ("approve", "reject"):
            assert metric("blackboard_approval_wait_seconds_count", {"verdict": verdict}) == 1
            assert metric("blackboard_approval_wait_seconds_sum", {"verdict": verdict}) < 60
        assert await approvals.pop_waits(daemon.board) == []
