"""Traces across agents (blackboard.tracing): one goal is one trace, through any daemons.

Spans go to the SDK's in-memory exporter; each test enables tracing for itself and turns it
off after, so the rest of the suite runs untraced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from blackboard import Board, plugins, tracing
from blackboard.daemon import Daemon
from blackboard.models import Item, NewItem, Status
from tests.conftest import unique_board
from tests.support.packs import daemon_settings, run_pack

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    yield exporter
    tracing.disable()
    provider.shutdown()


def ids_of(traceparent: str | None) -> tuple[int, int]:
    """(trace id, span id) of a stored traceparent."""
    assert traceparent is not None
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return int(trace_id, 16), int(span_id, 16)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def of_item(found: list[ReadableSpan], item: Item) -> dict[str, ReadableSpan]:
    """The spans about `item`, by operation (each must appear once)."""
    mine = [s for s in found if (s.attributes or {}).get("blackboard.item.id") == item.id]
    by_op = {s.name.split(" ", 1)[0]: s for s in mine}
    assert all(s.name == f"{op} {item.kind}" for op, s in by_op.items())
    assert len(by_op) == len(mine), [s.name for s in mine]
    return by_op


async def wait_done(board: Board, item_id: str) -> Item:
    item = await board.wait(item_id, timeout=30)
    assert item.status is Status.DONE, (item.status, item.error)
    return item


async def test_fan_out_fan_in_through_two_daemons_is_one_trace(
    board_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    # Given the word-count agents split over two daemons on one board: the planner and the
    # reducer in the first, the mappers in the second
    stock = {a.spec.name: a for a in plugins.load_file(ROOT / "agents" / "wordcount.py").agents}
    files = []
    for n in range(3):
        (tmp_path / f"f{n}.txt").write_text(f"alpha beta gamma delta {'epsilon ' * n}")
        files.append(str(tmp_path / f"f{n}.txt"))
    name = unique_board()
    first = Daemon(daemon_settings(board_url, name, []), agents=[stock["planner"], stock["reducer"]])
    second = Daemon(daemon_settings(board_url, name, []), agents=[stock["mapper"]])
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await tg.start(second.run)
        # When a goal is posted from outside (no span current) and runs to the end
        goal = await first.board.post("wordcount.goal", {"files": files, "top": 3}, actor="cli")
        await wait_done(first.board, goal.id)
        tree = await first.board.tree(goal.id)
        reduce_id = next(i.id for i in tree.walk() if i.kind == "wordcount.reduce")
        await wait_done(first.board, reduce_id)
        items = (await first.board.tree(goal.id)).walk()
        first.stop()
        second.stop()
    found = list(spans.get_finished_spans())
    goal = next(i for i in items if i.id == goal.id)
    maps = [i for i in items if i.kind == "wordcount.map"]
    (reduce,) = [i for i in items if i.kind == "wordcount.reduce"]
    assert len(maps) == 3 and len(items) == 5

    # Then every span of every agent in both daemons is in the goal's one trace
    trace_id, post_id = ids_of(goal.traceparent)
    assert found and {s.context.trace_id for s in found} == {trace_id}
    # ...rooted at the post that started it
    (post,) = [s for s in found if s.name == "post wordcount.goal"]
    assert post.parent is None and post.context.span_id == post_id and post.kind is SpanKind.PRODUCER
    assert post.attributes is not None and post.attributes["blackboard.actor"] == "cli"
    assert not post.attributes.get("blackboard.post.reconstructed")

    # ...each item's wait, handle and complete sit under the span that posted it
    lifecycle = {"wait", "handle", "complete"}
    for item in items:
        mine = of_item(found, item)
        assert set(mine) - {"post"} == lifecycle, (item.kind, sorted(mine))
        poster = ids_of(item.traceparent)[1]
        assert {parent_id(mine[op]) for op in lifecycle} == {poster}, item.kind
        assert mine["handle"].kind is SpanKind.CONSUMER and mine["complete"].kind is SpanKind.CLIENT
        assert (mine["wait"].attributes or {})["blackboard.agent"] == item.handled_by
        assert (mine["wait"].attributes or {})["messaging.destination.name"] == item.kind
        assert mine["handle"].attributes is not None
        assert mine["handle"].attributes["blackboard.outcome"] == "ok"
        assert mine["handle"].attributes["blackboard.agent"] == item.handled_by
        assert mine["complete"].attributes is not None
        assert mine["complete"].attributes["blackboard.item.status"] == "done"
        assert mine["handle"].status.status_code is not StatusCode.ERROR

    handled = {it.id: of_item(found, it)["handle"] for it in items}
    daemon_of = {it.id: (handled[it.id].attributes or {})["blackboard.daemon.id"] for it in items}
    # ...the goal was handled by the first daemon's planner, whose handle span posted the maps
    # and the reduce: a child item's spans are under its parent item's handle span
    assert daemon_of[goal.id] == first.id and handled[goal.id].attributes is not None
    assert handled[goal.id].attributes["blackboard.outputs"] == 4
    assert (of_item(found, goal)["complete"].attributes or {})["blackboard.outputs"] == 4
    planner_span = handled[goal.id].context.span_id
    for m in maps:
        assert ids_of(m.traceparent) == (trace_id, planner_span)
        assert daemon_of[m.id] == second.id and m.handled_by == "mapper"
    # ...and the fan-in, posted by the planner with `after`, sits under the planner's handle
    # span, handled back in the first daemon once the mappers (in the second) were done
    assert ids_of(reduce.traceparent) == (trace_id, planner_span)
    assert daemon_of[reduce.id] == first.id and reduce.handled_by == "reducer"
    wait = of_item(found, reduce)["wait"]
    assert wait.attributes is not None and wait.start_time is not None and wait.end_time is not None
    assert reduce.claimed_at and reduce.ready_at
    # its wait runs from its post to its claim (Redis's timestamps) plus the claim call's return,
    # its queue part from when it became ready
    claim_ms = wait.attributes["blackboard.claim.ms"]
    assert isinstance(claim_ms, float) and 0 < claim_ms < 1000
    waited = (wait.end_time - wait.start_time) / 1e6 - claim_ms
    assert abs(waited - (reduce.claimed_at - reduce.created_at)) < 1
    assert wait.attributes["blackboard.wait.queue_ms"] == reduce.claimed_at - reduce.ready_at
    assert wait.attributes["blackboard.claim.batch"] == 1
    completes = [of_item(found, m)["complete"] for m in maps]
    assert all(c.start_time is not None and wait.end_time >= c.start_time for c in completes)
    planner_done = of_item(found, goal)["complete"]
    assert planner_done.start_time is not None and planner_done.end_time is not None
    assert planner_done.start_time - 1e9 <= wait.start_time <= planner_done.end_time + 5e6


async def test_llm_calls_are_genai_spans_under_their_handle_span(
    board_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    # Given an LLM agent on the offline model
    (tmp_path / "asker.yaml").write_text(
        json.dumps(
            {
                "name": "asker",
                "consumes": ["t.goal"],
                "model": "offline/asker",
                "prompt": "Q: {{ payload.q }}",
                "max_tokens": 64,
            }
        )
    )
    # When a goal runs through it
    run = await run_pack(board_url, [tmp_path], "t.goal", {"q": "why is the sky blue?"})
    (call,) = run.goal.usage
    found = list(spans.get_finished_spans())
    # Then its model call is a GenAI client span, a child of the handle span, in the goal's trace
    (chat,) = [s for s in found if s.name == "chat offline/asker"]
    handle = of_item(found, run.goal)["handle"]
    assert chat.parent is not None and chat.parent.span_id == handle.context.span_id
    assert chat.context.trace_id == ids_of(run.goal.traceparent)[0] and chat.kind is SpanKind.CLIENT
    a = chat.attributes
    assert a is not None
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "offline/asker"
    assert a["gen_ai.provider.name"] == "offline" and a["gen_ai.system"] == "offline"
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.usage.input_tokens"] == call.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == call.completion_tokens > 0
    assert call.cost and a["blackboard.llm.cost_usd"] == pytest.approx(call.cost)
    assert a["gen_ai.response.model"] == call.model and a["blackboard.agent"] == "asker"


async def test_a_failing_handler_leaves_an_error_span_and_a_fail_span(
    board_url: str, spans: InMemorySpanExporter
) -> None:
    from blackboard import Fail, agent

    @agent(name="refuser", consumes=["t.bad"])
    async def refuse(item: Item, ctx: Any) -> None:
        raise ValueError("no thanks")

    @agent(name="quitter", consumes=["t.quit"])
    async def quit_now(item: Item, ctx: Any) -> None:
        raise Fail("not for me")

    daemon = Daemon(daemon_settings(board_url, unique_board(), []), agents=[refuse, quit_now])
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        bad = await daemon.board.post("t.bad", {}, max_attempts=1)
        gone = await daemon.board.post("t.quit", {})
        bad = await daemon.board.wait(bad.id, timeout=30)
        gone = await daemon.board.wait(gone.id, timeout=30)
        daemon.stop()
    assert bad.status is Status.DEAD and gone.status is Status.DEAD
    found = list(spans.get_finished_spans())
    raised = of_item(found, bad)
    assert set(raised) == {"post", "wait", "handle", "fail"}
    handle = raised["handle"]
    assert handle.status.status_code is StatusCode.ERROR and handle.attributes is not None
    assert (
        handle.attributes["blackboard.outcome"] == "error" and handle.attributes["error.type"] == "ValueError"
    )
    assert any(e.name == "exception" for e in handle.events)
    assert (raised["fail"].attributes or {})["blackboard.item.status"] == "dead"
    assert parent_id(raised["fail"]) == raised["post"].context.span_id
    quit_handle = of_item(found, gone)["handle"]
    assert (quit_handle.attributes or {})["blackboard.outcome"] == "fail"
    assert (quit_handle.attributes or {})["blackboard.reason"] == "not for me"
    assert quit_handle.status.status_code is not StatusCode.ERROR


async def test_direct_board_use_keeps_one_trace_and_an_untraced_post_gets_its_root_at_claim(
    board: Board, spans: InMemorySpanExporter
) -> None:
    # Given a goal posted by a process with tracing off (no traceparent stored)
    tracing.disable()
    goal = await board.post("t.a", {"n": 1})
    assert goal.traceparent is None
    raw = await board.redis.hget(board.keys_of(goal.id).items, goal.id)
    assert b"traceparent" not in raw
    provider_exporter = spans
    tracing.enable(_provider_of(provider_exporter))
    # When a traced worker claims it and completes it with an output, through Board alone
    (claim,) = await board.claim("w", ["t.a"])
    (child,) = await board.complete(claim, "ok", [NewItem(kind="t.b")])
    (claim_b,) = await board.claim("w", ["t.b"])
    await board.complete(claim_b, "ok")
    found = list(provider_exporter.get_finished_spans())
    # Then the claim gave the goal a (zero-length) root post span, and the trace goes on from it
    a = of_item(found, goal)
    post = a["post"]
    assert post.parent is None and (post.attributes or {})["blackboard.post.reconstructed"] is True
    assert post.start_time == post.end_time
    assert set(a) == {"post", "wait", "complete"}
    assert {parent_id(a[op]) for op in ("wait", "complete")} == {post.context.span_id}
    # ...and an output without a context of its own is a child of the completion that posted it
    assert ids_of(child.traceparent) == (post.context.trace_id, a["complete"].context.span_id)
    b = of_item(found, child)
    assert {parent_id(b[op]) for op in ("wait", "complete")} == {a["complete"].context.span_id}
    assert {s.context.trace_id for s in found} == {post.context.trace_id}


def _provider_of(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_a_post_under_a_current_span_joins_its_trace(board: Board, spans: InMemorySpanExporter) -> None:
    provider = _provider_of(spans)
    with provider.get_tracer("app").start_as_current_span("request") as request:
        a, b = await board.post_many([NewItem(kind="t.x"), NewItem(kind="t.x")])
    found = {s.context.span_id: s for s in spans.get_finished_spans()}
    for item in (a, b):
        trace_id, span_id = ids_of(item.traceparent)
        assert trace_id == request.get_span_context().trace_id
        assert found[span_id].name == "post t.x"
        assert parent_id(found[span_id]) == request.get_span_context().span_id
    assert a.traceparent != b.traceparent  # one post span per item


def test_traceparent_is_checked_when_given() -> None:
    from blackboard.errors import InvalidInput
    from blackboard.posting import new_item

    ok = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    assert new_item("", kind="t.x", traceparent=ok).traceparent == ok
    with pytest.raises(InvalidInput, match="traceparent"):
        new_item("", kind="t.x", traceparent="not-a-traceparent")


@pytest.mark.parametrize(
    ("env", "endpoint", "expected"),
    [
        ({}, None, False),
        ({}, "http://collector:4318", True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None, False),
        ({"OTEL_SDK_DISABLED": "true"}, "http://collector:4318", False),
    ],
)
def test_tracing_is_wanted_when_an_endpoint_or_otel_variables_say_so(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], endpoint: str | None, expected: bool
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.wanted(endpoint) is expected


_SCRIPT = """
import json, os, sys, anyio
from blackboard import Board, tracing
from blackboard.models import NewItem
import blackboard.daemon, blackboard.runner, blackboard.llm.agent  # noqa: F401

async def main():
    traced = tracing.configure(os.environ.get("ENDPOINT") or None, instance="d1")
    board = await Board.connect("memory://tracing-sub", board="b")
    goal = await board.post("t.a", {})
    (claim,) = await board.claim("w", ["t.a"])
    (child,) = await board.complete(claim, None, [NewItem(kind="t.b")])
    doc = await board.redis.hget(board.keys_of(child.id).items, child.id)
    await board.close()
    if traced:
        tracing.shutdown()
    print(json.dumps({
        "traced": traced,
        # redis-py 8 imports OpenTelemetry's API and metrics SDK itself when they are installed;
        # what tracing would import is the trace SDK and an exporter.
        "otel_imported": any(m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter"))
                             for m in sys.modules),
        "tracer": tracing._tracer is not None or tracing._trace is not None,
        "traceparents": [goal.traceparent, child.traceparent],
        "doc": doc.decode(),
    }))

anyio.run(main)
"""


def _run_script(**env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BLACKBOARD_"))}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**clean, **env},
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(90)
def test_off_imports_nothing_and_stores_nothing() -> None:
    result = _run_script()
    assert result["traced"] is False and result["otel_imported"] is False and result["tracer"] is False
    assert result["traceparents"] == [None, None]
    assert "traceparent" not in result["doc"]


@pytest.mark.timeout(90)
def test_configured_endpoint_exports_otlp_http() -> None:
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = _run_script(ENDPOINT=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert result["traced"] is True
    goal_tp, child_tp = result["traceparents"]
    assert goal_tp and child_tp and goal_tp.split("-")[1] == child_tp.split("-")[1]
    assert child_tp in result["doc"]
    assert received and all(path == "/v1/traces" for path, _ in received)
    body = b"".join(b for _, b in received)
    for name in (b"post t.a", b"wait t.a", b"complete t.a", b"blackboard", b"d1"):
        assert name in body, name
    assert bytes.fromhex(goal_tp.split("-")[1]) in body  # the trace id, as OTLP's bytes


async def test_an_http_post_with_a_traceparent_header_joins_the_callers_trace(
    board_url: str, spans: InMemorySpanExporter
) -> None:
    from tests.test_http import client_for, running

    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with running(board_url) as daemon, client_for(daemon) as c:
        joined = (await c.post("/v1/items", json={"kind": "t.x"}, headers={"traceparent": caller})).json()
        bad = (await c.post("/v1/items", json={"kind": "t.x"}, headers={"traceparent": "00-zz-1"})).json()
        alone = (await c.post("/v1/items", json={"kind": "t.x"})).json()
    found = {s.context.span_id: s for s in spans.get_finished_spans()}
    trace_id, span_id = ids_of(joined["traceparent"])
    assert trace_id == 0x0AF7651916CD43DD8448EB211C80319C  # the caller's trace
    assert parent_id(found[span_id]) == 0xB7AD6B7169203331  # under the caller's span
    for other in (bad, alone):  # an invalid header is ignored: the post starts its own trace
        trace, span = ids_of(other["traceparent"])
        assert trace != trace_id and found[span].parent is None


async def test_a_daemon_turns_tracing_on_from_its_settings_and_off_when_it_stops(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")  # configured, exporting nowhere that waits
    assert not tracing.enabled
    daemon = Daemon(daemon_settings(board_url, unique_board(), []))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert tracing.enabled  # a program embedding a Daemon traces as `blackboard run` does
        goal = await daemon.board.post("t.x")
        assert goal.traceparent is not None
        daemon.stop()
    assert not tracing.enabled  # the last daemon that configured it flushed and stopped it
