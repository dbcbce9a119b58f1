"""The web view's event stream: one `change` server-sent event per burst of board changes.

A page listens here (htmx's SSE extension) and re-fetches its live fragment on `sse:change`,
so it updates when the board changes and never polls. Events come from the request
principal's `ReadView`, so an item the policy hides never triggers a refresh, and carry only
the cursor (the page re-reads what it shows; nothing from the stream is put into the page).
A burst (a fan-out posts and claims dozens of items at once) becomes one event: after sending
one the stream waits and then reads everything that arrived meanwhile, so a page refreshes at a
bounded rate and always after the last change: a goal's page (`root`) at most every
`COALESCE` seconds, a board-wide page every `BOARD_COALESCE` (its fragment reads more). With
`presence=1` (the agents page) it sends one each heartbeat interval, also while the board is
quiet, since daemons coming and going are not board events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from blackboard import connection, posting
from blackboard.errors import InvalidInput
from blackboard.http import EVENT_CURSOR_RE, daemon_of, view_of
from blackboard.web.pages import web

COALESCE = 0.25
BOARD_COALESCE = 1.0


@web()
async def events(request: Request) -> Response:
    q, view = request.query_params, view_of(request)
    unknown = set(q) - {"since", "root", "presence"}
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown query parameter")
    # On a reconnect the browser says where it stopped; else the page says when it was read.
    since = request.headers.get("last-event-id") or q.get("since") or await view.last_event_id()
    if not EVENT_CURSOR_RE.match(since):
        raise InvalidInput("since", f"expected an event cursor such as 1700000000000-0, got {since!r}")
    root = posting.check_id(q["root"], "root") if "root" in q else None
    quiet = daemon_of(request).settings.presence_interval if q.get("presence") == "1" else None
    pause = quiet or (COALESCE if root else BOARD_COALESCE)

    async def stream() -> AsyncIterator[dict[str, str]]:
        cursor = since
        while True:
            batch, cursor = await view.read_events(cursor, block=quiet or connection.MAX_BLOCK)
            mine = [e for e in batch if root is None or e.root == root]
            if mine or (quiet and not batch):
                types = sorted({e.type for e in mine})
                yield {"id": cursor, "event": "change", "data": json.dumps({"types": types})}
                await anyio.sleep(pause)

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-store"})
