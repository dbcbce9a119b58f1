"""Stateful property test: random operations on a Board, checked against a model after each step.

A hypothesis state machine posts, claims, completes, fails, releases, heartbeats, reaps,
cancels, marks and requeues items on a real Board (fakeredis and a real redis-server), and
moves a fake clock so leases expire and delayed items come due. It keeps its own model of every item
(status, attempts, lease token and deadline, due time, unmet dependencies, mark), following
the protocol that DESIGN.md and the scripts' headers describe, and after every step checks:

- the board's raw structures are consistent (`tests/support/invariants.py`);
- every item's status, attempts, lease and due time match the model, and each operation's
  answer does (what was claimed, in priority/mark/id order; reap and cancel counts; statuses);
- the counts add up to the number of items posted;
- a done item stays done with the very same result, and is never claimed again;
- writes through a claim that is no longer current (stale writes) raise or return `LeaseLost`
  and change nothing on the board, as do repeated idempotent posts and bad requeues.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from blackboard import Backoff, Board, Claim, InvalidState, Item, LeaseLost, retention
from blackboard.ids import child_id
from tests.conftest import FakeClock, unique_board
from tests.support.invariants import TERMINAL, check_raw, read_raw, snapshot

KINDS = ("alpha", "beta.task", "gamma")
AGENT = "prop-agent"
# No jitter, so the model knows when a retry comes due.
BACKOFF = Backoff(base=1.0, factor=2.0, cap=20.0, jitter=0.0)

# Times are multiples of 1/4 s on a whole-second start, so seconds * 1000 is exact in floats.
QUARTERS = st.integers(0, 120).map(lambda q: q / 4)

START = 1_800_000_000.0
STALE_OPS = ["complete", "fail", "heartbeat", "release"]
# One output of a completion: kind, priority, delay, and what it waits for: nothing, the output
# before it, the completing item itself, or the first / the latest item posted.
Output = tuple[str, int, float | None, str | None]
OUTPUT = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 3),
    st.sampled_from([None, 1.0]),
    st.sampled_from([None, None, "sibling", "self", "first", "latest"]),
)


@dataclass
class MItem:
    """The model of one item."""

    kind: str
    priority: int
    max_attempts: int
    parent: str | None
    root: str
    status: str = "open"
    attempts: int = 0
    not_before: int | None = None  # ms
    delayed: bool = False  # in the delayed set (else, when open/failed, in ready)
    pending: set[str] = field(default_factory=set)  # unmet dependencies
    token: str | None = None
    deadline: int | None = None
    last: tuple[str, str] | None = None  # (token, 'complete'|'fail') of the last fenced write
    marked: bool = False  # ever marked: orders before unmarked items of its priority


class BoardMachine(RuleBasedStateMachine):
    def __init__(self, portal: BlockingPortal, url: str) -> None:
        super().__init__()
        self.portal = portal
        self.clock = FakeClock()
        self.clock.now = START  # a fixed time: replays of an example see the same board
        self.board: Board = self.call(
            Board.connect, url, board=unique_board(), clock=self.clock, backoff=BACKOFF
        )
        self.items: dict[str, MItem] = {}
        self.order: list[str] = []  # ids in the order they were posted
        self.claims: list[Claim] = []  # every claim ever handed out
        self.results: dict[str, str] = {}  # done id -> stored result, as first seen
        self.idem: dict[str, str] = {}  # idempotency key -> id
        self.max_token = 0
        self.next_id = 0

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def teardown(self) -> None:
        self.call(self.board.close)

    # -- the model ----------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return int(self.clock.now * 1000)

    def current(self, c: Claim) -> bool:
        m = self.items[c.id]
        return m.status == "claimed" and m.token == c.token

    def held(self) -> list[Claim]:
        return [c for c in self.claims if self.current(c)]

    def stale(self) -> list[Claim]:
        return [c for c in self.claims if not self.current(c)]

    def ids_with(self, *statuses: str) -> list[str]:
        return [i for i in self.order if self.items[i].status in statuses]

    def make_ready(self, m: MItem, status: str = "open") -> None:
        m.status, m.token, m.deadline = status, None, None
        if m.not_before is not None and m.not_before > self.now:
            m.delayed = True
        else:
            m.delayed, m.not_before = False, None

    def finish(self, m: MItem, status: str) -> None:
        m.status, m.token, m.deadline, m.delayed = status, None, None, False

    def cancel_dependants(self, item_id: str) -> int:
        """Items waiting on a dependency that will never be done are cancelled, transitively."""
        queue, n = [item_id], 0
        while queue:
            cur = queue.pop()
            for d in self.order:
                dm = self.items[d]
                if cur in dm.pending:
                    dm.pending.discard(cur)
                    if dm.status == "waiting":
                        self.finish(dm, "cancelled")
                        queue.append(d)
                        n += 1
        return n

    def kill(self, item_id: str) -> None:
        self.finish(self.items[item_id], "dead")
        self.cancel_dependants(item_id)

    def satisfy(self, item_id: str) -> None:
        for d in self.order:
            dm = self.items[d]
            if item_id in dm.pending:
                dm.pending.discard(item_id)
                if dm.status == "waiting" and not dm.pending:
                    self.make_ready(dm)

    def expire(self, kind: str) -> int:
        now = self.now
        due = [
            i for i in self.ids_with("claimed")
            if self.items[i].kind == kind and (self.items[i].deadline or 0) <= now
        ]  # fmt: skip
        for i in due:
            m = self.items[i]
            if m.attempts >= m.max_attempts:
                self.kill(i)
            else:
                self.make_ready(m)
        return len(due)

    def promote(self, kind: str) -> int:
        due = [
            i for i in self.order
            if self.items[i].kind == kind and self.items[i].delayed
            and (self.items[i].not_before or 0) <= self.now
        ]  # fmt: skip
        for i in due:
            self.make_ready(self.items[i])
        return len(due)

    def subtree(self, item_id: str) -> list[str]:
        out, i = [item_id], 0
        while i < len(out):
            out += sorted(c for c in self.order if self.items[c].parent == out[i])
            i += 1
        return out

    def add_item(self, item_id: str, m: MItem, after: list[str], delay: float | None) -> None:
        if delay:
            m.not_before = self.now + int(delay * 1000)
        deps = [self.items[d] for d in after]
        m.pending = {d for d in after if self.items[d].status != "done"}
        if any(d.status in ("dead", "cancelled") for d in deps):
            self.finish(m, "cancelled")
        elif m.pending:
            m.status = "waiting"
        else:
            self.make_ready(m)
        self.items[item_id] = m
        self.order.append(item_id)

    def assert_unchanged(self, before: dict[str, Any], what: str) -> None:
        after = self.call(snapshot, self.board)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"{what} changed the board: keys {changed}"

    # -- rules ----------------------------------------------------------------------------------

    @initialize(
        goals=st.lists(
            st.tuples(st.sampled_from(KINDS), st.integers(0, 3), st.integers(1, 3)),
            min_size=1, max_size=5,
        )
    )  # fmt: skip
    def start(self, goals: list[tuple[str, int, int]]) -> None:
        """Some plain goals to begin with."""
        for kind, priority, max_attempts in goals:
            self.do_post(kind, {"priority": priority, "max_attempts": max_attempts})

    @rule(
        data=st.data(),
        kind=st.sampled_from(KINDS),
        priority=st.integers(0, 3),
        max_attempts=st.integers(1, 3),
        delay=st.sampled_from([None, None, None, 0.5, 2.0, 10.0]),
        key=st.sampled_from([None, None, None, "k1", "k2"]),
    )
    def post(
        self, data: st.DataObject, kind: str, priority: int, max_attempts: int,
        delay: float | None, key: str | None,
    ) -> None:  # fmt: skip
        """Any post: maybe a child, maybe after other items, maybe delayed or idempotent."""
        parent = data.draw(st.sampled_from([None, *self.order[-8:]]), label="parent")
        deps = [i for i in self.order if self.items[i].status != "cancelled"]
        after = data.draw(
            st.lists(st.sampled_from(deps), max_size=3, unique=True) if deps else st.just([]),
            label="after",
        )
        fields: dict[str, Any] = {"priority": priority, "max_attempts": max_attempts}
        if parent:
            fields["parent"] = parent
        if after:
            fields["after"] = after
        if delay:
            fields["delay"] = delay
        if key:
            fields["idempotency_key"] = key
        self.do_post(kind, fields)

    @rule(kind=st.sampled_from(KINDS), priority=st.integers(0, 3), max_attempts=st.integers(1, 3))
    def post_goal(self, kind: str, priority: int, max_attempts: int) -> None:
        """A plain goal, claimable at once (keeps enough work on the board)."""
        self.do_post(kind, {"priority": priority, "max_attempts": max_attempts})

    def do_post(self, kind: str, fields: dict[str, Any]) -> None:
        key = fields.get("idempotency_key")
        if key in self.idem:  # the same key again: the existing item, nothing written
            before = self.call(snapshot, self.board)
            item = self.call(self.board.post, kind, {"again": True}, **fields)
            assert item.id == self.idem[key]
            self.assert_unchanged(before, "a post with a known idempotency key")
            return
        # Ids are given, not generated: claims break ties by id, and a replayed example must
        # claim the same items (hypothesis requires deterministic runs).
        self.next_id += 1
        new_id = f"item-{self.next_id:04d}"
        item = self.call(self.board.post, kind, {"p": fields["priority"]}, id=new_id, **fields)
        assert item.id == new_id, (item.id, new_id)
        parent = fields.get("parent")
        root = self.items[parent].root if parent else item.id
        m = MItem(kind, fields["priority"], fields["max_attempts"], parent, root)
        self.add_item(item.id, m, fields.get("after", []), fields.get("delay"))
        if key:
            self.idem[key] = item.id
        assert (item.status, item.root, item.parent) == (m.status, root, parent), (item, m)

    @precondition(lambda self: bool(self.ids_with("open", "failed", "claimed")))
    @rule(data=st.data(), n=st.integers(1, 5), lease=st.integers(1, 10))
    def claim(self, data: st.DataObject, n: int, lease: int) -> None:
        kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True))
        self.do_claim(kinds, n, lease)

    @precondition(lambda self: bool(self.ids_with("open", "failed", "claimed")))
    @rule(kind=st.sampled_from(KINDS), lease=st.integers(1, 10))
    def claim_one(self, kind: str, lease: int) -> None:
        self.do_claim([kind], 1, lease)

    def check_claim_order(self, taken: list[str], left: list[str]) -> None:
        """Higher priority first; within a priority marked items first; unmarked ones by id."""
        for t in taken:
            for x in left:
                a, b = self.items[t], self.items[x]
                assert (a.priority, a.marked) >= (b.priority, b.marked), f"claimed {t} {a} before {x} {b}"
                if (a.priority, a.marked) == (b.priority, False):
                    assert t < x, f"claimed {t} before {x}: equal, unmarked, so by id"

    def do_claim(self, kinds: list[str], n: int, lease: int) -> None:
        for k in kinds:
            self.expire(k)
            self.promote(k)
        claimable = [
            i for i in self.ids_with("open") if self.items[i].kind in kinds and not self.items[i].delayed
        ]
        got = self.call(self.board.claim, AGENT, kinds, n=n, lease=lease)
        taken = [c.id for c in got]
        assert len(taken) == len(set(taken)) == min(n, len(claimable)), (taken, claimable)
        assert set(taken) <= set(claimable), f"claimed {set(taken) - set(claimable)}, not claimable"
        assert not set(taken) & set(self.results), "a done item was claimed again"
        self.check_claim_order(taken, [i for i in claimable if i not in taken])
        for c in got:
            m = self.items[c.id]
            token = int(c.token)
            assert token > self.max_token, "fencing token not fresh"
            self.max_token = token
            m.status, m.token, m.attempts = "claimed", c.token, m.attempts + 1
            m.deadline = self.now + lease * 1000
            assert (c.item.status, c.item.attempts, c.deadline) == ("claimed", m.attempts, m.deadline)
        # Fencing, every time an item changes hands: the previous holder can write nothing.
        for c in got:
            for old in [o for o in self.claims if o.id == c.id][-1:]:
                self.do_stale_write(old, STALE_OPS[int(c.token) % len(STALE_OPS)])
        self.claims.extend(got)

    @precondition(lambda self: bool(self.held()))
    @rule(
        data=st.data(),
        result=st.one_of(
            st.none(), st.integers(), st.dictionaries(st.text(max_size=3), st.booleans(), max_size=2)
        ),
        outputs=st.lists(OUTPUT, max_size=2),
    )
    def complete(self, data: st.DataObject, result: Any, outputs: list[Output]) -> None:
        self.do_complete(data.draw(st.sampled_from(self.held()), label="claim"), result, outputs)

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    def complete_plain(self, data: st.DataObject) -> None:
        self.do_complete(data.draw(st.sampled_from(self.held()), label="claim"), "ok", [])

    def do_complete(self, c: Claim, result: Any, outputs: list[Output]) -> None:
        specs = self.outputs(c, outputs)
        posted = self.call(self.board.complete, c, result, specs)
        self.completed(c, result, specs, posted)

    def outputs(self, c: Claim, outputs: list[Output]) -> list[dict[str, Any]]:
        """Output specs for `board.complete`; ids are derived the way the board derives them."""
        out = []
        for j, (k, p, d, dep) in enumerate(outputs):
            spec: dict[str, Any] = {"kind": k, "payload": {"o": j}, "priority": p}
            if d:
                spec["delay"] = d
            after = {
                "sibling": [child_id(c.id, f"o{j - 1}")] if j else [],
                "self": [c.id],
                "first": self.order[:1],
                "latest": self.order[-1:],
            }.get(dep or "", [])
            after = [a for a in after if a != child_id(c.id, f"o{j}")]  # (a repeated completion)
            if after:
                spec["after"] = after
            out.append(spec)
        return out

    def completed(
        self, c: Claim, result: Any, specs: list[dict[str, Any]], posted: list[Item], batch: bool = False
    ) -> None:
        """The model's side of a completion the board accepted."""
        m = self.items[c.id]
        self.finish(m, "done")
        m.last = (c.token, "complete")
        by_id = {it.id: it for it in posted}
        assert len(by_id) == len(posted) == len(specs)
        for j, spec in enumerate(specs):
            it = by_id[child_id(c.id, f"o{j}")]
            assert (it.parent, it.root, it.kind) == (c.id, m.root, spec["kind"])
            mi = MItem(spec["kind"], spec["priority"], 3, c.id, m.root)
            self.add_item(it.id, mi, spec.get("after", []), spec.get("delay"))
            # (read after the whole call: a later entry of a batch may have opened it since)
            assert it.status == mi.status or batch, (it, mi)
        self.satisfy(c.id)
        stored = self.call(self.board.redis.hget, self.board.keys.results, c.id)
        assert stored is not None and json.loads(stored) == result
        self.results[c.id] = stored

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    def complete_batch(self, data: st.DataObject) -> None:
        """complete_many over held and stale claims, the same claim possibly twice: processed in
        order, each entry gets its outputs, or LeaseLost when its claim is no longer current."""
        pool = self.held() + self.stale()[-4:]
        batch = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4), label="batch")
        specs = [self.outputs(c, data.draw(st.lists(OUTPUT, max_size=2))) for c in batch]
        got = self.call(
            self.board.complete_many,
            [(c, {"entry": j}, o) for j, (c, o) in enumerate(zip(batch, specs, strict=True))],
        )
        for j, (c, o, r) in enumerate(zip(batch, specs, got, strict=True)):
            if self.current(c):
                assert isinstance(r, list), f"entry {j}: {r!r}"
                self.completed(c, {"entry": j}, o, r, batch=True)
            elif self.items[c.id].last == (c.token, "complete"):
                assert isinstance(r, list), f"entry {j} repeats a completion: {r!r}"
            else:
                assert isinstance(r, LeaseLost), f"entry {j} holds a stale claim: {r!r}"

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data(), retry=st.sampled_from([None, False, 0, 0.5, 2, 7]))
    def fail(self, data: st.DataObject, retry: float | bool | None) -> None:
        self.do_fail(data.draw(st.sampled_from(self.held()), label="claim"), retry)

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    def fail_for_good(self, data: st.DataObject) -> None:
        self.do_fail(data.draw(st.sampled_from(self.held()), label="claim"), False)

    def do_fail(self, c: Claim, retry: float | bool | None) -> None:
        m = self.items[c.id]
        status = self.call(self.board.fail, c, "boom", retry=retry)
        m.last = (c.token, "fail")
        if retry is False or m.attempts >= m.max_attempts:
            self.kill(c.id)
        else:
            delay = BACKOFF.delay(c.item.attempts) if retry is None else retry
            m.not_before = self.now + int(delay * 1000)
            self.make_ready(m, "failed" if int(delay * 1000) > 0 else "open")
        assert status == m.status, (status, m)

    def mixed(self, data: st.DataObject) -> list[Claim]:
        """Some held claims (one per item) and maybe some stale ones, in any order."""
        held = data.draw(st.lists(st.sampled_from(self.held()), min_size=1, unique_by=lambda c: c.id))
        stale = self.stale()
        extra = data.draw(st.lists(st.sampled_from(stale), max_size=2) if stale else st.just([]))
        return list(data.draw(st.permutations(held + extra), label="claims"))

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        cs = self.mixed(data)
        current = [self.current(c) for c in cs]
        out = self.call(self.board.release, cs)
        for c, was_current, r in zip(cs, current, out, strict=True):
            if was_current:
                assert r is None, r
                m = self.items[c.id]
                m.attempts -= 1
                self.make_ready(m)
            else:
                assert isinstance(r, LeaseLost), r

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data(), lease=st.integers(1, 10))
    def heartbeat(self, data: st.DataObject, lease: int) -> None:
        cs = self.mixed(data)
        current = [self.current(c) for c in cs]
        out = self.call(self.board.heartbeat, cs, lease=lease)
        for c, was_current, r in zip(cs, current, out, strict=True):
            if was_current:
                assert isinstance(r, Claim), r
                self.items[c.id].deadline = self.now + lease * 1000
                assert r.deadline == self.items[c.id].deadline
            else:
                assert isinstance(r, LeaseLost), r

    @precondition(lambda self: bool(self.ids_with("open", "failed", "claimed")))
    @rule()
    def reap(self) -> None:
        kinds = sorted({m.kind for m in self.items.values()})
        want = {"expired": 0, "promoted": 0}
        for k in kinds:
            want["expired"] += self.expire(k)
            want["promoted"] += self.promote(k)
        assert self.call(self.board.reap) == want

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(self.order), label="target")
        n = 0
        for i in self.subtree(target):
            m = self.items[i]
            if m.status not in TERMINAL:
                self.finish(m, "cancelled")
                n += 1 + self.cancel_dependants(i)
        assert self.call(self.board.cancel, target, "test") == n

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data(), strength=st.sampled_from([0.5, 1.0, 3.0]))
    def mark(self, data: st.DataObject, strength: float) -> None:
        target = data.draw(st.sampled_from(self.order), label="target")
        assert self.call(self.board.mark, target, strength) >= strength
        self.items[target].marked = True

    @precondition(lambda self: bool(self.ids_with("dead")))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        dead = data.draw(st.lists(st.sampled_from(self.ids_with("dead")), min_size=1, unique=True))
        assert self.call(self.board.requeue, dead) == len(dead)
        for i in dead:
            m = self.items[i]
            m.attempts, m.not_before = 0, None
            self.make_ready(m)

    def not_dead(self) -> list[str]:
        return [i for i in self.order if self.items[i].status != "dead"]

    @precondition(lambda self: bool(self.not_dead()))
    @rule(data=st.data())
    def requeue_not_dead(self, data: st.DataObject) -> None:
        live = self.not_dead()
        target = data.draw(st.sampled_from(live), label="target")
        before = self.call(snapshot, self.board)
        with pytest.raises(InvalidState):
            self.call(self.board.requeue, [target])
        self.assert_unchanged(before, "requeue of an item that is not dead")

    def finished_goals(self) -> list[str]:
        roots = dict.fromkeys(self.items[i].root for i in self.order)
        return [r for r in roots if all(m.status in TERMINAL for m in self.items.values() if m.root == r)]

    @precondition(lambda self: bool(self.finished_goals()))
    @rule()
    def purge(self) -> None:
        """Retention: every goal whose whole tree is finished goes, whole, and nothing else."""
        goals = set(self.finished_goals())
        gone = {i for i in self.order if self.items[i].root in goals}
        self.clock.advance(0.001)  # everything finished before now
        assert self.call(retention.purge_all, self.board, 0) == len(gone)
        self.order = [i for i in self.order if i not in gone]
        for i in gone:
            del self.items[i]
            self.results.pop(i, None)
        self.idem = {k: v for k, v in self.idem.items() if v not in gone}
        self.claims = [c for c in self.claims if c.id not in gone]

    @precondition(lambda self: bool(self.order))
    @rule(seconds=QUARTERS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data(), extra=QUARTERS, reclaim=st.booleans())
    def lose_lease(self, data: st.DataObject, extra: float, reclaim: bool) -> None:
        """Time passes beyond a held lease; a reaper returns it (open, or dead if spent), or
        another worker's claim of its kind does, and may take the item over."""
        c = data.draw(st.sampled_from(self.held()), label="claim")
        deadline = self.items[c.id].deadline or 0
        self.clock.advance(max(0, deadline - self.now) / 1000 + extra)
        if reclaim:
            self.do_claim([c.item.kind], 5, 5)
        else:
            self.reap()

    @precondition(lambda self: bool(self.stale()))
    @rule(data=st.data(), op=st.sampled_from(STALE_OPS))
    def stale_write(self, data: st.DataObject, op: str) -> None:
        """A claim that is no longer current (finished, released, expired and re-claimed or
        reaped, cancelled) can write nothing; repeating its own complete/fail is a no-op."""
        self.do_stale_write(data.draw(st.sampled_from(self.stale()), label="claim"), op)

    def overtaken(self) -> list[Claim]:
        """Stale claims on items that are claimed again, under another token."""
        return [c for c in self.stale() if self.items[c.id].status == "claimed"]

    @precondition(lambda self: bool(self.overtaken()))
    @rule(data=st.data(), op=st.sampled_from(STALE_OPS))
    def stale_write_overtaken(self, data: st.DataObject, op: str) -> None:
        """The fencing case proper: the lease expired, someone else holds the item now."""
        self.do_stale_write(data.draw(st.sampled_from(self.overtaken()), label="claim"), op)

    def do_stale_write(self, c: Claim, op: str) -> None:
        m = self.items[c.id]
        before = self.call(snapshot, self.board)
        if op == "complete":
            ctx = pytest.raises(LeaseLost) if m.last != (c.token, "complete") else _no_error()
            with ctx:
                self.call(self.board.complete, c, {"stale": True}, [{"kind": KINDS[0]}])
        elif op == "fail":
            if m.last == (c.token, "fail"):
                assert self.call(self.board.fail, c, "stale", retry=False) == m.status
            else:
                with pytest.raises(LeaseLost):
                    self.call(self.board.fail, c, "stale", retry=False)
        elif op == "heartbeat":
            [r] = self.call(self.board.heartbeat, [c], lease=5)
            assert isinstance(r, LeaseLost), r
        else:
            [r] = self.call(self.board.release, [c])
            assert isinstance(r, LeaseLost), r
        self.assert_unchanged(before, f"a stale {op}")

    # -- checks after every step ---------------------------------------------------------------

    @invariant()
    def board_matches_model(self) -> None:
        raw = self.call(read_raw, self.board)
        statuses = check_raw(self.board, raw)
        assert set(statuses) == set(self.items), (
            f"items on the board {sorted(set(statuses) ^ set(self.items))} differ from the model"
        )
        assert sum(raw.counts.values()) == len(self.items), "counts do not add up to items posted"
        for i, done in self.results.items():
            assert statuses[i] == "done", f"done item {i} became {statuses[i]}"
            assert raw.results.get(i) == _s(done), f"result of done item {i} changed"
        for i, m in self.items.items():
            _compare(i, m, raw.state[i], raw.per_kind.get(m.kind, {}))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _no_error() -> Iterator[None]:
    yield


def _compare(i: str, m: MItem, state: dict[str, Any], idx: dict[str, dict[str, float]]) -> None:
    got = (state["status"], state["attempts"], state["priority"], state["max_attempts"])
    want = (m.status, m.attempts, m.priority, m.max_attempts)
    assert got == want, f"{i}: board has (status, attempts, priority, max_attempts) {got}, model {m}"
    if m.status == "claimed":
        lease = (state.get("token"), state.get("deadline"))
        assert lease == (m.token, m.deadline), f"{i}: board lease {lease}, model {m}"
    if m.status in ("open", "failed"):
        delayed = i in idx.get("delayed", {})
        assert delayed == m.delayed, f"{i}: board delayed={delayed}, model {m}"
        if delayed:
            assert state.get("not_before") == m.not_before, f"{i}: board {state}, model {m}"
    if m.status == "waiting":
        assert state.get("pending") == len(m.pending), f"{i}: board {state}, model {m}"


# -- the tests ------------------------------------------------------------------------------------


def _settings(url: str) -> settings:
    memory = url.startswith("memory://")
    return settings(
        max_examples=40 if memory else 25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# Passing runs take ~10 s; the headroom lets hypothesis finish shrinking a failure (it caps
# shrinking at 300 s) and print the minimal failing sequence instead of being killed midway.
@pytest.mark.timeout(420)
def test_board_state_machine(board_url: str) -> None:
    url = board_url
    with start_blocking_portal() as portal:
        run_state_machine_as_test(lambda: BoardMachine(portal, url), settings=_settings(url))
