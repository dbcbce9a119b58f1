"""`LLMAgent`: an agent whose handler is a model call, declared in YAML (see `llm.spec`).

One attempt: render the prompts from the item, its dependencies' results and the selected
board queries; call the model through a litellm Router (retries and fallbacks), letting it call
its allowed tools (Python callables, and MCP servers' tools: `llm.mcp_tools`); validate the
answer against the output schema; post the children the spec derives from it. Nothing reaches
the board until the answer is valid: an invalid answer fails the attempt with the validation
error, and the next attempt shows the model that error once.
Every call, failed or not, is recorded on the item (`ctx.usage`) with tokens, cost and latency,
and the tool calls it asked for (`ModelCall.tool_calls`: tool, arguments hash, duration, error).
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import jsonschema
from pydantic import BaseModel, ValidationError

from blackboard import policy, tracing
from blackboard.agents import Agent, Fail
from blackboard.errors import BlackboardError
from blackboard.llm.client import cost_of, litellm, price_offline, warm_up
from blackboard.llm.limiter import RateLimiter
from blackboard.llm.mcp_tools import SEP, McpConnections, McpTool
from blackboard.llm.spec import LLMSpec
from blackboard.llm.templates import Files, Template, compile_value, render_value
from blackboard.llm.tools import Tool, args_hash
from blackboard.models import Item, ModelCall, ToolCall

if TYPE_CHECKING:
    from blackboard.board import Board
    from blackboard.context import Context
    from blackboard.settings import Settings

INVALID = "invalid output: "  # prefix of the error an invalid answer leaves on the item
RATE_LIMIT_BACKOFF = (1.0, 30.0)  # first and longest wait after a 429 with no Retry-After
RETRY_BACKOFF = (0.5, 8.0)  # first and longest wait before retrying a transient provider error
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


class InvalidOutput(BlackboardError):
    """The model's answer is not valid for the agent's output schema."""


class LLMAgent(Agent):
    def __init__(self, spec: LLMSpec, base: Path, where: str, resolve: Any) -> None:
        self.llm = spec
        self._spec = spec.agent_spec(where)
        self.model = spec.model
        self.files = Files(base)
        self.system = Template(spec.system, f"{where}.system") if spec.system else None
        self.prompt = Template(spec.prompt, f"{where}.prompt")
        self.tools = {t.name: t for t in (Tool(resolve(ref, base)) for ref in spec.tools if ":" in ref)}
        for name in self.tools:
            if name.partition(SEP)[0] in spec.mcp_servers:
                raise BlackboardError(f"{where}.tools: Python tool {name!r} looks like an MCP server's tool")
        # MCP servers named by an entry of `tools` (SERVER.TOOL); connected by setup()
        self.mcp_used = tuple(dict.fromkeys(e.partition(".")[0] for e in spec.tools if ":" not in e))
        self.mcp = McpConnections(spec.name, spec.mcp_servers, base) if spec.mcp_servers else None
        self.output_model: type[BaseModel] | None = None
        self.schema: Any = None
        self.dynamic_schema = False
        self._validator: Any = None
        if spec.output is not None and spec.output.model is not None:
            self.output_model = resolve(spec.output.model, base)
            if not (isinstance(self.output_model, type) and issubclass(self.output_model, BaseModel)):
                raise BlackboardError(f"{where}.output.model: {spec.output.model} is not a pydantic model")
            self.schema = self.output_model.model_json_schema()
        elif spec.output is not None and spec.output.json_schema is not None:
            raw = spec.output.json_schema
            self.schema = compile_value(raw, f"{where}.output.schema")
            self.dynamic_schema = self.schema != raw  # has {{ expressions }}: checked once rendered
            if not self.dynamic_schema:
                jsonschema.validators.validator_for(raw).check_schema(raw)
        self.posts = [
            (
                rule,
                compile_value(rule.each, f"{where}.posts[{i}].each"),
                compile_value(rule.payload, f"{where}.posts[{i}].payload"),
                compile_value(rule.when, f"{where}.posts[{i}].when"),
            )
            for i, rule in enumerate(spec.posts)
        ]
        self.result = compile_value(spec.result, f"{where}.result") if spec.result is not None else None
        self.limiter: RateLimiter | None = None
        self._router: Any = None

    async def setup(self, board: Board, settings: Settings | None) -> None:
        """Apply the deployment's model override and rate limits (see `Settings`)."""
        if settings is not None:
            self.model = settings.models.get(self.llm.name) or settings.model or self.llm.model
        self.limiter = RateLimiter(board, settings.llm_limits if settings else {})
        self._router = None
        # Import litellm (seconds) in a worker thread, not on the event loop every agent shares.
        await anyio.to_thread.run_sync(warm_up)
        price_offline([self.model, *self.fallbacks])
        if self.mcp is not None:  # connections for the agent's life in this runner (see teardown)
            await self.mcp.start()

    async def teardown(self) -> None:
        """Close the MCP connections (stopping their servers' processes)."""
        if self.mcp is not None:
            await self.mcp.aclose()

    # -- one attempt ------------------------------------------------------------------------

    async def handle(self, item: Item, ctx: Context) -> Any:
        variables = await self._variables(item, ctx)
        variables["output"] = output = await self.ask(item, variables, ctx)
        await self._post_children(variables, ctx)
        return render_value(self.result, variables) if self.result is not None else output

    async def ask(self, item: Item, variables: dict[str, Any], ctx: Context) -> Any:
        """Render the prompts with `variables`, converse with the model, return its valid output."""
        messages = self._messages(item, variables)
        schema = render_value(self.schema, variables) if self.schema is not None else None
        if self.dynamic_schema and isinstance(schema, dict):
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as e:
                raise Fail(f"output schema of {self.llm.name} rendered invalid: {e.message}") from None
        return self._validate(await self._converse(messages, schema, ctx), schema)

    async def _variables(self, item: Item, ctx: Context) -> dict[str, Any]:
        deps = [d for d in await ctx.board.get_many(list(item.after)) if d is not None]
        context: dict[str, list[dict[str, Any]]] = {}
        for name, q in self.llm.context.items():
            filters = {k: v for k, v in (("kind", q.kind), ("status", q.status)) if v}
            if q.root == "same":
                filters["root"] = item.root
            page = await ctx.query(limit=q.limit, **filters)
            context[name] = [_brief(it) for it in page.items if it.id != item.id]
        return {
            "item": _brief(item)
            | {
                "attempts": item.attempts,
                "root": item.root,
                "parent": item.parent,
                "after": list(item.after),
            },
            "payload": item.payload,
            "deps": [_brief(d) for d in deps],
            "context": context,
            "file": self.files,
            "agent": self.llm.name,
        }

    def _messages(self, item: Item, variables: dict[str, Any]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        system = self.system.render(variables) if self.system else ""
        if self.schema is not None:
            system += "\n\nAnswer with one JSON object that matches the requested schema, and nothing else."
        if system.strip():
            messages.append({"role": "system", "content": system.strip()})
        messages.append({"role": "user", "content": self.prompt.render(variables)})
        payload = item.payload if isinstance(item.payload, dict) else {}
        if payload.get("critique"):  # a critic sent our last answer back (see blackboard.critic)
            rejected = json.dumps(payload.get("rejected"), ensure_ascii=False, default=str)[:4000]
            revision = payload.get("revision", 1)
            messages.append(
                {
                    "role": "user",
                    "content": f"A reviewer sent your previous answer back (revision {revision}).\n"
                    f"Your answer was: {rejected}\nTheir critique: {payload['critique']}\nRevise it.",
                }
            )
        _, invalid, why = (item.error or "").partition(INVALID)
        if item.attempts > 1 and invalid:  # the last attempt's answer was invalid: say why, once
            messages.append(
                {
                    "role": "user",
                    "content": f"Your previous answer was rejected: {why}\n"
                    "Answer again, following the schema exactly.",
                }
            )
        return messages

    # -- the model call ---------------------------------------------------------------------

    @property
    def fallbacks(self) -> list[str]:
        return [m for m in self.llm.fallbacks if m != self.model]

    def router(self) -> Any:
        """litellm's Router over the model and its fallbacks (built once, after `setup`)."""
        if self._router is None:
            lib = litellm()
            from litellm.types.router import RetryPolicy

            names = [self.model, *self.fallbacks]
            self._router = lib.Router(
                model_list=[
                    {"model_name": m, "litellm_params": {"model": m, **self.llm.params}} for m in names
                ],
                fallbacks=[{self.model: names[1:]}] if len(names) > 1 else [],
                num_retries=self.llm.retries,
                # 429s are ours to handle: they cool the model down for every daemon on the board.
                retry_policy=RetryPolicy(RateLimitErrorRetries=0),
                disable_cooldowns=True,
                timeout=self.llm.timeout,
            )
        return self._router

    async def _converse(self, messages: list[dict[str, Any]], schema: Any, ctx: Context) -> str:
        """Call the model, running the tools it asks for, until it answers in text."""
        kwargs: dict[str, Any] = {"drop_params": True}
        if self.llm.temperature is not None:
            kwargs["temperature"] = self.llm.temperature
        if self.llm.max_tokens is not None:
            kwargs["max_tokens"] = self.llm.max_tokens
        if schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(self.llm.name), "schema": schema},
            }
        offered = await self._offered(ctx)
        if offered:
            kwargs["tools"] = offered
        names = [t["function"]["name"] for t in offered]
        for _ in range(self.llm.max_tool_rounds + 1):
            message = await self._call(messages, kwargs, ctx)
            calls = getattr(message, "tool_calls", None) or []
            if not calls:
                return str(message.content or "")
            asked_in = len(ctx.usage) - 1  # the ModelCall `_call` recorded: its tool calls go on it
            messages.append(message.model_dump(exclude_none=True))
            records: list[ToolCall] = []
            try:
                for call in calls:
                    content = await self._run_tool(
                        call.function.name, call.function.arguments, ctx, names, records
                    )
                    messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": call.id,
                            "name": call.function.name,
                            "content": content,
                        }
                    )
            finally:
                ctx.usage[asked_in] = ctx.usage[asked_in].model_copy(update={"tool_calls": tuple(records)})
        raise InvalidOutput(f"{INVALID}no answer after {self.llm.max_tool_rounds} rounds of tool calls")

    def _may(self, ctx: Context, label: str) -> bool:
        board_policy = ctx.board.policy
        return board_policy is None or board_policy.decide(self.llm.name, "tool", label).allowed

    async def _offered(self, ctx: Context) -> list[dict[str, Any]]:
        """The tools this attempt offers the model: those it may call (its `tools` list them
        and, under a policy, a role grants them). MCP servers are waited for (`McpUnavailable`
        fails the attempt when one stays down)."""
        offered = [t.spec() for t in self.tools.values() if self._may(ctx, t.name)]
        if self.mcp is not None and self.mcp_used:
            for tool in await self.mcp.tools(self.mcp_used):
                if self.llm.mcp_allowed(tool.server, tool.name) and self._may(ctx, tool.qualified):
                    offered.append(tool.spec())
        return offered

    def _target(self, name: str) -> tuple[str, Tool | McpTool | None]:
        """(the tool's name for policy, audit and metrics; the tool, if the agent's `tools` list it)."""
        if name in self.tools:
            return name, self.tools[name]
        mcp = self.mcp.find(name) if self.mcp is not None else None
        if mcp is None:
            return name, None
        return mcp.qualified, mcp if self.llm.mcp_allowed(mcp.server, mcp.name) else None

    async def _run_tool(
        self, name: str, arguments: str, ctx: Context, offered: list[str], records: list[ToolCall]
    ) -> str:
        """Run a tool the model asked for, if this agent may: it is in the agent's `tools` and,
        under a policy, one of its roles grants it. A refusal is the model's answer (never the
        call) and leaves an audit record. Each call, run or refused, is added to `records`."""
        label, tool = self._target(name)
        digest = args_hash(arguments)
        board_policy = ctx.board.policy
        why, rule = ("not in the agent's tools", "agent-tools") if tool is None else (None, "")
        if (
            why is None
            and board_policy is not None
            and not (d := board_policy.decide(self.llm.name, "tool", label)).allowed
        ):
            why, rule = d.rule, d.code
        if why is not None:
            ctx.log.warning("model asked for a tool it is not allowed", tool=label, why=why)
            records.append(ToolCall(tool=label, args_hash=digest, error=f"refused: {why}"[:300]))
            if ctx.metrics is not None:
                ctx.metrics.llm_tool_calls.labels(self.llm.name, label, "refused").inc()
            detail = f"tool {label}: {why}"
            await policy.record_denial(
                ctx.board, self.llm.name, "tool", ctx.item.kind, detail, ctx.item.id, rule
            )
            return f"error: tool {name!r} is not available to this agent; allowed: {sorted(offered)}"
        assert tool is not None
        started = time.perf_counter()
        error: str | None = "interrupted"
        try:
            if isinstance(tool, Tool):
                text, error = await tool.invoke(arguments)
            else:
                assert self.mcp is not None
                text, error = await self.mcp.call(tool, arguments)
            return text
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:300]
            raise
        finally:
            seconds = time.perf_counter() - started
            records.append(
                ToolCall(tool=label, args_hash=digest, duration_ms=round(seconds * 1000, 2), error=error)
            )
            if ctx.metrics is not None:
                ctx.metrics.llm_tool_calls.labels(self.llm.name, label, "error" if error else "called").inc()
                ctx.metrics.llm_tool_seconds.labels(self.llm.name, label).observe(seconds)

    async def _call(self, messages: list[dict[str, Any]], kwargs: dict[str, Any], ctx: Context) -> Any:
        """One model call: take from the shared limiter, call, record usage; back off on 429s."""
        lib = litellm()
        assert self.limiter is not None, "setup() runs before handle()"
        estimate = len(json.dumps(messages, default=str)) // 4 + (self.llm.max_tokens or 512)
        left = await policy.tokens_left(ctx.board, ctx.item.root)
        if left is not None and estimate > left:  # refused before it is made, not after
            if ctx.board.on_budget_exceeded is not None:
                ctx.board.on_budget_exceeded("max_tokens")
            raise Fail(f"budget: this call could use {estimate} tokens; goal {ctx.item.root} has {left} left")
        backoff = RATE_LIMIT_BACKOFF[0]
        while True:
            await self.limiter.take(self.model, estimate)
            started = time.perf_counter()
            traced = tracing.model_call(self.model, self.llm.name, kwargs) if tracing.enabled else None
            try:
                with traced or tracing.NO_SPAN as span:
                    response = await self._acompletion(messages, kwargs)
                    call = self._record(response, started).model_copy(update={"attempt": ctx.item.attempts})
                    if span is not None:
                        tracing.record_response(span, call)
            except lib.RateLimitError as e:
                wait = _retry_after(e) or backoff
                backoff = min(backoff * 2, RATE_LIMIT_BACKOFF[1])
                ctx.log.info("model rate limited; backing off", model=self.model, wait=wait)
                if ctx.metrics is not None:
                    ctx.metrics.llm_rate_limited.labels(self.model).inc()
                await self.limiter.cool_down(self.model, wait)
                continue
            except Exception as e:
                failed = self._record(None, started, error=f"{type(e).__name__}: {e}"[:500])
                ctx.usage.append(failed.model_copy(update={"attempt": ctx.item.attempts}))
                raise
            break
        ctx.usage.append(call)
        await self.limiter.settle(self.model, estimate, call.prompt_tokens + call.completion_tokens)
        return response.choices[0].message

    async def _acompletion(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> Any:
        """One completion: through the Router when there are fallbacks to route to; otherwise
        straight through `litellm.acompletion`, retrying transient errors here.

        The Router costs about 0.6 ms of CPU per call on top of litellm's own ~1.4 ms (it deep-
        copies the model's info to track its deployment's usage), which a hundred concurrent
        calls on one event loop pay in series. With a single deployment it would only retry, so
        that is done here with litellm's own rule for what is worth retrying. 429s are never
        retried here: they go to the shared cool-down (`_call`).
        """
        if self.fallbacks:
            return await self.router().acompletion(model=self.model, messages=messages, **kwargs)
        lib = litellm()
        wait = RETRY_BACKOFF[0]
        for remaining in range(self.llm.retries, -1, -1):
            try:
                params = {"timeout": self.llm.timeout, **self.llm.params, **kwargs}
                return await lib.acompletion(model=self.model, messages=messages, **params)
            except Exception as e:
                if remaining == 0 or not _transient(lib, e):
                    raise
            await anyio.sleep(wait * (0.5 + random.random() / 2))
            wait = min(wait * 2, RETRY_BACKOFF[1])
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(self, response: Any, started: float, error: str | None = None) -> ModelCall:
        model = self.model
        usage: Any = None
        tools: tuple[str, ...] = ()
        if response is not None:
            model = (getattr(response, "_hidden_params", None) or {}).get("litellm_model_name") or model
            usage = getattr(response, "usage", None)
            asked = [self._target(c.function.name) for c in (response.choices[0].message.tool_calls or [])]
            tools = tuple(label if tool is not None else "!" + label for label, tool in asked)
        return ModelCall(
            model=model,
            agent=self.llm.name,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost=cost_of(response) if response is not None else None,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            error=error,
            tools=tools,
            at=int(time.time() * 1000),
        )

    # -- the answer -------------------------------------------------------------------------

    def _validate(self, answer: str, schema: Any) -> Any:
        if schema is None:
            return answer
        text = answer.strip()
        if m := _FENCE.match(text):
            text = m.group(1)
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InvalidOutput(f"{INVALID}not JSON ({e}): {answer[:200]!r}") from None
        if self.output_model is not None:
            try:
                return self.output_model.model_validate(data).model_dump(mode="json")
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "(root)"
                raise InvalidOutput(f"{INVALID}{where}: {err['msg']}") from None
        validator = self._validator if not self.dynamic_schema else None
        if validator is None:
            validator = jsonschema.validators.validator_for(schema)(schema)
            if not self.dynamic_schema:
                self._validator = validator  # a static schema: build its validator once
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise InvalidOutput(f"{INVALID}{where}: {error.message}")
        return data

    async def _post_children(self, variables: dict[str, Any], ctx: Context) -> None:
        posted: list[str] = []
        for rule, each, payload, when in self.posts:
            if when is not None and not render_value(when, variables):
                continue
            elements = render_value(each, variables) if each is not None else [None]
            if not isinstance(elements, list):
                raise InvalidOutput(
                    f"{INVALID}posts: 'each' of {rule.kind} gave {type(elements).__name__}, not a list"
                )
            mine = []
            for n, element in enumerate(elements):
                scope = {**variables, "each": element, "index": n}
                if payload is not None:
                    data = render_value(payload, scope)
                else:
                    data = element if each is not None else variables["output"]
                new = await ctx.post(
                    rule.kind, data, priority=rule.priority, after=tuple(posted) if rule.after else ()
                )
                mine.append(new.id or "")
            posted += mine


def _brief(it: Item) -> dict[str, Any]:
    return {
        "id": it.id,
        "kind": it.kind,
        "payload": it.payload,
        "result": it.result,
        "status": it.status.value,
    }


def _schema_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "output"


def _transient(lib: Any, e: Exception) -> bool:
    """Worth retrying, by the rule litellm's Router applies to a single deployment: not a 429
    (those cool the model down for every daemon), not a missing model or a refused key, and not
    a status code litellm calls final (400, 404, ...)."""
    final = (lib.RateLimitError, lib.NotFoundError, lib.AuthenticationError, lib.PermissionDeniedError)
    if isinstance(e, final):
        return False
    status = getattr(e, "status_code", None)
    return not isinstance(status, int) or bool(lib.should_retry(status))


def _retry_after(e: Exception) -> float | None:
    """The provider's Retry-After, in seconds, when the 429 carries one."""
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
