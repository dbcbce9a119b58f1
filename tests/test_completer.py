"""The completer: completions that queue up reach the board in one call, each with its own outcome."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from blackboard import Board, NewItem
from blackboard.completer import Completer
from blackboard.errors import InvalidInput, LeaseLost
from blackboard.models import Claim, Status

pytestmark = pytest.mark.anyio


def count_calls(board: Board, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the board's `complete_many` calls (the real method runs)."""
    sizes: list[int] = []
    real = board.complete_many

    async def counted(batch: Any, **kw: Any) -> Any:
        sizes.append(len(batch))
        return await real(batch, **kw)

    monkeypatch.setattr(board, "complete_many", counted)
    return sizes


async def claimed(board: Board, n: int) -> list[Claim]:
    await board.post_many([NewItem(kind="c.task", payload={"n": i}) for i in range(n)])
    claims = await board.claim("worker", ["c.task"], n=n)
    assert len(claims) == n
    return claims


async def test_completions_that_queue_up_go_in_one_call(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = await claimed(board, 30)
    sizes = count_calls(board, monkeypatch)
    completer = Completer(board)
    async with anyio.create_task_group() as tg:
        tg.start_soon(completer.run)
        async with anyio.create_task_group() as handlers:
            for c in claims:
                handlers.start_soon(completer.complete, c, {"n": c.item.payload["n"]})
        tg.cancel_scope.cancel()
    assert sizes == [30]  # all thirty were queued before the completer's first call
    items = await board.get_many([c.id for c in claims])
    assert all(it is not None and it.status is Status.DONE for it in items)
    assert [it.result for it in items if it] == [{"n": c.item.payload["n"]} for c in claims]


async def test_a_lone_completion_goes_at_once(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    (claim,) = await claimed(board, 1)
    sizes = count_calls(board, monkeypatch)
    completer = Completer(board)
    async with anyio.create_task_group() as tg:
        tg.start_soon(completer.run)
        with anyio.fail_after(5):
            await completer.complete(claim, "ok", [NewItem(kind="c.next", payload={})])
        tg.cancel_scope.cancel()
    assert sizes == [1]
    assert (await board.get(claim.id)).result == "ok"
    assert [it.kind for it in (await board.query(parent=claim.id)).items] == ["c.next"]


async def test_a_bad_or_stale_completion_fails_alone(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad, stale = await claimed(board, 3)
    stale = stale.model_copy(update={"token": stale.token + "0"})  # as if its lease were lost
    sizes = count_calls(board, monkeypatch)
    completer = Completer(board)
    errors: dict[str, BaseException] = {}

    async def complete(c: Claim, result: Any) -> None:
        try:
            await completer.complete(c, result)
        except Exception as e:
            errors[c.id] = e

    async with anyio.create_task_group() as tg:
        tg.start_soon(completer.run)
        async with anyio.create_task_group() as handlers:
            handlers.start_soon(complete, good, 1)
            handlers.start_soon(complete, bad, {"x": float("nan")})  # not JSON
            handlers.start_soon(complete, stale, 3)
        tg.cancel_scope.cancel()
    # The batch could not be encoded, so each went on its own; the bad one wrote nothing.
    assert sizes == [3, 1, 1, 1]
    assert isinstance(errors[bad.id], InvalidInput) and "result" in str(errors[bad.id])
    assert isinstance(errors[stale.id], LeaseLost)
    assert good.id not in errors and (await board.get(good.id)).status is Status.DONE
    assert (await board.get(bad.id)).status is Status.CLAIMED
    assert (await board.get(stale.id)).status is Status.CLAIMED


async def test_after_the_completer_stops_completions_go_straight_to_the_board(board: Board) -> None:
    first, second = await claimed(board, 2)
    completer = Completer(board)
    async with anyio.create_task_group() as tg:
        tg.start_soon(completer.run)
        await completer.complete(first, 1)
        tg.cancel_scope.cancel()
    with anyio.fail_after(5):  # no completer runs now: this must not wait for one
        await completer.complete(second, 2)
    assert [it.status for it in await board.get_many([first.id, second.id]) if it] == [Status.DONE] * 2
