"""What an LLM agent's YAML file declares, validated when the plugin loads.

name: researcher
consumes: [research.question]
model: offline/researcher          # any litellm model string
fallbacks: [offline/backup]         # tried in order when the model fails (litellm Router)
system: You research one question.
prompt: "Question: {{ payload.question }}"
output:
  schema: {type: object, properties: {finding: {type: string}}, required: [finding]}
posts:                              # children to post from the output
  - kind: research.claim
    each: "{{ output.claims }}"     # one child per element (as `each`)
    payload: {text: "{{ each }}"}
tools: [tools.py:search, calc.add]  # the only tools the model may call (Python, or SERVER.TOOL)
mcp_servers:                        # MCP servers whose tools `tools` may name (see llm.mcp_tools)
  calc: {command: python, args: [calc_server.py]}
temperature: 0.2
max_tokens: 800
timeout: 120                        # seconds per model call
retries: 2                          # retries per call, inside one attempt
concurrency: 4
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blackboard.agents import AgentSpec, spec_from, validated
from blackboard.errors import InvalidInput


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class OutputSpec(_Strict):
    """The answer's shape: an inline JSON schema, or a pydantic model from a plugin module."""

    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    model: str | None = None  # "models.py:Finding" or "package.module:Finding"

    @model_validator(mode="after")
    def _one(self) -> OutputSpec:
        if (self.json_schema is None) == (self.model is None):
            raise ValueError("expected exactly one of 'schema' (JSON schema) or 'model' (file.py:Model)")
        return self


class PostRule(_Strict):
    """Children to post from the output: one, or one per element of `each`."""

    kind: str
    each: str | None = None  # "{{ expression }}" giving a list
    payload: Any = None  # data template; default: the element (with `each`) or the output
    after: Literal["earlier"] | None = None  # wait for every item posted by the rules above
    when: str | None = None  # "{{ expression }}": post only when true
    priority: int = Field(default=0, ge=0, le=1000)


class QuerySpec(_Strict):
    """A board query whose items a template sees as `context.<name>`."""

    kind: str | None = None
    status: str | None = None
    root: Literal["same"] | None = None  # "same": only this item's goal
    limit: int = Field(default=20, ge=1, le=500)


SERVER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*(_[A-Za-z0-9-]+)*$")  # no '__': it joins server and tool
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${VAR}, read from the daemon's environment


class McpServerSpec(_Strict):
    """One MCP server: a command run over stdio, or a streamable HTTP URL.

    `${VAR}` in command, args, env, url and headers is the daemon's environment variable VAR,
    read when the server is connected (a missing one is an error when the file loads)."""

    command: str | None = Field(default=None, min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)  # over a minimal inherited environment
    cwd: str | None = None  # default: the agent's folder
    url: str | None = Field(default=None, pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=60.0, gt=0)  # seconds per tool call
    connect_timeout: float = Field(default=30.0, gt=0)  # seconds to start, initialise and list tools

    @model_validator(mode="after")
    def _one(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("expected exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        if self.command is None and (self.args or self.env or self.cwd):
            raise ValueError("'args', 'env' and 'cwd' are for a 'command' server, not a 'url' one")
        if self.url is None and self.headers:
            raise ValueError("'headers' are for a 'url' server, not a 'command' one")
        values = {"command": self.command or "", "url": self.url or ""}
        values |= {f"args[{i}]": a for i, a in enumerate(self.args)}
        values |= {f"env.{k}": v for k, v in self.env.items()} | {
            f"headers.{k}": v for k, v in self.headers.items()
        }
        for where, value in values.items():
            for var in ENV_REF.findall(value):
                if var not in os.environ:
                    raise ValueError(f"{where}: environment variable {var} is not set")
        return self


class LLMSpec(_Strict):
    name: str
    consumes: tuple[str, ...]
    produces: tuple[str, ...] = ()
    description: str = ""
    concurrency: int = 1
    lease: float = 60.0
    batch: int = 1
    model: str = Field(min_length=1)
    fallbacks: tuple[str, ...] = ()
    system: str = ""
    prompt: str = Field(min_length=1)
    output: OutputSpec | None = None
    posts: tuple[PostRule, ...] = ()
    result: Any = None  # data template of the result (e.g. "{{ output.answer }}"); default: the output
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    timeout: float = Field(default=120.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    tools: tuple[str, ...] = ()  # "file.py:function", "module:function", or "SERVER.TOOL" (a glob)
    mcp_servers: dict[str, McpServerSpec] = Field(default_factory=dict)
    max_tool_rounds: int = Field(default=4, ge=1, le=50)
    context: dict[str, QuerySpec] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)  # more litellm parameters (api_base, ...)

    @field_validator("mcp_servers")
    @classmethod
    def _server_names(cls, v: dict[str, McpServerSpec]) -> dict[str, McpServerSpec]:
        for name in v:
            if not SERVER_NAME.match(name):
                raise ValueError(
                    f"server name {name!r}: expected letters, digits, '-' and single '_' "
                    "(never '__'), starting with a letter"
                )
        return v

    @model_validator(mode="after")
    def _tool_entries(self) -> LLMSpec:
        for i, entry in enumerate(self.tools):
            if ":" in entry:
                continue  # a Python callable, resolved when the agent is built
            server, dot, pattern = entry.partition(".")
            if not dot or not pattern or server not in self.mcp_servers:
                known = ", ".join(sorted(self.mcp_servers)) or "none"
                raise InvalidInput(
                    f"tools[{i}]",
                    f"expected 'file.py:function', 'module:function' or 'SERVER.TOOL' with SERVER one of "
                    f"mcp_servers ({known}); got {entry!r}",
                )
        return self

    def mcp_allowed(self, server: str, tool: str) -> bool:
        """Whether the agent's `tools` lists MCP tool `tool` of `server` (by name or glob)."""
        return any(
            e.partition(".")[0] == server and fnmatch.fnmatchcase(tool, e.partition(".")[2])
            for e in self.tools
            if ":" not in e
        )

    def agent_spec(self, where: str) -> AgentSpec:
        produces = self.produces or tuple(dict.fromkeys(r.kind for r in self.posts))
        return spec_from(
            {
                "name": self.name,
                "consumes": self.consumes,
                "produces": produces,
                "concurrency": self.concurrency,
                "lease": self.lease,
                "batch": self.batch,
                "description": self.description or f"LLM agent on {self.model}",
            },
            where,
        )


def parse(data: dict[str, Any], path: Path) -> LLMSpec:
    """A LLMSpec, or `InvalidInput` naming the file and the field."""
    return validated(LLMSpec, data, path.name)
