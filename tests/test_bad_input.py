"""Every bad input raises a typed error naming the field, and the board is unchanged."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from blackboard import (
    Board,
    DependencyCycle,
    InvalidInput,
    InvalidKind,
    InvalidURL,
    NewItem,
    PayloadTooLarge,
    SchemaViolation,
    UnknownItem,
    UnknownKind,
)
from tests.conftest import unique_board

pytestmark = pytest.mark.anyio


async def snapshot(board: Board) -> dict[str, Any]:
    """Every key of the board and its full content."""
    out: dict[str, Any] = {}
    async for key in board.redis.scan_iter(match=board.keys.tag + "*"):
        kind = (await board.redis.type(key)).decode()
        if kind == "hash":
            out[key] = await board.redis.hgetall(key)
        elif kind == "zset":
            out[key] = await board.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = await board.redis.xrange(key)
        elif kind == "list":
            out[key] = await board.redis.lrange(key, 0, -1)
        elif kind == "set":
            out[key] = await board.redis.smembers(key)
        else:
            out[key] = await board.redis.get(key)
    return out


class Task(BaseModel):
    question: str
    depth: int


@pytest.fixture
async def strict_board(board_url: str) -> AsyncIterator[Board]:
    b = await Board.connect(board_url, board=unique_board(), strict=True, max_payload_bytes=1000)
    await b.register_kind("research.task", Task)
    await b.register_kind("note", {"type": "object", "properties": {"text": {"type": "string"}}})
    await b.post("research.task", {"question": "q", "depth": 1})
    yield b
    await b.close()


BAD_POSTS = [
    # (kwargs, error type, field named, words in message)
    ({"kind": ""}, InvalidKind, "kind", "non-empty"),
    ({"kind": "Bad Kind"}, InvalidKind, "kind", "dot-separated"),
    ({"kind": "a..b"}, InvalidKind, "kind", "dot-separated"),
    ({"kind": "x" * 201}, InvalidKind, "kind", "at most 200"),
    ({"kind": "unknown.kind"}, UnknownKind, "kind", "strict"),
    (
        {"kind": "research.task", "payload": {"question": 1, "depth": 1}},
        SchemaViolation,
        "payload.question",
        "string",
    ),
    ({"kind": "research.task", "payload": {"question": "q"}}, SchemaViolation, "payload.depth", "required"),
    ({"kind": "note", "payload": {"text": 5}}, SchemaViolation, "payload.text", "not of type"),
    (
        {"kind": "note", "payload": {"text": "x" * 2000}},
        PayloadTooLarge,
        "payload",
        "over the board's limit of 1000",
    ),
    (
        {"kind": "note", "payload": {"text": "x"}, "priority": -1},
        InvalidInput,
        "priority",
        "greater than or equal",
    ),
    (
        {"kind": "note", "payload": {"text": "x"}, "priority": math.nan},
        InvalidInput,
        "priority",
        "finite number",
    ),
    ({"kind": "note", "payload": {"text": "x"}, "delay": -5}, InvalidInput, "delay", ">= 0"),
    ({"kind": "note", "payload": {"text": "x"}, "delay": math.nan}, InvalidInput, "delay", "finite"),
    (
        {"kind": "note", "payload": {"text": "x"}, "not_before": math.inf},
        InvalidInput,
        "not_before",
        "finite",
    ),
    ({"kind": "note", "payload": {"text": "x"}, "max_attempts": 0}, InvalidInput, "max_attempts", "greater"),
    (
        {"kind": "note", "payload": {"text": "x"}, "after": ["no-such-item"]},
        UnknownItem,
        "after",
        "no-such-item",
    ),
    (
        {"kind": "note", "payload": {"text": "x"}, "parent": "no-such-item"},
        UnknownItem,
        "parent",
        "no-such-item",
    ),
    ({"kind": "note", "payload": {"text": "x"}, "after": ["bad|id"]}, InvalidInput, "after[0]", "item id"),
    ({"kind": "note", "payload": {"text": "x"}, "after": ["same", "same"]}, InvalidInput, "after", "twice"),
    (
        {"kind": "note", "payload": {"text": "x"}, "id": "me", "after": ["me"]},
        DependencyCycle,
        "after[0]",
        "itself",
    ),
    ({"kind": "note", "payload": {"text": "x"}, "bogus": 1}, InvalidInput, "bogus", "Extra inputs"),
]


@pytest.mark.parametrize(("kwargs", "error", "field", "words"), BAD_POSTS, ids=lambda v: str(v)[:40])
async def test_bad_post_is_rejected_and_writes_nothing(
    strict_board: Board, kwargs: dict[str, Any], error: type[Exception], field: str, words: str
) -> None:
    before = await snapshot(strict_board)
    kwargs = dict(kwargs)
    with pytest.raises(error) as caught:
        await strict_board.post(kwargs.pop("kind"), kwargs.pop("payload", None), **kwargs)
    assert caught.value.field == field  # type: ignore[attr-defined]
    assert words in str(caught.value)
    assert await snapshot(strict_board) == before


async def test_unserialisable_payload_on_an_open_board(board: Board) -> None:
    before = await snapshot(board)
    with pytest.raises(InvalidInput, match="payload: expected JSON-serialisable"):
        await board.post("k", {"when": object()})
    with pytest.raises(InvalidInput, match="payload: expected JSON-serialisable"):
        await board.post("k", {"x": math.nan})
    assert await snapshot(board) == before


async def test_cycle_inside_a_batch_is_rejected_whole(board: Board) -> None:
    before = await snapshot(board)
    batch = [
        NewItem(kind="k", id="a", after=("c",)),
        NewItem(kind="k", id="b", after=("a",)),
        NewItem(kind="k", id="c", after=("b",)),
        NewItem(kind="k", id="fine"),
    ]
    with pytest.raises(DependencyCycle, match="cycle: a -> c -> b -> a"):
        await board.post_many(batch)
    assert await snapshot(board) == before


async def test_one_bad_item_rejects_the_whole_batch(board: Board) -> None:
    before = await snapshot(board)
    batch = [NewItem(kind="k"), NewItem(kind="k", after=("ghost",))]
    with pytest.raises(UnknownItem) as caught:
        await board.post_many(batch)
    assert caught.value.field == "items[1].after"
    assert await snapshot(board) == before


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda b: b.claim("w", ["k"], n=0), "n"),
        (lambda b: b.claim("w", ["k"], lease=0), "lease"),
        (lambda b: b.claim("w", ["Not A Kind"]), "kinds[0]"),
        (lambda b: b.mark("a|b", 1), "id"),
        (lambda b: b.query(status="nope"), "status"),
        (lambda b: b.query(limit=0), "limit"),
        (lambda b: b.requeue(["a|b"]), "ids[0]"),
    ],
)
async def test_bad_arguments_name_their_field(board: Board, call: Any, field: str) -> None:
    before = await snapshot(board)
    with pytest.raises(InvalidInput) as caught:
        await call(board)
    assert caught.value.field == field
    assert await snapshot(board) == before


async def test_bad_mark_strength(board: Board) -> None:
    item = await board.post("k")
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(InvalidInput, match="strength"):
            await board.mark(item.id, bad)


@pytest.mark.parametrize(
    "url",
    ["", "localhost:6379", "ftp://x", "redis+cluster://", "redis+cluster://host", "redis+sentinel://h:1"],
)
async def test_malformed_urls(url: str) -> None:
    with pytest.raises(InvalidURL) as caught:
        await Board.connect(url)
    assert caught.value.field == "url"


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "a{b}", "a:b"])
async def test_bad_board_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="board"):
        await Board.connect("memory://", board=name)


@pytest.mark.unsharded  # items wait on other goals' items
async def test_bad_output_is_named_by_its_place_in_the_call(board: Board) -> None:
    await board.post("g")
    [claim] = await board.claim("w", ["g"])
    before = await snapshot(board)
    # outputs[1] is sorted ahead of outputs[0] (which waits on it) before the script sees them
    outputs = [
        NewItem(kind="k", id="late", after=("first",)),
        NewItem(kind="k", id="first", after=("ghost",)),
    ]
    with pytest.raises(UnknownItem) as caught:
        await board.complete(claim, None, outputs)
    assert caught.value.field == "outputs[1].after" and "ghost" in str(caught.value)
    assert await snapshot(board) == before
