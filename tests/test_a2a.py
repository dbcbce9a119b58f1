"""A2A both ways, with the official SDK on the other side.

Inbound: the SDK's client against a daemon running in-process (its card, JSON-RPC and SSE on a
free port): a message becomes a goal, the task follows the goal's tree (submitted → working →
input-required while an approval waits → completed / failed / canceled), the policy applies to
the token's principal, bad input is a clear error that writes nothing.

Outbound: a `remote` agent (loaded from YAML like any plugin) against a small A2A server built
with the SDK inside the test (uvicorn on a loopback port): the remote artifact is the item's
result, a remote failure fails the attempt, and cancelling the item cancels the remote task.

Both backends (`board_url`); conditions are waited for, never slept for.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from a2a.client import A2AClientError, Client, ClientConfig, ClientFactory
from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.errors import (
    InvalidParamsError,
    InvalidRequestError,
    TaskNotCancelableError,
    TaskNotFoundError,
)
from starlette.applications import Starlette

from blackboard import agent, approvals, plugins
from blackboard.a2a.remote import RemoteAgent
from blackboard.backoff import Backoff
from blackboard.context import Context
from blackboard.daemon import Daemon
from blackboard.http import _Server
from blackboard.models import Item, Status
from tests.test_http import TOKEN, board_state, client_for, planner, running, stepper, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

S = TaskState
ECHO_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
GATES: dict[str, anyio.Event] = {}  # payload "gate" -> opened by the test
CANCELLED: set[str] = set()  # gates whose handler was cancelled


# -- agents on the daemon --------------------------------------------------------------------


@agent(name="echo", consumes=["a2a.echo"])
async def echo(item: Item, ctx: Context) -> dict[str, Any]:
    """Echo the payload."""
    return {"echo": item.payload}


@agent(name="gated", consumes=["a2a.gated"], lease=0.6)
async def gated(item: Item, ctx: Context) -> dict[str, str]:
    """Wait until the test opens the gate."""
    gate = item.payload["gate"]
    try:
        await GATES[gate].wait()
    except anyio.get_cancelled_exc_class():
        CANCELLED.add(gate)
        raise
    return {"opened": gate}


def gate(name: str) -> str:
    GATES[name] = anyio.Event()
    return name


# -- the SDK's client ------------------------------------------------------------------------


@asynccontextmanager
async def a2a_client(
    daemon: Daemon, token: str | None = None, *, streaming: bool = False
) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        factory = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming))
        yield await factory.create_from_url(daemon.http_url or "")


def message(
    payload: Any = None, skill: str | None = None, *, parts: list[Part] | None = None
) -> SendMessageRequest:
    msg = Message(
        role=Role.ROLE_USER,
        message_id=str(uuid.uuid4()),
        parts=parts if parts is not None else [new_data_part(payload)],
        metadata={"skill": skill} if skill else None,
    )
    return SendMessageRequest(message=msg)


def state_of(r: StreamResponse) -> int | None:
    if r.HasField("task"):
        return r.task.status.state
    if r.HasField("status_update"):
        return r.status_update.status.state
    return None


def runs(states: list[int]) -> list[int]:
    """The states with repeats folded (working may be reported more than once, with progress)."""
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


async def send(client: Client, request: SendMessageRequest) -> Task:
    """A send from a non-streaming client: the task as the one reply gives it."""
    [reply] = [r async for r in client.send_message(request)]
    return reply.task


# -- inbound ---------------------------------------------------------------------------------


async def test_the_card_lists_the_goal_kinds_and_a_message_becomes_a_goal(board_url: str) -> None:
    async with running(board_url, echo, gated, planner, stepper) as d:
        await d.board.register_kind("a2a.echo", ECHO_SCHEMA)
        async with httpx.AsyncClient(base_url=d.http_url or "") as http:
            card = (await http.get("/.well-known/agent-card.json")).json()
        # planner's plan.step is produced here, so it is no skill; the others are entry kinds
        assert [s["id"] for s in card["skills"]] == ["a2a.echo", "a2a.gated", "plan.goal"]
        skill = card["skills"][0]
        assert "echo" in skill["tags"] and '"required":["text"]' in skill["description"]
        assert card["supportedInterfaces"][0]["url"] == f"{d.http_url}/a2a"
        assert card["capabilities"]["streaming"] is True and "securitySchemes" not in card  # open daemon

        async with a2a_client(d) as client:
            task = await send(client, message({"text": "hi", "n": 3}, "a2a.echo"))
            assert task.status.state == S.TASK_STATE_COMPLETED
            goal = await d.board.get(task.metadata["goal"])
            assert (goal.kind, goal.status, goal.created_by) == ("a2a.echo", Status.DONE, "http")
            assert goal.payload == {"text": "hi", "n": 3}  # ints stay ints through protobuf's doubles
            [artifact] = task.artifacts
            assert get_data_parts(artifact.parts) == [{"echo": {"text": "hi", "n": 3}}] == [goal.result]
            assert artifact.metadata["item"] == goal.id

            # a tree: the answer is the item that finished last (a step), as `post --wait` says
            task = await send(client, message({}, "plan.goal"))
            assert task.status.state == S.TASK_STATE_COMPLETED
            tree = await d.board.tree(task.metadata["goal"])
            assert len(tree.walk()) == 4 and all(i.status is Status.DONE for i in tree.walk())
            [value] = get_data_parts(task.artifacts[0].parts)
            assert value in (0, 10, 20) and task.artifacts[0].metadata["kind"] == "plan.step"


async def test_streaming_follows_the_goal_in_order(board_url: str) -> None:
    async with running(board_url, echo, gated) as d, a2a_client(d, streaming=True) as client:
        g, states, artifacts, task_id = gate("stream"), [], [], ""
        async for r in client.send_message(message({"gate": g}, "a2a.gated")):
            if r.HasField("task"):
                task_id = r.task.id
            if (s := state_of(r)) is not None:
                states.append(s)
                if s == S.TASK_STATE_WORKING:
                    GATES[g].set()  # claimed: let it finish
            if r.HasField("artifact_update"):
                artifacts.append((len(states), get_data_parts(r.artifact_update.artifact.parts)))
        assert runs(states) == [S.TASK_STATE_SUBMITTED, S.TASK_STATE_WORKING, S.TASK_STATE_COMPLETED]
        assert artifacts == [(len(states) - 1, [{"opened": g}])]  # the artifact, then completed
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state == S.TASK_STATE_COMPLETED and got.artifacts[0].parts


APPROVAL_RULES = """\
roles:
  caller: {post: ["a2a.*"], read: ["a2a.*"], cancel: ["a2a.*"], approve: ["a2a.*"]}
  reader: {read: ["a2a.*"]}
  poster: {post: ["a2a.*"]}
  worker: {claim: ["a2a.*"]}
principals:
  http: [caller]
  alice: [caller]
  bob: [reader]
  carol: [poster]
  echo: [worker]
  gated: [worker]
approvals:
  - {kind: a2a.echo, when: "payload.amount > 500"}
"""


async def test_an_approval_gate_shows_input_required_until_a_human_decides(
    board_url: str, tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(APPROVAL_RULES)
    async with running(board_url, echo, policies=[tmp_path]) as d, client_for(d) as http:
        async with a2a_client(d, streaming=True) as client:
            states: list[int] = []
            async for r in client.send_message(message({"text": "refund", "amount": 900}, "a2a.echo")):
                if (s := state_of(r)) is not None:
                    states.append(s)
                if s == S.TASK_STATE_INPUT_REQUIRED:
                    assert "approval" in get_message_text(r.status_update.status.message)
                    [(item, _)] = await approvals.pending(d.board)
                    assert (
                        await http.post(f"/v1/items/{item.id}/approve", json={"note": "ok"})
                    ).status_code == 200
        assert runs(states) == [
            S.TASK_STATE_SUBMITTED,
            S.TASK_STATE_INPUT_REQUIRED,
            S.TASK_STATE_WORKING,
            S.TASK_STATE_COMPLETED,
        ]
        # without streaming the reply comes at input-required; the task goes on after approval
        async with a2a_client(d) as client:
            task = await send(client, message({"text": "again", "amount": 700}, "a2a.echo"))
            assert task.status.state == S.TASK_STATE_INPUT_REQUIRED
            await approvals.approve(d.board, task.metadata["goal"], actor="alice")

            async def completed() -> Task | None:
                got = await client.get_task(GetTaskRequest(id=task.id))
                return got if got.status.state == S.TASK_STATE_COMPLETED else None

            done = await until(completed)
            assert get_data_parts(done.artifacts[0].parts) == [{"echo": {"text": "again", "amount": 700}}]


async def test_cancel_cancels_the_goal_and_the_task(board_url: str) -> None:
    async with running(board_url, gated) as d, a2a_client(d, streaming=True) as client:
        g = gate("cancel")
        states: list[int] = []
        async with a2a_client(d) as other:
            async for r in client.send_message(message({"gate": g})):  # its only skill: no metadata
                if (s := state_of(r)) is not None:
                    states.append(s)
                if s == S.TASK_STATE_WORKING and len(states) == 2:
                    task_id = r.status_update.task_id
                    cancelled = await other.cancel_task(CancelTaskRequest(id=task_id))
                    assert cancelled.status.state == S.TASK_STATE_CANCELED
        assert runs(states)[-1] == S.TASK_STATE_CANCELED
        goal_id = (await client.get_task(GetTaskRequest(id=task_id))).metadata["goal"]
        goal = await d.board.get(goal_id)
        assert goal.status is Status.CANCELLED and goal.reason == "cancelled over A2A"

        async def stopped() -> bool:
            return g in CANCELLED

        await until(stopped)  # the handler working on it was stopped
        with pytest.raises(TaskNotCancelableError, match="finished"):  # not cancelable again
            await client.cancel_task(CancelTaskRequest(id=task_id))

        # a goal cancelled on the board (CLI, /v1, web) cancels its task the same way
        g2 = gate("board-cancel")
        states = []
        async for r in client.send_message(message({"gate": g2})):
            if (s := state_of(r)) is not None:
                states.append(s)
            if s == S.TASK_STATE_WORKING and len(states) == 2:
                goal_id = str(
                    (await client.get_task(GetTaskRequest(id=r.status_update.task_id))).metadata["goal"]
                )
                await d.board.cancel(goal_id, "operator said stop", actor="cli")
        assert runs(states)[-1] == S.TASK_STATE_CANCELED


async def test_the_policy_decides_for_the_tokens_principal(board_url: str, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(APPROVAL_RULES)
    tokens = {"alice": "t-alice", "bob": "t-bob", "carol": "t-carol"}
    async with running(board_url, echo, policies=[tmp_path], api_token=TOKEN, api_principals=tokens) as d:
        async with httpx.AsyncClient(base_url=d.http_url or "") as anon:
            card = (await anon.get("/.well-known/agent-card.json")).json()  # the card is public
            assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
            r = await anon.post("/a2a", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {}})
            assert r.status_code == 401  # the endpoint is not
        before = await board_state(d)
        async with a2a_client(d, "t-bob") as bob:  # may read, may not post
            with pytest.raises(InvalidRequestError, match=r"PolicyDenied.*'bob' to post 'a2a\.echo'") as e:
                await send(bob, message({"text": "x"}))
            assert e.value.data == {"type": "PolicyDenied"}
        async with a2a_client(d, "t-carol") as carol:  # may post, may not read what it posted
            with pytest.raises(InvalidRequestError, match=r"'carol' to read 'a2a\.echo'"):
                await send(carol, message({"text": "x"}))
        stats, items, _, posted = await board_state(d)
        assert (stats, items, posted) == (before[0], before[1], before[3])  # nothing posted

        async with a2a_client(d, "t-alice") as alice, a2a_client(d, "t-bob") as bob:
            task = await send(alice, message({"text": "mine", "amount": 1}))  # under the gate's limit
            assert task.status.state == S.TASK_STATE_COMPLETED
            assert (await d.board.get(task.metadata["goal"])).created_by == "alice"
            with pytest.raises(TaskNotFoundError):  # each principal sees its own tasks only
                await bob.get_task(GetTaskRequest(id=task.id))
            with pytest.raises(TaskNotFoundError):
                await bob.cancel_task(CancelTaskRequest(id=task.id))
        async with httpx.AsyncClient() as http:
            factory = ClientFactory(ClientConfig(httpx_client=http))
            nobody = await factory.create_from_url(d.http_url or "")
            with pytest.raises(A2AClientError, match="401"):
                await send(nobody, message({"text": "x"}))


async def test_bad_input_is_a_clear_error_and_writes_nothing(board_url: str) -> None:
    async with running(board_url, echo, gated) as d:
        await d.board.register_kind("a2a.echo", ECHO_SCHEMA)
        before = await board_state(d)
        async with a2a_client(d) as client:
            cases: list[tuple[SendMessageRequest, str, str]] = [
                (message({"text": "x"}), "metadata.skill", "skills: a2a.echo, a2a.gated"),
                (message({"text": "x"}, "a2a.nope"), "metadata.skill", "'a2a.nope' is not a skill"),
                (message({"txt": "x"}, "a2a.echo"), "payload", "'text' is a required property"),
                (message({"text": 5}, "a2a.echo"), "payload.text", "is not of type 'string'"),
                (
                    message(parts=[new_data_part({}), new_data_part({})], skill="a2a.echo"),
                    "message.parts",
                    "one",
                ),
                (message(parts=[Part(url="http://x/y.png")], skill="a2a.echo"), "message.parts[0]", "files"),
            ]
            for request, field, says in cases:
                with pytest.raises(InvalidParamsError, match=says) as e:
                    await send(client, request)
                assert e.value.data is not None and e.value.data["field"] == field, (field, e.value.data)
        async with a2a_client(d, streaming=True) as client:
            with pytest.raises(InvalidParamsError, match=r"metadata\.skill"):  # streaming: the same error
                async for _ in client.send_message(message({"text": "x"})):
                    pass
        assert await board_state(d) == before
        async with httpx.AsyncClient(base_url=d.http_url or "") as http:
            form = await http.post("/a2a", content=b"{}", headers={"content-type": "text/plain"})
            assert form.status_code == 415 and "application/json" in form.text
        async with a2a_client(d) as client:  # text parts make {"text": ...}
            text = message(parts=[new_text_part("hello"), new_text_part("world")], skill="a2a.echo")
            task = await send(client, text)
            assert get_data_parts(task.artifacts[0].parts) == [{"echo": {"text": "hello\nworld"}}]


# -- outbound: a remote agent against an A2A server built with the SDK -------------------------


@pytest.fixture(autouse=True)
def _remote_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A2A_TEST_TOKEN", "t0k")  # the remote agent's YAML names ${A2A_TEST_TOKEN}


class RemoteExecutor(AgentExecutor):
    """The remote side: doubles `q`, fails on `fail`, holds on `hold` until cancelled or released."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, dict[str, Any]]] = []
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.cancelled = anyio.Event()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None and context.task_id and context.context_id
        task = Task(
            id=context.task_id,
            context_id=context.context_id,
            status=TaskStatus(state=S.TASK_STATE_SUBMITTED),
            history=[context.message],
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        [payload] = get_data_parts(context.message.parts)
        headers = context.call_context.state.get("headers", {})
        meta = dict(context.message.metadata.items()) | {
            "token": headers.get("x-token"),
            "ctx": context.context_id,
        }
        self.seen.append((payload, meta))
        await updater.start_work()
        if payload.get("fail"):
            await updater.failed(updater.new_agent_message([new_text_part("out of stock")]))
            return
        if payload.get("hold"):
            self.started.set()
            await self.release.wait()
        await updater.add_artifact([new_data_part({"answer": payload["q"] * 2})], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        self.cancelled.set()
        assert context.task_id and context.context_id
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


@asynccontextmanager
async def remote_server(executor: RemoteExecutor, *, streaming: bool = False) -> AsyncIterator[str]:
    """The SDK's Starlette app under uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    card = AgentCard(
        name="doubler",
        description="doubles q",
        version="1",
        supported_interfaces=[
            AgentInterface(url=f"{url}/rpc", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["application/json"],
        default_output_modes=["application/json"],
        skills=[AgentSkill(id="double", name="double", description="doubles q", tags=["math"])],
    )
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/rpc")])
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    sock.listen(config.backlog)
    server = _Server(config)
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        try:
            yield url
        finally:
            executor.release.set()
            with anyio.move_on_after(5):
                await handler.aclose()
            server.should_exit = server.force_exit = True
            with anyio.move_on_after(5):
                await stopped.wait()
            tg.cancel_scope.cancel()
    sock.close()


def remote_agent(tmp_path: Path, url: str, **fields: Any) -> RemoteAgent:
    """A remote agent loaded from a YAML plugin file, as the daemon loads it."""
    lines = [
        "name: doubler",
        "consumes: [calc.double]",
        f"lease: {fields.pop('lease', 30)}",
        "remote:",
        f"  url: {url}",
        "  headers: {X-Token: '${A2A_TEST_TOKEN}'}",
        "  skill: double",
        "  poll: 0.05",
    ]
    (tmp_path / "doubler.yaml").write_text("\n".join(lines) + "\n")
    plugin = plugins.load_file(tmp_path / "doubler.yaml")
    assert plugin.ok, plugin.error
    [found] = plugin.agents
    assert isinstance(found, RemoteAgent)
    return found


@pytest.mark.parametrize("streaming", [True, False], ids=["sse", "polling"])
async def test_a_remote_agent_writes_the_remote_artifact_back(
    board_url: str, tmp_path: Path, streaming: bool
) -> None:
    executor = RemoteExecutor()
    async with remote_server(executor, streaming=streaming) as url:
        remote_agent(tmp_path, url)  # the daemon loads it from its agents folder, as any plugin
        async with running(board_url, agents=[tmp_path]) as d:
            assert isinstance(d.slots["doubler"].runner.agent, RemoteAgent)
            item = await d.board.post("calc.double", {"q": "ab"})
            done = await d.board.wait(item.id, timeout=20)
            assert done.status is Status.DONE and done.result == {"answer": "abab"}, done.error
            [(payload, meta)] = executor.seen
            assert payload == {"q": "ab"}
            assert meta == {"item": item.id, "kind": "calc.double", "skill": "double"} | {
                "token": "t0k",  # the header, from ${A2A_TEST_TOKEN}
                "ctx": item.root,  # the goal is the A2A context
            }


async def test_a_remote_failure_fails_the_attempt(board_url: str, tmp_path: Path) -> None:
    executor = RemoteExecutor()
    async with remote_server(executor) as url:
        agent_ = remote_agent(tmp_path, f"{url}/", lease=30)
        async with running(board_url, agent_) as d:
            d.board.backoff = Backoff(base=0.05, jitter=0)
            item = await d.board.post("calc.double", {"q": "x", "fail": True}, max_attempts=2)
            dead = await d.board.wait(item.id, timeout=20)
            assert dead.status is Status.DEAD and dead.attempts == 2  # retried per max_attempts
            assert dead.error is not None and "failed: out of stock" in dead.error and url in dead.error
            assert len(executor.seen) == 2


async def test_cancelling_the_item_cancels_the_remote_task(board_url: str, tmp_path: Path) -> None:
    executor = RemoteExecutor()
    async with (
        remote_server(executor) as url,
        running(board_url, remote_agent(tmp_path, url, lease=0.6)) as d,
    ):
        item = await d.board.post("calc.double", {"q": "x", "hold": True})
        with anyio.fail_after(10):
            await executor.started.wait()
        claimed = await d.board.get(item.id)
        assert claimed.status is Status.CLAIMED and claimed.lease_deadline is not None

        async def renewed() -> bool:  # the runner heartbeats the lease while the remote works
            now = await d.board.get(item.id)
            assert now.status is Status.CLAIMED and now.attempts == 1
            return (now.lease_deadline or 0) > (claimed.lease_deadline or 0) + 600

        await until(renewed)
        await d.board.cancel(item.id, "no longer needed")
        with anyio.fail_after(10):
            await executor.cancelled.wait()  # the heartbeat saw the cancel; the handler cancelled remotely
        assert (await d.board.get(item.id)).status is Status.CANCELLED
