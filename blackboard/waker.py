"""Wake-ups for idle claimers: one blocking read per board handle, however many agents wait.

Every waiter registers the kinds it waits for. One of them at a time (the leader) runs
`BLPOP` over the union of their kinds' wake lists plus this handle's control list, and wakes
the waiters whose kind was signalled; when the leader's own wait ends, another waiter takes
over. So 10,000 idle agents in one daemon hold one Redis connection, not 10,000, and an idle
daemon makes one short blocking call at a time.

A waiter that arrives with a kind the running BLPOP doesn't cover pushes to the control list,
which ends the BLPOP at once so the leader re-reads the kinds. A token that arrives while no one
waits on its kind is remembered, so the next waiter on that kind does not sleep through it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from blackboard.board import Board

# Longest single BLPOP: bounds how late a leader notices that its own waiter timed out.
LEADER_BLOCK = 1.0


class _Waiter:
    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = frozenset(kinds)
        self.event = anyio.Event()


class Waker:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.control = f"{board.keys.tag}:wakectl:{os.getpid()}-{id(self)}"
        self.waiters: set[_Waiter] = set()
        self.pending: set[str] = set()  # kinds signalled while nobody waited on them
        self.leading = False
        self.watching: frozenset[str] = frozenset()  # kinds of the BLPOP in flight
        self._handover = anyio.Event()

    async def wait(self, kinds: Sequence[str], timeout: float) -> bool:
        """Block until one of `kinds` is signalled (True) or `timeout` passes (False)."""
        hit = self.pending.intersection(kinds)
        if hit:
            self.pending -= hit
            return True
        me = _Waiter(kinds)
        self.waiters.add(me)
        deadline = time.monotonic() + timeout
        try:
            if self.leading and not me.kinds <= self.watching:
                await self._interrupt()
            while not me.event.is_set() and time.monotonic() < deadline:
                if self.leading:
                    handover = self._handover
                    with anyio.move_on_after(deadline - time.monotonic()):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(_cancel_when_set, me.event, tg.cancel_scope)
                            await handover.wait()
                            tg.cancel_scope.cancel()
                else:
                    await self._lead(me, deadline)
        finally:
            self.waiters.discard(me)
        return me.event.is_set()

    async def _lead(self, me: _Waiter, deadline: float) -> None:
        self.leading = True
        try:
            while not me.event.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.watching = frozenset().union(*(w.kinds for w in self.waiters))
                keys = [self.control, *(self.board.keys.wake(k) for k in sorted(self.watching))]
                got = await self.board.retrying(
                    lambda: self.board.redis.blpop(keys, timeout=max(0.01, min(remaining, LEADER_BLOCK)))  # noqa: B023
                )
                if got is not None:
                    self._deliver(got[0].decode())
        finally:
            self.leading = False
            self.watching = frozenset()
            self._handover.set()
            self._handover = anyio.Event()

    def _deliver(self, key: str) -> None:
        if key == self.control:
            return  # only there to end the BLPOP so the leader re-reads the kinds
        kind = key[len(f"{self.board.keys.tag}:wake:") :]
        woken = [w for w in self.waiters if kind in w.kinds]
        for w in woken:
            w.event.set()
        if not woken:
            self.pending.add(kind)

    async def _interrupt(self) -> None:
        async def push() -> None:
            async with self.board.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self.control, "1")
                pipe.expire(self.control, 60)  # a leftover token outlives no process for long
                await pipe.execute()

        await self.board.retrying(push)


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
