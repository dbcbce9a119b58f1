"""`Completer`: completions that finish together reach Redis in one script call.

A hundred handlers whose model calls return within a few milliseconds of each other would each
pay a round trip and redis-py's per-command CPU on the one event loop they share. Queued here,
the completions that arrive while a call is in flight go together in the next one
(`Board.complete_many`), like a database's group commit. A lone completion goes at once:
nothing ever waits to fill a batch, so an idle board's latency is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from blackboard.board import Board
from blackboard.errors import BlackboardError, BoardUnavailable
from blackboard.models import Claim, ModelCall, NewItem

MAX_BATCH = 200  # completions per script call: keeps one call's time inside Redis short


class _Pending:
    __slots__ = ("claim", "done", "error", "outputs", "result", "usage")

    def __init__(
        self, claim: Claim, result: Any, outputs: Sequence[NewItem], usage: Sequence[ModelCall]
    ) -> None:
        self.claim, self.result, self.outputs, self.usage = claim, result, outputs, usage
        self.done = anyio.Event()
        self.error: BaseException | None = None


class Completer:
    """Completes claims of one agent (one actor per script call), grouping those that queue up."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._queue: list[_Pending] = []
        self._wake = anyio.Event()
        self._closed = False  # run() has ended: completions go straight to the board

    async def complete(
        self,
        claim: Claim,
        result: Any,
        outputs: Sequence[NewItem] = (),
        usage: Sequence[ModelCall] = (),
    ) -> None:
        """Complete `claim` as `Board.complete` does (outputs not read back), raising what it
        raises: `LeaseLost`, `BoardUnavailable`, or the `BlackboardError` of a bad result."""
        pending = _Pending(claim, result, outputs, usage)
        if self._closed:
            await self._send([pending])
        else:
            self._queue.append(pending)
            self._wake.set()
            await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    async def run(self) -> None:
        """Send what is queued, batch after batch, until cancelled; then what is left."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self._drain()
        finally:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._drain()

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            with anyio.CancelScope(shield=True):  # a batch taken off the queue is always answered
                await self._send(batch)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            outcomes: list[Any] = await self.board.complete_many(
                [(p.claim, p.result, p.outputs) for p in batch],
                fetch_outputs=False,
                usage=[p.usage for p in batch],
            )
        except BoardUnavailable as e:
            outcomes = [e] * len(batch)
        except BlackboardError as e:
            if len(batch) > 1:  # one unserialisable result or bad output spoils the whole call
                for p in batch:
                    await self._send([p])
                return
            outcomes = [e]
        except Exception as e:  # delivered to the handlers, never the end of the runner
            outcomes = [e] * len(batch)
        for p, outcome in zip(batch, outcomes, strict=True):
            p.error = outcome if isinstance(outcome, BaseException) else None
            p.done.set()
