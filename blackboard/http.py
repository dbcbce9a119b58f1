"""The daemon's HTTP API (Starlette, served by uvicorn inside the daemon's task group).

    POST /v1/items                 post an item (JSON body: kind, payload, priority, parent, ...)
    GET  /v1/items                 query: ?kind=&status=&root=&parent=&limit=&cursor=
    GET  /v1/items/{id}            one item
    POST /v1/items/{id}/cancel     cancel it and its unfinished descendants
    POST /v1/items/{id}/approve    decide an item waiting for approval ({"note"}); .../reject
    POST /v1/items/{id}/retry      requeue a dead letter with a fresh set of attempts
    GET  /v1/approvals             items waiting for approval, with their deadlines
    POST /v1/goals/{id}/pause      stop new claims for a goal; .../resume; /v1/pause, /v1/resume
    GET  /v1/goals/{id}/tree       the lineage tree, with the goal's model usage
    GET  /v1/goals/{id}/usage      the goal's model usage totals
    GET  /v1/events                server-sent events: ?since=&root=
    GET  /v1/stats, /v1/agents     board counts; live daemons and their agents
    GET  /metrics                  Prometheus exposition
    GET  /healthz, /readyz         alive; ready (Redis reachable, agents running)
    GET  /openapi.json             this API's OpenAPI document
    POST /mcp                      the board as an MCP server (streamable HTTP; `blackboard.mcpserver`)
    POST /a2a                      the daemon as an A2A agent (JSON-RPC, SSE; `blackboard.a2a.server`)
    GET  /.well-known/agent-card.json   its A2A agent card (public)
    GET  /, /web/...               the web view (`blackboard.web`: HTML pages, live over SSE)

Errors are JSON `{"error": {"type", "field", "message"}}` with a 4xx status. With an API token
configured every /v1 route (and /mcp, /a2a) needs `Authorization: Bearer <token>`; each token
acts as a principal (`api_token` as `http`, each of `api_principals` as its name), and the
board's policy decides what that principal may do. The web view takes the same tokens, or the
session cookie its `/login` sets from one (`blackboard.web.auth`), on its own routes only.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from blackboard import mcpserver, posting, presence, tracing, web
from blackboard.display import traced
from blackboard.errors import BlackboardError, InvalidInput, InvalidState, ItemNotFound
from blackboard.guard import MAX_BODY, LoopbackOnly, TokenAuth, error, media_type, principal_of
from blackboard.policy import BudgetExceeded, PolicyDenied, RepeatedPost
from blackboard.views import ReadView

if TYPE_CHECKING:
    from blackboard.daemon import Daemon

# A Redis stream id (under 2**64), or one per shard joined by ',' (a board of several shards).
_STREAM_ID = r"\d{1,19}(-\d{1,19})?"
EVENT_CURSOR_RE = re.compile(rf"^{_STREAM_ID}(,{_STREAM_ID}){{0,255}}$")
POST_FIELDS = (
    "priority",
    "parent",
    "after",
    "delay",
    "not_before",
    "max_attempts",
    "idempotency_key",
    "tags",
    "visibility",
)

schemas = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "blackboard", "version": "1"}})


async def on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, InvalidInput):
        return error(422, type(exc).__name__, str(exc), exc.field)
    if isinstance(exc, ItemNotFound):
        return error(404, "ItemNotFound", str(exc))
    if isinstance(exc, InvalidState):
        return error(409, "InvalidState", str(exc))
    if isinstance(exc, PolicyDenied):
        return error(403, "PolicyDenied", str(exc))
    if isinstance(exc, BudgetExceeded | RepeatedPost):
        return error(429 if isinstance(exc, BudgetExceeded) else 409, type(exc).__name__, str(exc))
    if isinstance(exc, HTTPException):
        return error(exc.status_code, "HTTPException", str(exc.detail))
    return error(503, type(exc).__name__, str(exc))  # BoardUnavailable and the like


async def read_note(request: Request) -> str:
    """The optional `{"note": "..."}` body of a decision or an interrupt ("" without a body)."""
    data = await read_json(request) if await request.body() else {}
    note = data.get("note", "")
    if not isinstance(note, str):
        raise InvalidInput("note", f"expected a string, got {type(note).__name__}")
    return note


def daemon_of(request: Request) -> Daemon:
    return request.app.state.daemon  # type: ignore[no-any-return]


async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput("body", f"over {MAX_BODY} bytes")
    if body and (ctype := media_type(request)) != "application/json":
        raise InvalidInput("content-type", f"expected application/json, got {ctype or 'none'!r}")
    try:
        data = json.loads(body or b"null")
    except ValueError as e:
        raise InvalidInput("body", f"expected JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidInput("body", "expected a JSON object")
    return data


async def post_item(request: Request) -> Response:
    """
    summary: Post an item
    requestBody: {content: {application/json: {schema: {type: object, required: [kind]}}}}
    responses: {201: {description: the item as stored}, 422: {description: bad input}}
    """
    d = daemon_of(request)
    data = await read_json(request)
    unknown = set(data) - {"kind", "payload", *POST_FIELDS}
    if unknown:
        raise InvalidInput(
            sorted(unknown)[0], f"unknown field; expected kind, payload, {', '.join(POST_FIELDS)}"
        )
    if "kind" not in data:
        raise InvalidInput("kind", "required")
    with tracing.joined(request.headers.get("traceparent")):  # the caller's trace, if it sent one
        item = await d.board.post(
            data["kind"],
            data.get("payload"),
            actor=principal_of(request),
            **{k: data[k] for k in POST_FIELDS if k in data},
        )
    d.metrics.posted.labels(item.kind).inc()
    return JSONResponse(item.model_dump(mode="json"), status_code=201)


async def get_item(request: Request) -> Response:
    """
    summary: Get one item
    responses: {200: {description: the item}, 404: {description: no such item}}
    """
    posting.check_id(request.path_params["id"], "id")
    item = await view_of(request).get(request.path_params["id"])
    return JSONResponse(item.model_dump(mode="json"))


async def list_items(request: Request) -> Response:
    """
    summary: Query items (kind, status, root, parent, limit, cursor)
    responses: {200: {description: "a page: {items, cursor}"}}
    """
    q = request.query_params
    unknown = set(q) - {"kind", "status", "root", "parent", "limit", "cursor"}
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown query parameter")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise InvalidInput("limit", f"expected an integer, got {q['limit']!r}") from None
    page = await view_of(request).query(
        kind=q.get("kind"),
        status=q.get("status"),
        root=q.get("root"),
        parent=q.get("parent"),
        limit=limit,
        cursor=q.get("cursor"),
    )
    return JSONResponse(page.model_dump(mode="json"))


async def decide_item(request: Request) -> Response:
    """
    summary: Approve or reject an item waiting for approval (body {"note"}; a reject needs one)
    responses: {200: {description: the item}, 404: {description: no such item},
      409: {description: not waiting for approval}, 403: {description: the policy denies it}}
    """
    from blackboard import approvals

    note = await read_note(request)
    verdict = request.path_params["verdict"]
    if verdict not in ("approve", "reject"):
        raise HTTPException(404, f"no route POST /v1/items/{{id}}/{verdict}")
    if verdict == "reject" and not note.strip():
        raise InvalidInput("note", "a rejection needs a note saying why")
    item = await approvals.decide(
        daemon_of(request).board, request.path_params["id"], verdict, note, actor=principal_of(request)
    )
    return JSONResponse(item.model_dump(mode="json"))


async def interrupt(request: Request) -> Response:
    """
    summary: Pause or resume a goal (POST /v1/goals/{id}/pause|resume) or the board (/v1/pause|resume)
    responses: {200: {description: how many items were held or reopened}, 404: {description: no such goal}}
    """
    from blackboard import pausing

    action = request.url.path.rsplit("/", 1)[-1]
    note = await read_note(request)
    do = pausing.pause if action == "pause" else pausing.resume
    n = await do(daemon_of(request).board, request.path_params.get("id"), note, actor=principal_of(request))
    return JSONResponse({"paused" if action == "pause" else "resumed": n})


async def list_approvals(request: Request) -> Response:
    """
    summary: Items waiting for approval, with their deadlines
    responses: {200: {description: the pending approvals}}
    """
    found = await view_of(request).approvals()
    return JSONResponse([{"item": it.model_dump(mode="json"), "deadline": d} for it, d in found])


async def cancel_item(request: Request) -> Response:
    """
    summary: Cancel an item and its unfinished descendants
    responses: {200: {description: how many were cancelled}, 404: {description: no such item}}
    """
    board, item_id = daemon_of(request).board, request.path_params["id"]
    n = await board.cancel(item_id, "cancelled over HTTP", actor=principal_of(request))
    return JSONResponse({"cancelled": n})


async def retry_item(request: Request) -> Response:
    """
    summary: Retry a dead letter (requeue it with a fresh set of attempts; the policy wants post on its kind)
    responses: {200: {description: "{requeued: 1}"}, 404: {description: no such item},
      409: {description: not dead}, 403: {description: the policy denies it}}
    """
    board, item_id = daemon_of(request).board, request.path_params["id"]
    return JSONResponse({"requeued": await board.requeue([item_id], actor=principal_of(request))})


async def goal_tree(request: Request) -> Response:
    """
    summary: A goal's lineage tree, with the goal's model usage totals
    responses: {200: {description: "{item, children: [...], usage: {...}}"}, 404: {description: no such item}}
    """
    posting.check_id(request.path_params["id"], "id")
    return JSONResponse(await traced(view_of(request), request.path_params["id"]))


async def goal_usage(request: Request) -> Response:
    """
    summary: A goal's model usage totals (calls, tokens, cost; per model)
    responses: {200: {description: "{calls, errors, prompt_tokens, completion_tokens, cost, by_model}"}}
    """
    posting.check_id(request.path_params["id"], "id")
    return JSONResponse((await view_of(request).usage(request.path_params["id"])).model_dump(mode="json"))


async def events(request: Request) -> Response:
    """
    summary: Server-sent events, one per state change (?since=cursor&root=goal)
    responses: {200: {description: text/event-stream}}
    """
    view = view_of(request)
    q = request.query_params
    unknown = set(q) - {"since", "root"}
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown query parameter")
    # Checked here: once the stream has started, a bad value can only break the connection.
    if q.get("since") and not EVENT_CURSOR_RE.match(q["since"]):
        raise InvalidInput("since", f"expected an event cursor such as 1700000000000-0, got {q['since']!r}")
    root = posting.check_id(q["root"], "root") if "root" in q else None
    since = q.get("since") or await view.last_event_id()

    async def stream() -> AsyncIterator[dict[str, str]]:
        async for ev in view.events(since, root=root):
            yield {"id": ev.cursor, "event": ev.type, "data": ev.model_dump_json()}

    return EventSourceResponse(stream(), ping=15)


async def stats(request: Request) -> Response:
    """
    summary: Counts by kind and status
    responses: {200: {description: stats}}
    """
    return JSONResponse((await daemon_of(request).board.stats()).model_dump(mode="json"))


async def agents(request: Request) -> Response:
    """
    summary: Daemons on the board and their agents (live and dead)
    responses: {200: {description: daemons}}
    """
    found = await presence.daemons(daemon_of(request).board)
    return JSONResponse([d.model_dump(mode="json") for d in found])


async def metrics(request: Request) -> Response:
    d = daemon_of(request)
    d.metrics.ready.set(1 if d.ready else 0)  # as /readyz says now, not as of the last health check
    return Response(generate_latest(d.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive", "daemon": daemon_of(request).id})


async def readyz(request: Request) -> Response:
    d = daemon_of(request)
    body = {"ready": d.ready, "redis": d.redis_ok, "agents": len(d.slots)}
    return JSONResponse(body, status_code=200 if d.ready else 503)


async def openapi(request: Request) -> Response:
    # JSON, as the path says (Starlette's OpenAPIResponse would send YAML).
    return JSONResponse(schemas.get_schema(request.app.routes))


def view_of(request: Request) -> ReadView:
    """The board as the request's principal may read it."""
    return ReadView(daemon_of(request).board, principal_of(request))


def create_app(daemon: Daemon) -> Starlette:
    tokens = {p: t.get_secret_value() for p, t in daemon.settings.api_principals.items()}
    if daemon.settings.api_token is not None:
        tokens["http"] = daemon.settings.api_token.get_secret_value()
    middleware = [Middleware(TokenAuth, tokens=tokens) if tokens else Middleware(LoopbackOnly)]
    mcp = mcpserver.HttpEndpoint(daemon, principal_of)
    from blackboard.a2a import server as a2a  # the A2A card and endpoint (imports the SDK)

    app = Starlette(
        routes=[
            Route("/v1/items", post_item, methods=["POST"]),
            Route("/v1/items", list_items, methods=["GET"]),
            Route("/v1/items/{id}", get_item, methods=["GET"]),
            Route("/v1/items/{id}/cancel", cancel_item, methods=["POST"]),
            Route("/v1/items/{id}/retry", retry_item, methods=["POST"]),
            Route("/v1/items/{id}/{verdict:str}", decide_item, methods=["POST"]),
            Route("/v1/approvals", list_approvals, methods=["GET"]),
            Route("/v1/goals/{id}/tree", goal_tree, methods=["GET"]),
            Route("/v1/goals/{id}/pause", interrupt, methods=["POST"]),
            Route("/v1/goals/{id}/resume", interrupt, methods=["POST"]),
            Route("/v1/pause", interrupt, methods=["POST"]),
            Route("/v1/resume", interrupt, methods=["POST"]),
            Route("/v1/goals/{id}/usage", goal_usage, methods=["GET"]),
            Route("/v1/events", events, methods=["GET"]),
            Route("/v1/stats", stats, methods=["GET"]),
            Route("/v1/agents", agents, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
            Route("/mcp", mcp, include_in_schema=False),  # an ASGI app: every method goes to it
            *a2a.routes(daemon),
            *web.routes(),
        ],
        middleware=middleware,
        exception_handlers={BlackboardError: on_error, HTTPException: on_error},
    )
    app.state.daemon = daemon
    app.state.tokens = tokens  # principal -> token, for the web view's sessions
    app.state.mcp = mcp
    return app


class _Server(uvicorn.Server):
    def capture_signals(self) -> Any:  # the daemon owns signals
        return nullcontext()


async def serve(daemon: Daemon, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the API until cancelled; reports started once the socket is listening."""
    s = daemon.settings
    sock = socket.socket(socket.AF_INET6 if ":" in s.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((s.host, s.port))  # fails here, at startup, if the port is taken
    except OSError as e:
        sock.close()
        raise InvalidInput("port", f"cannot listen on {s.host}:{s.port}: {e.strerror or e}") from None
    host, port = sock.getsockname()[:2]
    daemon.http_url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    app = create_app(daemon)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    sock.listen(config.backlog)  # connections made as soon as we report started wait, not fail
    server = _Server(config)
    task_status.started()
    try:
        async with app.state.mcp.running():  # the /mcp endpoint's sessions live inside the server
            await server.serve(sockets=[sock])
    finally:
        # Cancelled: stop uvicorn properly, or its listener stays registered with the event loop
        # (a later server in the same process that gets the same fd number never sees a request)
        # and its connections stay open. Open event streams end: their connections are closed.
        with anyio.CancelScope(shield=True), anyio.move_on_after(3):
            if server.started:
                server.force_exit = True  # don't wait for streams to end by themselves
                await server.shutdown(sockets=[sock])
                for conn in list(server.server_state.connections):
                    conn.transport.close()
                if server.server_state.tasks:
                    await asyncio.wait(list(server.server_state.tasks), timeout=1)
                for task in list(server.server_state.tasks):
                    task.cancel()
        sock.close()
