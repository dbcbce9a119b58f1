"""The web view's pages and actions (server-rendered HTML; htmx swaps their `live` fragments).

Every read is the request principal's (`view_of`), every action acts as it (`principal_of`),
so the view can show and do exactly what that principal's API token could. Each page first
notes the event cursor and only then reads, and hands the cursor to its event stream: a change
made while the page was being rendered still refreshes it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from blackboard import approvals, display, posting, presence
from blackboard.errors import BlackboardError, InvalidInput
from blackboard.guard import principal_of
from blackboard.http import daemon_of, on_error, view_of
from blackboard.models import Status
from blackboard.web import auth, data, render

Handler = Callable[[Request], Awaitable[Response]]
MAX_FORM = 64 << 10
STATUSES = [s.value for s in Status]


def tokens_of(request: Request) -> dict[str, str]:
    return request.app.state.tokens  # type: ignore[no-any-return]


def web(*, action: bool = False, htmx: bool = True) -> Callable[[Handler], Handler]:
    """A web-view handler: on an open daemon answered under loopback names only; an action
    refused unless it comes from this daemon's own page; board errors shown as HTML (a page,
    or a message for an action), with the status the JSON API gives them."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            if not tokens_of(request) and not auth.loopback_host(request.headers.get("host")):
                why = "this daemon has no API token, so its web view answers on loopback names only"
                return render.message(why, 403, error=True)
            if action and (forged := auth.forged(request, htmx=htmx)):
                return render.message(f"refused: {forged}", 403, error=True)
            try:
                return await handler(request)
            except BlackboardError as e:
                status = (await on_error(request, e)).status_code
                if action:
                    return render.message(f"{type(e).__name__}: {e}", status, error=True)
                return page(request, "error.html", status, error=f"{type(e).__name__}: {e}")

        return run

    return wrap


def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """A page with what every page shows: who is signed in, and whether they can log out."""
    shared = {"who": principal_of(request), "sessions": bool(tokens_of(request))}
    return render.page(request, name, status, **(shared | context))


def events_url(since: str, root: str | None = None, presence: bool = False) -> str:
    query = {"since": since} | ({"root": root} if root else {}) | ({"presence": "1"} if presence else {})
    return f"/web/events?{urlencode(query)}"


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body (what htmx and plain forms send), one value per field."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise InvalidInput("body", f"over {MAX_FORM} bytes")
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}


def item_id(request: Request) -> str:
    return posting.check_id(request.path_params["id"], "id")


# -- pages -----------------------------------------------------------------------------------


@web()
async def board(request: Request) -> Response:
    view = view_of(request)
    since = await view.last_event_id()
    return page(
        request, "board.html", stats=await data.stats(view), statuses=STATUSES, events=events_url(since)
    )


@web()
async def goals(request: Request) -> Response:
    view = view_of(request)
    since = await view.last_event_id()
    return page(request, "goals.html", goals=await data.goals(view), events=events_url(since))


@web()
async def goal(request: Request) -> Response:
    """A goal's lineage tree: `display.traced`, the same data as `blackboard trace --json`."""
    view, goal_id = view_of(request), item_id(request)
    since = await view.last_event_id()
    tree = await display.traced(view, goal_id)
    return page(request, "goal.html", tree=tree, events=events_url(since, tree["item"]["root"]))


@web()
async def item(request: Request) -> Response:
    view = view_of(request)
    since = await view.last_event_id()
    found = await view.get(item_id(request))
    return page(
        request,
        "item.html",
        item=found.model_dump(mode="json"),
        history=await data.history(view, found),
        events=events_url(since, found.root),
    )


@web()
async def agents(request: Request) -> Response:
    view = view_of(request)
    since = await view.last_event_id()
    daemons = await presence.daemons(
        view.board, stale_after=daemon_of(request).settings.presence_interval * 5
    )
    return page(
        request,
        "agents.html",
        daemons=daemons,
        per_minute=await data.throughput(view),
        events=events_url(since, presence=True),
    )


@web()
async def dead_letters(request: Request) -> Response:
    view = view_of(request)
    since = await view.last_event_id()
    return page(
        request, "dead.html", dead=(await view.dead_letters(limit=200)).items, events=events_url(since)
    )


@web()
async def pending_approvals(request: Request) -> Response:
    view = view_of(request)
    since = await view.last_event_id()
    return page(request, "approvals.html", pending=await view.approvals(), events=events_url(since))


# -- actions (htmx posts; the answer is a message, the lists follow from the event stream) ----


@web(action=True)
async def retry(request: Request) -> Response:
    """Requeue a dead letter as the principal (the policy wants `post` on its kind)."""
    target = item_id(request)
    await daemon_of(request).board.requeue([target], actor=principal_of(request))
    return render.message(f"requeued {target}")


@web(action=True)
async def decide(request: Request) -> Response:
    """Approve or reject an item waiting for approval as the principal (`approve` on its kind)."""
    target, verdict = item_id(request), request.path_params["verdict"]
    note = (await form(request)).get("note", "").strip()
    if verdict == "reject" and not note:
        raise InvalidInput("note", "a rejection needs a note saying why")
    await approvals.decide(daemon_of(request).board, target, verdict, note, actor=principal_of(request))
    return render.message(f"{'approved' if verdict == 'approve' else 'rejected'} {target}")


# -- signing in ------------------------------------------------------------------------------


@web()
async def login_form(request: Request) -> Response:
    if not tokens_of(request):
        return RedirectResponse("/", 303)
    target = auth.safe_next(request.query_params.get("next"))
    return page(request, "login.html", next=target, failed=False, who=None, sessions=False)


@web(action=True, htmx=False)  # a plain form: still same-origin only
async def login(request: Request) -> Response:
    fields, tokens = await form(request), tokens_of(request)
    if not tokens:
        return RedirectResponse("/", 303)
    principal = auth.principal_for_token(fields.get("token", ""), tokens)
    target = auth.safe_next(fields.get("next"))
    if principal is None:
        return page(request, "login.html", 401, next=target, failed=True, who=None, sessions=False)
    response = RedirectResponse(target, 303)
    auth.set_session(response, request, auth.session_value(principal, tokens[principal]))
    return response


@web(action=True)
async def logout(request: Request) -> Response:
    response = Response(status_code=204, headers={"HX-Redirect": "/login"})
    auth.clear_session(response)
    return response
