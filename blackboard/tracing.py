"""Traces across agents: one goal is one OpenTelemetry trace, whichever daemons handle it.

Agents never call each other, so no request carries a trace from one to the next: the board
does. Each item stores the W3C `traceparent` of the span that posted it (in its immutable doc),
and every span about the item is a child of that context, in whatever process claims it:

    post K       an item posted from outside (Board.post/post_many, HTTP); the trace's root
                 unless a span is current. Outputs of a handler have no post span: their
                 poster is the handle span, current when `ctx.post` runs.
    wait K       from the post (a retry: from when it became claimable again) until the claim
                 that leased it returned (one span, not two: a claim leases many items at once)
    handle K     the handler; current while it runs, so model calls and children nest in it
    complete K   the completion that stored the result and wrote the outputs (or `fail K`)
    chat MODEL   one model call (GenAI semantic conventions), inside its handle span

Optional (`pip install 'blackboard[otel]'`) and off by default. Until `enable` (or `configure`,
for the daemon) turns it on, nothing imports OpenTelemetry and callers pay one test of the
module attribute `enabled`; nothing is stored on items, so untraced boards are unchanged.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from blackboard.models import TRACEPARENT_PATTERN

if TYPE_CHECKING:
    from blackboard.board import Board
    from blackboard.models import Claim, Item, ModelCall, NewItem

# Read on the hot path as `tracing.enabled` (never import the name: it changes).
enabled = False

_tracer: Any = None
_trace: Any = None  # the opentelemetry.trace module, once enabled
_owned: Any = None  # the provider `configure` made (and `shutdown` flushes)
_users = 0  # daemons in this process that configured it
NO_SPAN = nullcontext()  # what `use(None)` returns: tracing off, nothing to make current

SYSTEM = "blackboard"  # messaging.system of every span


# -- turning it on and off ------------------------------------------------------------------


def wanted(endpoint: str | None) -> bool:
    """Whether the daemon should trace: an endpoint given, or the standard OTEL_* variables
    name an exporter or an OTLP endpoint (and OTEL_SDK_DISABLED is not true)."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        endpoint
        or exporter
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure(endpoint: str | None = None, *, instance: str | None = None) -> bool:
    """Turn tracing on with an SDK provider that exports OTLP/HTTP, when `wanted`.

    `endpoint` is a collector's base URL (`/v1/traces` is appended, as for
    OTEL_EXPORTER_OTLP_ENDPOINT); without it the exporter reads the OTEL_* variables.
    OTEL_TRACES_EXPORTER=console prints spans instead. `instance` becomes the resource's
    service.instance.id. Returns False, importing nothing, when tracing is not wanted; a
    provider already enabled (by `enable`, say in a test) is kept. Pair with `shutdown`.
    """
    global _owned, _users
    if enabled and _owned is None:
        return False
    if not enabled:
        if not wanted(endpoint):
            return False
        try:
            provider = _make_provider(endpoint, instance)
        except ImportError as e:
            raise RuntimeError(
                f"tracing is configured but OpenTelemetry is missing ({e}); pip install 'blackboard[otel]'"
            ) from None
        enable(provider)
        _owned = provider
        from opentelemetry import trace

        # Handlers' own spans (trace.get_tracer(...)) then export too, unless the app set one.
        if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
            trace.set_tracer_provider(provider)
    _users += 1
    return True


def _make_provider(endpoint: str | None, instance: str | None) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attrs = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "blackboard"}
    if instance:
        attrs["service.instance.id"] = instance
    provider = TracerProvider(resource=Resource.create(attrs))  # merges OTEL_RESOURCE_ATTRIBUTES
    exporter: Any
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console" and not endpoint:
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint.rstrip("/") if endpoint else None
        if url and not url.endswith("/v1/traces"):
            url += "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=url)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def shutdown(timeout_ms: int = 5000) -> None:
    """Undo one `configure`: the last one flushes and stops the provider it made."""
    global _owned, _users
    if _users == 0:
        return
    _users -= 1
    if _users == 0 and _owned is not None:
        provider, _owned = _owned, None
        disable()
        provider.force_flush(timeout_ms)
        provider.shutdown()


def enable(provider: Any = None) -> None:
    """Trace through `provider` (an SDK TracerProvider; None: the global one). For programs
    that embed a Board, and tests (with the SDK's InMemorySpanExporter)."""
    global enabled, _tracer, _trace
    from opentelemetry import trace

    _trace = trace
    _tracer = (provider or trace.get_tracer_provider()).get_tracer("blackboard")
    enabled = True


def disable() -> None:
    """Stop tracing (the provider is left as it is)."""
    global enabled, _tracer
    enabled, _tracer = False, None


# -- trace context as stored on items -------------------------------------------------------


def _format(ctx: Any) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def traceparent_of(span: Any) -> str | None:
    """The W3C traceparent naming `span` (None for an invalid span)."""
    ctx = span.get_span_context()
    return _format(ctx) if ctx.is_valid else None


def current_traceparent() -> str | None:
    """The traceparent of the current span, if there is a valid one."""
    return traceparent_of(_trace.get_current_span())


def _parent(traceparent: str | None) -> Any:
    """An OpenTelemetry Context whose (remote) parent is `traceparent`; None: no parent."""
    if not traceparent:
        return None
    _, trace_id, span_id, flags = traceparent.split("-")
    sc = _trace.SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=_trace.TraceFlags(int(flags, 16))
    )
    return _trace.set_span_in_context(_trace.NonRecordingSpan(sc))


@contextmanager
def joined(traceparent: str | None) -> Iterator[None]:
    """Make a caller's W3C `traceparent` (an HTTP request's header) the current parent, so what
    is posted under it joins the caller's trace. Absent, invalid or tracing off: nothing (W3C
    asks a receiver to ignore a traceparent it can't parse)."""
    if not enabled or not traceparent or not re.match(TRACEPARENT_PATTERN, traceparent.strip()):
        yield
        return
    from opentelemetry import context

    token = context.attach(_parent(traceparent.strip()))
    try:
        yield
    finally:
        context.detach(token)


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def _item_attrs(board: Board, item: Item | NewItem, op_type: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": op_type,
        "messaging.destination.name": item.kind,  # the kind: queues are per kind
        "blackboard.board": board.name,
    }
    if item.id:
        attrs["blackboard.item.id"] = item.id
    if item.parent:
        attrs["blackboard.item.parent"] = item.parent
    root = getattr(item, "root", None)
    if root:
        attrs["blackboard.item.root"] = root
    if board.daemon_id:
        attrs["blackboard.daemon.id"] = board.daemon_id
    return attrs


def _fail(span: Any, error: BaseException | str) -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        error = f"{type(error).__name__}: {error}"
    else:
        span.set_attribute("error.type", "blackboard")
    span.set_status(Status(StatusCode.ERROR, error[:500]))


def end_spans(spans: Sequence[Any], error: BaseException | None = None) -> None:
    """End spans of one call; `error` when the call raised."""
    for span in spans:
        if error is not None:
            _fail(span, error)
        span.end()


# -- posting --------------------------------------------------------------------------------


def start_posts(board: Board, items: Sequence[NewItem], actor: str | None) -> tuple[list[NewItem], list[Any]]:
    """A `post K` span for each item without a trace context (children of the current span,
    if any: else each starts its own trace), and the items carrying theirs."""
    kind = _trace.SpanKind.PRODUCER
    out, spans = [], []
    for it in items:
        if it.traceparent:
            out.append(it)
            continue
        attrs = _item_attrs(board, it, "send")
        if actor:
            attrs["blackboard.actor"] = actor
        span = _tracer.start_span(f"post {it.kind}", kind=kind, attributes=attrs)
        spans.append(span)
        out.append(it.model_copy(update={"traceparent": traceparent_of(span)}))
    return out, spans


def inherit(outputs: list[NewItem], span: Any) -> list[NewItem]:
    """Outputs with no trace context of their own become children of `span` (their completion)."""
    tp = traceparent_of(span)
    return [o if o.traceparent else o.model_copy(update={"traceparent": tp}) for o in outputs]


# -- claiming -------------------------------------------------------------------------------


def claimed(board: Board, claims: list[Claim], started_ns: int) -> list[Claim]:
    """Record a `wait K` span for each claim of one claim call (started at `started_ns`).

    It ends when the claim returned. The wait before the call comes from the item's Redis
    timestamps (created, or last made claimable, to claimed), placed to end where the local
    claim call began, so spans of one process line up whatever the skew between its clock and
    Redis's. The call itself is `blackboard.claim.ms`, shared by the `blackboard.claim.batch`
    items it leased: one span per item, not two (spans cost ~20-40 µs each). An item posted by a
    process with tracing off gets its root `post K` span here (zero length, at its post,
    `blackboard.post.reconstructed`), so its goal is still one trace from this claim on.
    """
    ended_ns = time.time_ns()
    call_ms = round((ended_ns - started_ns) / 1e6, 3)
    out = []
    for c in claims:
        item = c.item
        if not item.traceparent:
            item = _reconstruct_post(board, item, started_ns)
            c = c.model_copy(update={"item": item})
        claimed_at = item.claimed_at or item.created_at
        since = item.created_at if item.attempts <= 1 else (item.ready_at or item.created_at)
        attrs = _item_attrs(board, item, "receive")
        attrs["blackboard.item.attempt"] = item.attempts
        attrs["blackboard.agent"] = c.agent
        attrs["blackboard.wait.queue_ms"] = max(0, claimed_at - (item.ready_at or item.created_at))
        attrs["blackboard.claim.ms"] = call_ms
        attrs["blackboard.claim.batch"] = len(claims)
        _tracer.start_span(
            f"wait {item.kind}",
            context=_parent(item.traceparent),
            attributes=attrs,
            start_time=started_ns - _ns(max(0, claimed_at - since)),
        ).end(end_time=ended_ns)
        out.append(c)
    return out


def _reconstruct_post(board: Board, item: Item, now_ns: int) -> Item:
    attrs = _item_attrs(board, item, "send")
    if item.created_by:
        attrs["blackboard.actor"] = item.created_by
    attrs["blackboard.post.reconstructed"] = True
    age = _ns(max(0, (item.claimed_at or item.created_at) - item.created_at))
    span = _tracer.start_span(
        f"post {item.kind}",
        context=_trace.set_span_in_context(_trace.INVALID_SPAN),  # a root, whatever is current
        kind=_trace.SpanKind.PRODUCER,
        attributes=attrs,
        start_time=now_ns - age,
    )
    span.end(end_time=now_ns - age)
    return item.model_copy(update={"traceparent": traceparent_of(span)})


# -- handling -------------------------------------------------------------------------------


def start_handle(board: Board, claim: Claim) -> Any:
    """The `handle K` span of one claim (made current by `use` while the handler runs)."""
    item = claim.item
    attrs = _item_attrs(board, item, "process")
    attrs["blackboard.agent"] = claim.agent
    attrs["blackboard.item.attempt"] = item.attempts
    return _tracer.start_span(
        f"handle {item.kind}",
        context=_parent(item.traceparent),
        kind=_trace.SpanKind.CONSUMER,
        attributes=attrs,
    )


def use(span: Any) -> Any:
    """Make `span` current (a context manager); None: nothing to do."""
    if span is None:
        return NO_SPAN
    # What the handler raised is judged by `end_handle` (a Retry is no error), not here.
    return _trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


def end_handle(
    span: Any, outcome: tuple[str, Any, Any] | None, outputs: int, error: BaseException | None
) -> None:
    """End a handle span with what the handler came to: `ok`, `retry`, `fail` (dead-letter
    asked), `error` (raised or timed out) or `cancelled` (drained; released)."""
    from blackboard.agents import Fail, Retry

    if outcome is None:
        result = "cancelled"
    elif outcome[0] == "complete":
        result = "ok"
    elif isinstance(error, Retry | Fail):
        result = type(error).__name__.lower()
    else:
        result = "error"
    span.set_attribute("blackboard.outcome", result)
    span.set_attribute("blackboard.outputs", outputs)
    if result in ("retry", "fail") and outcome is not None:
        span.set_attribute("blackboard.reason", str(outcome[1])[:500])
    if result == "error":
        _fail(span, error if error is not None else str(outcome[1] if outcome else ""))
    span.end()


# -- finishing ------------------------------------------------------------------------------


def start_settle(board: Board, claims: Sequence[Claim], op: str) -> list[Any]:
    """A `complete K` (or `fail K`) span per claim, children of each item's context."""
    kind = _trace.SpanKind.CLIENT
    spans = []
    for c in claims:
        attrs = _item_attrs(board, c.item, "settle")
        attrs["blackboard.agent"] = c.agent
        attrs["blackboard.item.attempt"] = c.item.attempts
        spans.append(
            _tracer.start_span(
                f"{op} {c.item.kind}", context=_parent(c.item.traceparent), kind=kind, attributes=attrs
            )
        )
    return spans


def end_completions(spans: Sequence[Any], outputs: Sequence[int], outcomes: Sequence[Any]) -> None:
    """End `complete` spans with their outcome (`done`, or the error: lease lost, refused)."""
    for span, n, outcome in zip(spans, outputs, outcomes, strict=True):
        span.set_attribute("blackboard.outputs", n)
        if isinstance(outcome, BaseException):
            _fail(span, outcome)
        else:
            span.set_attribute("blackboard.item.status", "done")
        span.end()


def end_fail(span: Any, status: str, delay: float) -> None:
    span.set_attribute("blackboard.item.status", status)
    if status == "failed":
        span.set_attribute("blackboard.retry.delay_ms", int(delay * 1000))
    span.end()


# -- model calls ----------------------------------------------------------------------------


@contextmanager
def model_call(model: str, agent: str, params: dict[str, Any]) -> Iterator[Any]:
    """A `chat MODEL` span (GenAI semantic conventions) around one model call; an exception
    marks it failed with its `error.type`. Record the response with `record_response`."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the name before semconv 1.37, still read by many backends
        "gen_ai.request.model": model,
        "blackboard.agent": agent,
    }
    for key in ("temperature", "max_tokens"):
        if params.get(key) is not None:
            attrs[f"gen_ai.request.{key}"] = params[key]
    span = _tracer.start_span(f"chat {model}", kind=_trace.SpanKind.CLIENT, attributes=attrs)
    try:
        with _trace.use_span(span, end_on_exit=False):
            yield span
    except BaseException as e:
        _fail(span, e)
        raise
    finally:
        span.end()


def record_response(span: Any, call: ModelCall) -> None:
    """Tokens, cost and the model that answered, from the call as recorded on the item."""
    span.set_attribute("gen_ai.response.model", call.model)
    span.set_attribute("gen_ai.usage.input_tokens", call.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", call.completion_tokens)
    if call.cost is not None:
        span.set_attribute("blackboard.llm.cost_usd", call.cost)
    if call.tools:
        span.set_attribute("blackboard.llm.tools", list(call.tools))
