"""The web view: the board in a browser, served by the daemon at `/`, updating live.

    GET  /                         the board: counts by kind and status
    GET  /web/goals                goals: recent, running, failed
    GET  /web/goals/{id}           a goal's lineage tree (`display.traced`, as `trace --json`)
    GET  /web/items/{id}           one item: payload, result or error, its events, model usage
    GET  /web/agents               daemons and their agents: live or dead, in flight, done/min
    GET  /web/dead                 dead letters, each with a retry button
    GET  /web/approvals            items waiting for approval, with approve and reject
    GET  /web/events               the pages' event stream (`live`)
    POST /web/items/{id}/retry     requeue a dead letter; .../approve, .../reject (form: note)
    GET  /login, POST /login       sign in with an API token (a session cookie); POST /logout
    GET  /web/static/...           the vendored htmx and its SSE extension, the stylesheet

Pages are HTML rendered on the server from the package's templates (`render`); the only
script is the vendored htmx (`static/VENDORED.md`), which re-fetches a page's live fragment
when its event stream says the board changed. Reads and actions are the request principal's,
so the board's policy decides what the view shows and allows, as for the JSON API; `auth`
covers sessions and forgery. The routes are mounted by `blackboard.http.create_app`.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles


def routes() -> list[BaseRoute]:
    """The web view's routes (imported on use: the pages use `blackboard.http`'s helpers)."""
    from blackboard.web import live, pages, render

    def get(path: str, endpoint: pages.Handler) -> Route:
        return Route(path, endpoint, methods=["GET"], include_in_schema=False)

    def post(path: str, endpoint: pages.Handler) -> Route:
        return Route(path, endpoint, methods=["POST"], include_in_schema=False)

    return [
        get("/", pages.board),
        get("/web/goals", pages.goals),
        get("/web/goals/{id}", pages.goal),
        get("/web/items/{id}", pages.item),
        get("/web/agents", pages.agents),
        get("/web/dead", pages.dead_letters),
        get("/web/approvals", pages.pending_approvals),
        get("/web/events", live.events),
        post("/web/items/{id}/retry", pages.retry),
        post("/web/items/{id}/{verdict:str}", pages.decide),
        get("/login", pages.login_form),
        post("/login", pages.login),
        post("/logout", pages.logout),
        Mount("/web/static", StaticFiles(directory=render.STATIC), name="static"),
    ]
