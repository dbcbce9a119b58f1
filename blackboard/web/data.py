"""What the web view's pages show, read as the request's principal through its `ReadView`.

Item reads go through the view, so the policy filters the page exactly as it filters the API:
queries, dead letters, approvals, trees and events leave out what the principal may not read.
The few reads `ReadView` has no method for are filtered here by the same rules: board counts
keep only the kinds the principal may read, and goals looked up by id keep only readable ones
(left out silently, as lists do, rather than recorded as denied fetches).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from blackboard.models import Event, Item, Stats, Status
from blackboard.views import ReadView

GOAL_SCAN = 500  # items looked at per status to find goals (a view, not a report)
EVENT_PAGE = 1000
EVENT_PAGES = 20  # at most 20,000 events read for one item's history or the throughput
RUNNING = (Status.WAITING, Status.OPEN, Status.CLAIMED, Status.FAILED)


@dataclass(frozen=True)
class Goals:
    """Goals (items with no parent), newest first: all, with unfinished work, with a dead item."""

    recent: list[Item]
    running: list[Item]
    failed: list[Item]


async def readable_many(view: ReadView, ids: Sequence[str]) -> list[Item]:
    """The items of `ids` that exist and that the view's principal may read."""
    return [it for it in await view.board.get_many(list(ids)) if it is not None and view.visible(it)]


async def stats(view: ReadView) -> Stats:
    """Board counts by kind and status, of the kinds the principal may read."""
    found = await view.board.stats()
    rules = view.board.policy
    if rules is None:
        return found
    kinds = {k: s for k, s in found.kinds.items() if rules.decide(view.principal, "read", k).allowed}
    dead = sum(s.by_status.get(Status.DEAD, 0) for s in kinds.values())
    return found.model_copy(update={"kinds": kinds, "dead_letters": dead})


async def goals(view: ReadView, limit: int = 25) -> Goals:
    """Recent, running and failed goals. A goal runs while any item of its tree is unfinished,
    and has failed once any is dead; both are found from the items' status index, so a goal
    whose own item is done still shows as running while its children work."""
    by_status = {s: (await view.query(status=s, limit=GOAL_SCAN)).items for s in Status}
    known = {it.id: it for items in by_status.values() for it in items if it.is_goal}
    running = {it.root for s in RUNNING for it in by_status[s]}
    failed = {it.root for it in by_status[Status.DEAD]}
    for it in await readable_many(view, sorted((running | failed) - known.keys())):
        known[it.id] = it

    def newest(ids: set[str] | dict[str, Item]) -> list[Item]:
        return sorted((known[i] for i in ids if i in known), key=lambda it: it.id, reverse=True)[:limit]

    return Goals(recent=newest(known), running=newest(running), failed=newest(failed))


async def _events_from(view: ReadView, since_ms: int, until_ms: float) -> list[Event]:
    """Readable events from `since_ms` (Redis stream ids start with their time in ms) up to
    about `until_ms`, at most EVENT_PAGES pages of them."""
    cursor, out = f"{max(since_ms, 0)}-0", []
    for _ in range(EVENT_PAGES):
        events, cursor = await view.read_events(cursor, count=EVENT_PAGE)
        out += events
        # (a board of several shards has one position per shard: all must be past the end)
        if len(events) < EVENT_PAGE or min(int(p.split("-")[0]) for p in cursor.split(",")) > until_ms:
            break
    return out


async def history(view: ReadView, item: Item) -> list[Event]:
    """The item's events (posted, claimed, failed, done, requeued, ...), oldest first: its
    claims and attempts. Read from the board's event feed between its creation and its last
    change; the feed is capped (`events_maxlen`), so a very old item's early events may be gone."""
    end = (item.updated_at or item.finished_at or item.created_at) + 1000
    return [e for e in await _events_from(view, item.created_at - 1000, end) if e.id == item.id]


async def throughput(view: ReadView, seconds: int = 60) -> Counter[str]:
    """Completions per agent over the last `seconds`, from the `done` events (whose actor is
    the agent that completed the item)."""
    now = time.time() * 1000
    events = await _events_from(view, int(now - seconds * 1000), now)
    return Counter(e.data.get("actor", "?") for e in events if e.type == "done")
