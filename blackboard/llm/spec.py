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
tools: [tools.py:search]            # the only callables the model may call
temperature: 0.2
max_tokens: 800
timeout: 120                        # seconds per model call
retries: 2                          # retries per call, inside one attempt
concurrency: 4
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from blackboard.agents import AgentSpec, spec_from, validated


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
    tools: tuple[str, ...] = ()
    max_tool_rounds: int = Field(default=4, ge=1, le=50)
    context: dict[str, QuerySpec] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)  # more litellm parameters (api_base, ...)

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
