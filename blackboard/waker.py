"""Wake-ups for idle claimers: one blocking read per board handle, however many agents wait.

Every waiter registers the kinds it waits for. One of them at a time (the leader) runs `BLPOP`
over its watch list — the wake lists of the waiters' kinds plus this handle's control list — and
wakes up to `WAKE_FANOUT` waiters of the kind it popped; when the leader's own wait ends it hands
the lead to one other waiter. So 10,000 idle agents in one daemon hold one Redis connection, not
10,000, and an idle daemon makes one short blocking call at a time.

A kind stays on the watch list for `LINGER` seconds after its last waiter left, because an agent
that just finished an item is usually back within milliseconds; that saves restarting the BLPOP.
A token popped for a kind nobody here waits on is pushed back to Redis (and the kind leaves the
watch list), so another process waiting on that kind still gets it. A waiter whose kind is not on
the watch list pushes to the control list, which ends the running BLPOP at once.

A board of several shards has wake lists on each, and a BLPOP can only name keys of one slot, so
the leader runs one BLPOP per shard at once (still one connection per shard, however many wait).
A token is handed to a waiter other than the leader when one wants it, so the leader keeps its
reads going; when the leader itself is woken, its other reads are ended through their control
lists, not cancelled: a cancelled BLPOP may already have popped a token (which would be lost),
and it costs its connection (fakeredis even keeps the read going, taking the next token).

A woken waiter's next claim goes to the shard its token came from and no further
(`Waker.take_woken_shard`): the other shards' work has tokens of its own, and a token wakes
several waiters, so trying every shard would cost each of them K claims for the one item.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from blackboard.board import Board
    from blackboard.keys import Keyspace

# Longest single BLPOP: bounds how late a leader notices that its own waiter timed out.
LEADER_BLOCK = 1.0
# How long a kind stays watched after its last waiter left.
LINGER = 2.0
# Waiters one token wakes. Not all of them: with 10,000 agents of a kind idle in one process, one
# post would send 10,000 claims for one item. A claim that leaves work behind pushes the token
# again (claim.lua), so a burst wakes the next ones as soon as these have claimed, twice as
# many each time (up to MAX_FANOUT) while the tokens keep coming.
WAKE_FANOUT = 8
MAX_FANOUT = 1024  # the most one token wakes while a burst lasts
BURST_GAP = 0.05  # seconds between a kind's tokens that count as one burst


# The waker and shard whose token woke the current task (None: not woken since its last claim).
_woken_from: ContextVar[tuple[Waker, int] | None] = ContextVar("blackboard_woken_from", default=None)


class _Waiter:
    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = frozenset(kinds)
        self.event = anyio.Event()
        self.signalled = False  # set with the event when a token came; else the event means "lead"
        self.shard = 0  # where the token came from, once signalled
        self.interrupted = False  # as leader, woken: its reads of the other shards were ended


class _Shard:
    """One shard's wake lists as this handle reads them."""

    def __init__(self, keys: Keyspace, owner: object) -> None:
        self.index = keys.index
        self.prefix = f"{keys.tag}:wake:"
        self.control = f"{keys.tag}:wakectl:{os.getpid()}-{id(owner)}"
        self.watching: frozenset[str] = frozenset()  # kinds of the BLPOP in flight
        self.reading = False  # a BLPOP is in flight


class Waker:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.shards = [_Shard(keys, self) for keys in board.shard_keys]
        self.waiters: set[_Waiter] = set()
        self.leader: _Waiter | None = None
        self.last_wanted: dict[str, float] = {}  # kind -> when a waiter last wanted it
        self.delivered: dict[str, tuple[float, int]] = {}  # kind -> (last token, waiters it woke)

    def take_woken_shard(self) -> int | None:
        """The shard whose token last woke this task on this handle, once: the claim that
        follows asks that shard alone."""
        woken = _woken_from.get()
        if woken is None or woken[0] is not self:
            return None
        _woken_from.set(None)
        return woken[1]

    @property
    def prefix(self) -> str:
        """The first shard's wake-list prefix (the only one of an unsharded board)."""
        return self.shards[0].prefix

    @property
    def control(self) -> str:
        return self.shards[0].control

    @property
    def watching(self) -> frozenset[str]:
        """Kinds every shard's read in flight watches."""
        return frozenset.intersection(*(s.watching for s in self.shards))

    async def wait(self, kinds: Sequence[str], timeout: float) -> bool:
        """Block until one of `kinds` is signalled (True) or `timeout` passes (False)."""
        me = _Waiter(kinds)
        self.waiters.add(me)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.leader is None:
                    await self._lead(me, deadline)
                    break
                unwatched = [s for s in self.shards if not me.kinds <= s.watching]
                if unwatched:
                    await self._interrupt(unwatched)
                with anyio.move_on_after(deadline - time.monotonic()):
                    await me.event.wait()
                if me.signalled or not me.event.is_set():
                    break  # a token came, or the time ran out
                me.event = anyio.Event()  # handed the lead: loop and take it
            if me.signalled and len(self.shards) > 1:
                _woken_from.set((self, me.shard))
            return me.signalled
        finally:
            self.waiters.discard(me)
            now = time.monotonic()
            for k in me.kinds:
                self.last_wanted[k] = now

    async def _lead(self, me: _Waiter, deadline: float) -> None:
        self.leader = me
        try:
            if len(self.shards) == 1:
                await self._listen(self.shards[0], me, deadline)
            else:
                for shard in self.shards:  # before the reads start, so waiters don't interrupt them
                    shard.watching = self._watch_list()
                async with anyio.create_task_group() as tg:
                    for shard in self.shards:
                        tg.start_soon(self._listen, shard, me, deadline)
        finally:
            self.leader = None
            for shard in self.shards:
                shard.watching = frozenset()
            # One that is still waiting: a woken one is on its way out and would never lead.
            successor = next((w for w in self.waiters if w is not me and not w.signalled), None)
            if successor is not None:
                successor.event.set()  # not signalled: it takes the lead

    async def _listen(self, shard: _Shard, me: _Waiter, deadline: float) -> None:
        """The leader's reads of one shard's wake lists, until it is woken or its time is up."""
        while not me.signalled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            shard.watching = self._watch_list()
            keys = [shard.control, *(shard.prefix + k for k in sorted(shard.watching))]
            block = max(0.01, min(remaining, LEADER_BLOCK))
            shard.reading = True
            try:
                got = await self.board.retrying(
                    lambda: self.board.redis.blpop(keys, timeout=block),  # noqa: B023
                    blocking=True,
                )
            finally:
                shard.reading = False
            if got is not None:
                await self._deliver(got[0].decode(), shard.index)
        # The first read to see the leader woken ends the others' (timed out, they end alone).
        if me.signalled and not me.interrupted:
            me.interrupted = True
            if others := [s for s in self.shards if s is not shard and s.reading]:
                await self._interrupt(others)

    def _watch_list(self) -> frozenset[str]:
        now = time.monotonic()
        for k in [k for k, t in self.last_wanted.items() if now - t > LINGER]:
            del self.last_wanted[k]
        return frozenset(self.last_wanted).union(*(w.kinds for w in self.waiters))

    async def _deliver(self, key: str, shard: int = 0) -> None:
        here = self.shards[shard]
        if key == here.control:
            return  # only there to end the BLPOP so the leader re-reads the kinds
        kind = key[len(here.prefix) :]
        # A token soon after the last one for the kind means a burst (claims found work left
        # and passed the token on): wake twice as many each time, back to WAKE_FANOUT when calm.
        now = time.monotonic()
        burst = now - self.delivered.get(kind, (0.0, 0))[0] < BURST_GAP
        fanout = min(self.delivered[kind][1] * 2, MAX_FANOUT) if burst else WAKE_FANOUT
        self.delivered[kind] = (now, fanout)
        # Not those already woken that haven't left yet: a token spent on them would wake nobody.
        # The leader last: woken, it stops reading (and on several shards cuts its reads short).
        wanting = [w for w in self.waiters if kind in w.kinds and not w.signalled]
        woken = [w for w in wanting if w is not self.leader][:fanout] or wanting[:1]
        for w in woken:
            w.signalled, w.shard = True, shard
            w.event.set()
        if not woken:
            # Nobody here wants it now: give the token back for other processes, and stop
            # watching the kind so the next BLPOP doesn't take it again.
            self.last_wanted.pop(kind, None)
            await self.board.retrying(lambda: self.board.redis.rpush(key, "1"))

    async def _interrupt(self, shards: Sequence[_Shard]) -> None:
        """End the BLPOPs on `shards` at once, through their control lists (concurrently)."""

        async def push(control: str) -> None:
            async with self.board.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(control, "1")
                pipe.expire(control, 60)  # a leftover token outlives no process for long
                await pipe.execute()

        if len(shards) == 1:
            await self.board.retrying(lambda: push(shards[0].control))
            return
        async with anyio.create_task_group() as tg:
            for shard in shards:
                tg.start_soon(self.board.retrying, partial(push, shard.control))
