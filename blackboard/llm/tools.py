"""Tools an LLM agent may call: plain Python callables from plugin modules.

Each is offered to the model with a JSON schema built from its signature (by pydantic), and its
arguments are validated against that schema before it runs. The allow-list is the agent's
`tools`; a model asking for anything else gets a refusal as the tool's result, never the call.
MCP servers' tools are offered and called the same way (see `blackboard.llm.mcp_tools`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from blackboard.errors import InvalidInput


class Tool:
    """One callable, its name, and the parameters model its arguments are checked against."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = inspect.getdoc(fn) or self.name
        fields: dict[str, Any] = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise InvalidInput("tools", f"tool {self.name!r}: *args/**kwargs cannot be described")
            annotation = Any if p.annotation is inspect.Parameter.empty else p.annotation
            fields[p.name] = (annotation, ... if p.default is inspect.Parameter.empty else p.default)
        self.params: type[BaseModel] = create_model(
            f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style tool description litellm passes to any provider."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.params.model_json_schema(),
            },
        }

    async def call(self, arguments: str) -> str:
        """Run with the model's JSON arguments; errors come back as text for the model to read."""
        return (await self.invoke(arguments))[0]

    async def invoke(self, arguments: str) -> tuple[str, str | None]:
        """(what the model reads, the error or None): run with the model's JSON arguments."""
        try:
            raw = json.loads(arguments or "{}")
            args = self.params.model_validate(raw)
        except (ValueError, ValidationError) as e:
            text = f"error: invalid arguments for {self.name}: {e}"
            return text, text[len("error: ") :][:300]
        kwargs = {k: getattr(args, k) for k in type(args).model_fields}
        try:
            if inspect.iscoroutinefunction(self.fn):
                value = await self.fn(**kwargs)
            else:
                value = await anyio.to_thread.run_sync(lambda: self.fn(**kwargs))
        except Exception as e:  # a failing tool is the model's problem to read, not a crash
            text = f"error: {self.name} raised {type(e).__name__}: {e}"
            return text, text[len("error: ") :][:300]
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        return text, None


def args_hash(arguments: str) -> str:
    """A short digest of a tool call's arguments: canonical JSON when they parse, else the text."""
    try:
        canonical = json.dumps(json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = arguments
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
