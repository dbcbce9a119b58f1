"""The `remote` agent: board items delegated to a remote A2A agent, whatever it is built with.

    name: translator
    consumes: [doc.translate]
    concurrency: 4
    timeout: 600                 # seconds for the whole remote task (the handler's timeout)
    remote:
      url: http://translator.internal:9999     # where its card is: <url>/.well-known/agent-card.json
      headers: {Authorization: "Bearer ${TRANSLATOR_TOKEN}"}   # ${VAR}: from the environment
      skill: doc.translate       # optional: sent as the message's metadata.skill

Each claimed item is sent as one message (a data part holding the item's payload; the item's
goal id is the A2A context id) and the remote task is followed — over SSE when the card says it
streams, else by polling `GetTask` every `poll` seconds — until it ends:

- completed: the remote artifact is the item's result (one part: its value, a data part's JSON
  or a text part's string; several: the list). A remote that answers with a message, not a
  task, gives its parts the same way.
- failed, rejected or canceled by the remote: the attempt fails with the remote's status
  message (retried with backoff up to `max_attempts`, then dead-lettered, as any handler).
- input-required / auth-required: waited through (a human may decide out of band — a
  blackboard behind A2A does exactly that for its approval gates); `timeout` bounds the wait.

The runner renews the item's lease while this runs, as for any handler. When the item is
cancelled (or its lease is lost, or the handler times out, or the daemon gives the item back on
shutdown) the runner cancels the handler — it learns of a cancel from the heartbeat's reply,
within a third of the lease — and the handler then sends the remote `CancelTask` before it
returns.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
import httpx
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, ClientFactory
from a2a.helpers import get_data_parts, get_message_text, new_data_part
from a2a.types import (
    AgentCard,
    Artifact,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.constants import TransportProtocol
from a2a.utils.errors import A2AError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from blackboard.a2a import plain
from blackboard.agents import Agent, AgentSpec, spec_from, validated
from blackboard.context import Context
from blackboard.errors import BlackboardError, InvalidInput
from blackboard.models import Item

ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
CANCEL_TIMEOUT = 5.0  # seconds the remote CancelTask gets once the item's handler is cancelled
ENDED = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}


class RemoteError(BlackboardError):
    """The remote agent failed the task, or could not be reached: the attempt fails."""


class RemoteSpec(BaseModel):
    """The `remote:` block of a remote agent's YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    skill: str | None = None
    card_path: str | None = None  # the card's path under `url`, if not the well-known one
    poll: float = Field(default=1.0, gt=0, le=300)  # GetTask interval for a remote that can't stream
    connect_timeout: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        def env(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                raise ValueError(f"${{{m.group(1)}}} is not set in the environment")
            return os.environ[m.group(1)]

        return {name: ENV_RE.sub(env, value) for name, value in v.items()}


def load(data: dict[str, Any], path: Path) -> RemoteAgent:
    """The agent a YAML plugin with a `remote:` block declares (`InvalidInput` naming the field)."""
    fields = dict(data)
    remote = fields.pop("remote")
    if not isinstance(remote, dict):
        raise InvalidInput(f"{path.name}.remote", "expected a mapping: {url, headers, skill, ...}")
    if fields.get("produces"):
        raise InvalidInput(
            f"{path.name}.produces", "a remote agent posts no children; its result is the artifact"
        )
    return RemoteAgent(spec_from(fields, path.name), validated(RemoteSpec, remote, f"{path.name}.remote"))


def value_of(part: Part) -> Any:
    """A part as JSON: a data part's value, a text part's string, a file as a small object."""
    if part.HasField("data"):
        return plain(get_data_parts([part])[0])
    if part.HasField("text"):
        return part.text
    if part.HasField("url"):
        return {"url": part.url, "media_type": part.media_type, "filename": part.filename}
    return {
        "raw": base64.b64encode(part.raw).decode(),
        "media_type": part.media_type,
        "filename": part.filename,
    }


def result_of(parts: list[Part]) -> Any:
    values = [value_of(p) for p in parts]
    return values[0] if len(values) == 1 else values or None


class _Progress:
    """What the remote has said about its task so far."""

    def __init__(self) -> None:
        self.task_id: str | None = None
        self.state: int = TaskState.TASK_STATE_UNSPECIFIED
        self.note = ""
        self.artifacts: dict[str, Artifact] = {}
        self.answer: Message | None = None  # a remote that answers with a message, not a task

    @property
    def ended(self) -> bool:
        return self.answer is not None or self.state in ENDED

    def task(self, task: Task) -> None:
        self.task_id, self.state = task.id, task.status.state
        self.note = get_message_text(task.status.message) or self.note
        for a in task.artifacts:
            self.artifacts[a.artifact_id] = a

    def update(self, r: StreamResponse) -> None:
        if r.HasField("task"):
            self.task(r.task)
        elif r.HasField("message"):
            self.answer = r.message
        elif r.HasField("status_update"):
            self.task_id, self.state = r.status_update.task_id, r.status_update.status.state
            self.note = get_message_text(r.status_update.status.message) or self.note
        elif r.HasField("artifact_update"):
            a, old = r.artifact_update.artifact, self.artifacts.get(r.artifact_update.artifact.artifact_id)
            if r.artifact_update.append and old is not None:
                old.parts.extend(a.parts)
            else:
                self.artifacts[a.artifact_id] = a

    def result(self) -> Any:
        if self.answer is not None:
            return result_of(list(self.answer.parts))
        return result_of([p for a in self.artifacts.values() for p in a.parts])


async def _cancel(client: Client, task_id: str, ctx: Context) -> None:
    """Cancel the remote task, whatever cancelled us (shielded, bounded, best effort)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT), suppress(Exception):
        await client.cancel_task(CancelTaskRequest(id=task_id))
        ctx.log.info("remote task cancelled", task=task_id)


class RemoteAgent(Agent):
    """Consumes board kinds; each item is one task of the remote A2A agent at `remote.url`."""

    def __init__(self, spec: AgentSpec, remote: RemoteSpec) -> None:
        self._spec = spec
        self.remote = remote
        self._card: AgentCard | None = None  # resolved on first use, so a remote down at start is no error

    def __repr__(self) -> str:
        return f"<remote agent {self.spec.name} -> {self.remote.url}>"

    async def handle(self, item: Item, ctx: Context) -> Any:
        timeout = httpx.Timeout(self.remote.connect_timeout, read=None)  # streams may idle for long
        async with httpx.AsyncClient(headers=self.remote.headers, timeout=timeout) as http:
            try:
                card = self._card or await self._resolve(http)
                config = ClientConfig(
                    httpx_client=http,
                    streaming=card.capabilities.streaming,
                    polling=not card.capabilities.streaming,
                    supported_protocol_bindings=[TransportProtocol.JSONRPC, TransportProtocol.HTTP_JSON],
                )
                client = ClientFactory(config).create(card)
            except (A2AError, httpx.HTTPError, ValueError) as e:
                self._card = None
                raise RemoteError(f"remote agent {self.remote.url}: {e}") from None
            progress = _Progress()
            try:
                await self._run(client, self._message(item), progress)
            except (A2AError, httpx.HTTPError) as e:
                raise RemoteError(f"remote agent {self.remote.url}: {type(e).__name__}: {e}") from None
            finally:
                if progress.task_id and not progress.ended:  # cancelled, timed out, or broke off
                    await _cancel(client, progress.task_id, ctx)
        if progress.answer is None and progress.state != TaskState.TASK_STATE_COMPLETED:
            state = TaskState.Name(progress.state).removeprefix("TASK_STATE_").lower()
            why = progress.note or "no message"
            raise RemoteError(f"remote agent {self.remote.url}: task {progress.task_id} {state}: {why}")
        return progress.result()

    async def _resolve(self, http: httpx.AsyncClient) -> AgentCard:
        """The remote's card: under `url` (or `card_path`), else at the root of its host."""
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.remote.url))
        bases = [self.remote.url] + (
            [origin] if origin != self.remote.url and not self.remote.card_path else []
        )
        error: Exception | None = None
        for base in bases:
            try:
                resolver = A2ACardResolver(http, base)
                self._card = await resolver.get_agent_card(relative_card_path=self.remote.card_path)
                return self._card
            except A2AClientError as e:
                error = e
        raise RemoteError(f"no agent card at {self.remote.url}: {error}")

    def _message(self, item: Item) -> SendMessageRequest:
        meta: dict[str, Any] = {"item": item.id, "kind": item.kind}
        if self.remote.skill:
            meta["skill"] = self.remote.skill
        message = Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            context_id=item.root,
            parts=[new_data_part(item.payload)],
            metadata=meta,
        )
        return SendMessageRequest(message=message)

    async def _run(self, client: Client, request: SendMessageRequest, progress: _Progress) -> None:
        stream = cast("AsyncGenerator[StreamResponse, None]", client.send_message(request))  # it is one
        async with aclosing(stream) as responses:
            async for response in responses:
                progress.update(response)
                if progress.ended:
                    return
        while not progress.ended:  # a remote that can't stream, or a stream that broke off
            if progress.task_id is None:
                raise RemoteError(
                    f"remote agent {self.remote.url} answered with neither a task nor a message"
                )
            await anyio.sleep(self.remote.poll)
            progress.task(await client.get_task(GetTaskRequest(id=progress.task_id)))
