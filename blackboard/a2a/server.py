"""The daemon as an A2A agent: its card, its JSON-RPC endpoint, and an executor that runs goals.

    GET  /.well-known/agent-card.json   the card (public): skills = the goal kinds taken here
    POST /a2a                           JSON-RPC: SendMessage, SendStreamingMessage (SSE),
                                        GetTask, ListTasks, CancelTask, SubscribeToTask

**Skills.** The *entry kinds* of the agents loaded now: kinds they consume (a consumed glob
stands for the registered kinds it matches) that no loaded agent produces, critics' review kinds
left out. Each skill's id is the kind; its description names the agents that take it and the
kind's registered JSON schema, if any. The card is built per request, so hot-reloaded agents show.

**A message becomes a goal.** `metadata.skill` (on the message, or on the request) names the
kind; without it the daemon's only skill is used. The payload is the message's one data part,
or `{"text": ...}` from its text parts. The goal is posted as the caller (below), with the same
checks as `POST /v1/items`; a refusal is an A2A error and writes nothing but its audit record.

**The task follows the goal's tree**, read from the board's event feed as the caller sees it
(`ReadView`): submitted (posted) → working (claimed) → input-required while an item of the tree
waits for approval (decided on the board: `POST /v1/items/{id}/approve`, the CLI, the web view;
the task goes on by itself, it takes no reply message) → completed when the tree has finished
and its final item (the one that finished last, as `blackboard post --wait` shows) is done, with
that item's result as the task's artifact (one data part) / failed (the error) / canceled (the
goal was cancelled, by A2A `CancelTask` or any other way).

**Auth.** `/a2a` takes the same bearer tokens as `/v1` (`guard.TokenAuth`); the caller is the
token's principal (`http` on an open daemon) and the policy applies: `post` on the kind to send,
`read` on it to follow (checked before posting, so nothing is posted that the caller couldn't
see), `cancel` to cancel. A2A tasks are kept per principal: another token's tasks are not found.
Tasks live in this daemon's memory (`InMemoryTaskStore`); the goals live on the board.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from a2a.auth.user import User
from a2a.helpers import get_data_parts, new_data_part, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import Event, EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    CancelTaskRequest,
    HTTPAuthSecurityScheme,
    Message,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_CURRENT, TransportProtocol
from a2a.utils.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from blackboard import __version__, connection, kinds, policy
from blackboard.a2a import plain
from blackboard.agents import AgentSpec
from blackboard.display import final_item, finished
from blackboard.errors import BlackboardError, InvalidInput, InvalidState, ItemNotFound
from blackboard.guard import MAX_BODY, media_type, principal_of
from blackboard.models import Item, Status, TreeNode
from blackboard.policy import BudgetExceeded, PolicyDenied, RepeatedPost
from blackboard.views import ReadView

if TYPE_CHECKING:
    from blackboard.daemon import Daemon

PATH = "/a2a"
REVIEW_PREFIX = "review."  # a critic's review kinds (blackboard.critic): the board posts them
MODES = ["application/json", "text/plain"]
CANCEL_WAIT = 10.0  # seconds a CancelTask waits for the task to show the goal cancelled
TERMINAL = {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED}


# -- skills and the card -----------------------------------------------------------------------


def entry_kinds(daemon: Daemon) -> dict[str, list[AgentSpec]]:
    """The goal kinds this daemon takes, with the agents that consume each (see the module doc)."""
    specs = [slot.runner.spec for slot in daemon.slots.values()]
    registered = daemon.board.registry.kinds()
    consumed: dict[str, list[AgentSpec]] = {}
    for spec in specs:
        for kind in kinds.expand(spec.consumes, registered):
            if not kinds.is_glob(kind) and not kind.startswith(REVIEW_PREFIX):
                consumed.setdefault(kind, []).append(spec)
    produced = [p for spec in specs for p in spec.produces if p != "*"]  # a critic's "*" says nothing
    return {
        kind: agents
        for kind, agents in sorted(consumed.items())
        if not any(fnmatch.fnmatchcase(kind, p) for p in produced)
    }


def skill(kind: str, agents: list[AgentSpec], schema: dict[str, Any] | None) -> AgentSkill:
    names = ", ".join(a.name for a in agents)
    about = "; ".join(a.description for a in agents if a.description)
    text = f"Post a goal of kind {kind!r} (taken by {names}{': ' + about if about else ''})."
    if schema is not None:
        text += f" Payload JSON schema: {json.dumps(schema, sort_keys=True, separators=(',', ':'))}"
    else:
        text += " The kind has no registered schema: any JSON payload."
    return AgentSkill(
        id=kind,
        name=kind,
        description=text,
        tags=[kind.split(".")[0], *(a.name for a in agents)],
        input_modes=MODES,
        output_modes=["application/json"],
    )


def card(daemon: Daemon, base_url: str) -> AgentCard:
    """The agent card as of now, its endpoint under `base_url` (where the caller found the card)."""
    schemas = daemon.board.registry.kinds()
    out = AgentCard(
        name=f"blackboard {daemon.settings.board}",
        description=(
            f"The blackboard daemon of board {daemon.settings.board!r}: each message becomes a goal "
            "on the board (metadata.skill names its kind); the task follows the goal's tree to its result."
        ),
        version=__version__,
        supported_interfaces=[
            AgentInterface(
                url=base_url.rstrip("/") + PATH,
                protocol_binding=TransportProtocol.JSONRPC,
                protocol_version=PROTOCOL_VERSION_CURRENT,
            )
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=MODES,
        default_output_modes=["application/json"],
        skills=[skill(k, agents, schemas.get(k)) for k, agents in entry_kinds(daemon).items()],
    )
    if daemon.settings.api_token is not None or daemon.settings.api_principals:
        out.security_schemes["bearer"].CopyFrom(
            SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))
        )
        out.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return out


# -- errors and messages -----------------------------------------------------------------------


def as_a2a(e: BlackboardError) -> A2AError:
    """A board error as the A2A error a client sees (`data.type` keeps the board's error class)."""
    data: dict[str, Any] = {"type": type(e).__name__}
    if isinstance(e, InvalidInput):
        return InvalidParamsError(message=str(e), data=data | {"field": e.field})
    if isinstance(e, ItemNotFound):
        return TaskNotFoundError(message=str(e), data=data)
    if isinstance(e, PolicyDenied | BudgetExceeded | RepeatedPost | InvalidState):
        return InvalidRequestError(message=f"{type(e).__name__}: {e}", data=data)
    return InternalError(message=f"{type(e).__name__}: {e}", data=data)


def _bad(field: str, problem: str) -> InvalidParamsError:
    return InvalidParamsError(message=f"{field}: {problem}", data={"type": "InvalidInput", "field": field})


def goal_of(request: SendMessageRequest, skills: list[str]) -> tuple[str, Any]:
    """The kind and payload a message asks for, or `InvalidParamsError` naming the field."""
    meta = dict(request.metadata.items()) | dict(request.message.metadata.items())
    kind = meta.get("skill")
    if kind is None:
        if len(skills) != 1:
            offered = ", ".join(skills) or "none (no agent here takes goals)"
            raise _bad("metadata.skill", f"name the skill (the goal kind) to run; skills: {offered}")
        kind = skills[0]
    if kind not in skills:
        raise _bad("metadata.skill", f"{kind!r} is not a skill of this agent; skills: {', '.join(skills)}")
    data, texts = [], []
    for i, part in enumerate(request.message.parts):
        if part.HasField("data"):
            data.append(plain(get_data_parts([part])[0]))
        elif part.HasField("text"):
            texts.append(part.text)
        else:
            raise _bad(f"message.parts[{i}]", "files are not taken: send a data part (or text)")
    if len(data) > 1 or (data and texts):
        raise _bad("message.parts", "expected one data part (the goal's payload), or text parts")
    if not data and not texts:
        raise _bad("message.parts", "empty: send a data part (the goal's payload) or text")
    return str(kind), data[0] if data else {"text": "\n".join(texts)}


# -- following a goal --------------------------------------------------------------------------


def progress(tree: TreeNode, started: bool) -> tuple[TaskState, str]:
    """The task state a goal's tree stands for, and a line saying why."""
    goal, items = tree.item, tree.walk()
    if goal.status is Status.CANCELLED:
        return TaskState.TASK_STATE_CANCELED, f"goal {goal.id} cancelled: {goal.reason or 'cancelled'}"
    if goal.status is Status.DEAD:
        return TaskState.TASK_STATE_FAILED, f"goal {goal.id} failed: {goal.error}"
    if finished(tree):
        final = final_item(tree)
        if final.status is Status.DONE:
            return TaskState.TASK_STATE_COMPLETED, f"{final.kind} {final.id} done"
        why = final.error or final.reason or final.status.value
        return TaskState.TASK_STATE_FAILED, f"{final.kind} {final.id} {final.status.value}: {why}"
    gated = [i for i in items if i.status is Status.WAITING and i.reason == "approval"]
    if gated:
        waits = ", ".join(f"{i.kind} {i.id}" for i in gated)
        return TaskState.TASK_STATE_INPUT_REQUIRED, f"waiting for a human's approval on the board: {waits}"
    if started or any(i.attempts or i.status is not Status.OPEN for i in items):
        paused = " (paused)" if any(i.reason == "paused" for i in items) else ""
        done = sum(i.terminal for i in items)
        return TaskState.TASK_STATE_WORKING, f"{done}/{len(items)} items finished{paused}"
    return TaskState.TASK_STATE_SUBMITTED, f"goal {goal.id} posted"


async def follow(view: ReadView, goal: Item, cursor: str, updater: TaskUpdater) -> None:
    """Publish the goal's progress as task updates until its tree has finished (event-driven:
    the tree is read again only after one of the goal's events)."""
    shown: tuple[TaskState, str] = (TaskState.TASK_STATE_SUBMITTED, "")
    while True:
        tree = await view.tree(goal.id)
        state, note = progress(tree, shown[0] is not TaskState.TASK_STATE_SUBMITTED)
        if state in TERMINAL:
            # Worked on and finished between two looks (say, right after an approval): say so.
            unseen = shown[0] is not TaskState.TASK_STATE_WORKING and any(i.attempts for i in tree.walk())
            if unseen and state is not TaskState.TASK_STATE_CANCELED:
                await updater.start_work()
            if state is TaskState.TASK_STATE_COMPLETED:
                final = final_item(tree)
                meta = {"item": final.id, "kind": final.kind, "goal": goal.id}
                await updater.add_artifact([new_data_part(final.result)], name="result", metadata=meta)
            await updater.update_status(state, message=updater.new_agent_message([new_text_part(note)]))
            return
        if (state, note) != shown and state is not TaskState.TASK_STATE_SUBMITTED:
            await updater.update_status(state, message=updater.new_agent_message([new_text_part(note)]))
            shown = (state, note)
        while True:  # until something happens to the goal's tree (blocking reads, no polling)
            events, cursor = await view.read_events(cursor, block=connection.MAX_BLOCK)
            if any(e.root == goal.id for e in events):
                break


class BoardExecutor(AgentExecutor):
    """Runs one A2A task: the goal the request handler posted, followed to its end."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.following: dict[str, anyio.Event] = {}  # task id -> set when its follower ends

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        state = context.call_context.state
        goal: Item = state["goal"]
        task_id, context_id = str(context.task_id), str(context.context_id)
        ended = self.following[task_id] = anyio.Event()
        try:
            first = Task(
                id=task_id,
                context_id=context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED, timestamp=datetime.now(UTC)),
                history=[context.message] if context.message else [],
                metadata={"goal": goal.id, "kind": goal.kind},
            )
            await event_queue.enqueue_event(first)
            updater = TaskUpdater(event_queue, task_id, context_id)
            view = ReadView(self.daemon.board, state["principal"])
            async with anyio.create_task_group() as tg:

                async def stop_with_the_daemon() -> None:
                    await self.daemon.wait_stopping()  # the goal goes on; the task's stream ends
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_with_the_daemon)
                try:
                    await follow(view, goal, state["since"], updater)
                except BlackboardError as e:
                    raise as_a2a(e) from None
                tg.cancel_scope.cancel()
        finally:
            ended.set()
            self.following.pop(task_id, None)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # The handler has cancelled the goal already; the follower sees it on the event feed and
        # publishes the canceled state (so a streaming client gets it too). Wait for that.
        ended = self.following.get(str(context.task_id))
        if ended is not None:
            with anyio.move_on_after(CANCEL_WAIT):
                await ended.wait()


# -- the request handler, auth and routes ------------------------------------------------------


class Principal(User):
    """The caller: the principal of the request's bearer token (`http` with no tokens)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.name


class Calls(DefaultServerCallContextBuilder):
    """Call contexts that carry the request's principal (set by `guard.TokenAuth`); the task store
    keys tasks by it, so each principal sees its own tasks only."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)  # headers (the A2A version), requested extensions
        context.state["principal"] = principal_of(request)
        return context

    def build_user(self, request: Request) -> User:
        return Principal(principal_of(request))


class Handler(DefaultRequestHandler):
    """The SDK's handler, with the board's checks first: a message posts its goal (or is refused
    with nothing written) before a task exists; a cancel cancels the goal before the task."""

    def __init__(self, daemon: Daemon, executor: BoardExecutor) -> None:
        self.tasks = InMemoryTaskStore()
        # The SDK reads only capabilities from this card; the card served is built per request.
        base = card(daemon, "")
        base.skills.append(AgentSkill(id="goal", name="goal", description="a goal", tags=["goal"]))
        super().__init__(agent_executor=executor, task_store=self.tasks, agent_card=base)
        self.daemon = daemon

    async def _post_goal(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        if params.message.task_id:
            raise UnsupportedOperationError(
                message="a task is a goal on the board and takes no further messages; approvals "
                "are decided on the board (POST /v1/items/{id}/approve)"
            )
        kind, payload = goal_of(params, list(entry_kinds(self.daemon)))
        board, principal = self.daemon.board, str(context.state["principal"])
        try:
            await policy.enforce(board, principal, "read", [kind])  # it must be able to follow it
            context.state["since"] = await board.last_event_id()
            context.state["goal"] = goal = await board.post(kind, payload, actor=principal)
        except BlackboardError as e:
            raise as_a2a(e) from None
        self.daemon.metrics.posted.labels(goal.kind).inc()

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Message | Task:
        await self._post_goal(params, context)
        result: Message | Task = await super().on_message_send(params, context)
        return result

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        await self._post_goal(params, context)
        async for event in super().on_message_send_stream(params, context):
            yield event

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        task = await self.tasks.get(params.id, context)  # the caller's own tasks only
        if task is None:
            raise TaskNotFoundError
        if task.status.state in TERMINAL or task.status.state == TaskState.TASK_STATE_REJECTED:
            raise TaskNotCancelableError(message=f"task {params.id} has finished")
        goal = str(dict(task.metadata.items()).get("goal", ""))
        try:
            await self.daemon.board.cancel(goal, "cancelled over A2A", actor=str(context.state["principal"]))
        except BlackboardError as e:
            raise as_a2a(e) from None
        cancelled: Task | None = await super().on_cancel_task(params, context)
        return cancelled


def _rpc_error(status: int, message: str) -> JSONResponse:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    return JSONResponse(body, status_code=status)


def routes(daemon: Daemon) -> list[BaseRoute]:
    """The card and the JSON-RPC endpoint, for `http.create_app`."""
    handler = Handler(daemon, BoardExecutor(daemon))
    dispatcher = JsonRpcDispatcher(request_handler=handler, context_builder=Calls())

    async def agent_card(request: Request) -> Response:
        return JSONResponse(agent_card_to_dict(card(daemon, str(request.base_url))))

    async def endpoint(request: Request) -> Response:
        # As for /v1: a bounded body, and JSON only (a cross-site form can't send that without a
        # CORS preflight, which the daemon never answers).
        if len(await request.body()) > MAX_BODY:
            return _rpc_error(413, f"body over {MAX_BODY} bytes")
        if (ctype := media_type(request)) != "application/json":
            return _rpc_error(415, f"expected content-type application/json, got {ctype or 'none'!r}")
        return await dispatcher.handle_requests(request)

    return [
        Route(AGENT_CARD_WELL_KNOWN_PATH, agent_card, methods=["GET"], include_in_schema=False),
        Route(PATH, endpoint, methods=["POST"], include_in_schema=False),
    ]
