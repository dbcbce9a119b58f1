"""Fixtures: every board test runs against `memory://` (fakeredis) and a real redis-server."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from blackboard import Board
from tests.support import redis_server
from tests.support.redis_server import RedisServer, start_cluster

_names = itertools.count()
# Boards of the `board` and `live_board` fixtures have this many shards (1: unsharded); a run
# with BLACKBOARD_TEST_SHARDS=3 holds the whole suite to what sharding must keep.
SHARDS = int(os.environ.get("BLACKBOARD_TEST_SHARDS", "1"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """A test that configures logging (e.g. by running the CLI) must not leak it to the next."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the test session's own, on a free port."""
    redis_server.require()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def board_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://test-{os.getpid()}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A 3-master Redis Cluster of the test session's own (real redis-server processes)."""
    redis_server.require()
    nodes = start_cluster(tmp_path_factory.mktemp("cluster"), masters=3)
    try:
        yield nodes
    finally:
        for node in nodes:  # by PID, the processes this fixture started
            node.stop()


def cluster_url(nodes: list[RedisServer]) -> str:
    return f"redis+cluster://127.0.0.1:{nodes[1].port}"  # any seed node will do


@pytest.fixture(params=["memory", "redis", "cluster"])
def any_url(request: pytest.FixtureRequest) -> str:
    """memory://, the session's redis-server, then the session's cluster."""
    if request.param == "memory":
        return f"memory://any-{unique_board()}"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return cluster_url(request.getfixturevalue("cluster"))


class FakeClock:
    """A clock the test moves by hand; boards given it stamp every script with its time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def unique_board() -> str:
    return f"t{os.getpid()}-{next(_names)}-{time.time_ns() % 10**9}"


def shards_for(request: pytest.FixtureRequest) -> int:
    """SHARDS, except for a test marked `unsharded`: one that relies on what only a board of
    one shard promises (claim order across goals, items waiting on other goals' items)."""
    return 1 if request.node.get_closest_marker("unsharded") else SHARDS


@pytest.fixture
async def board(board_url: str, clock: FakeClock, request: pytest.FixtureRequest) -> AsyncIterator[Board]:
    """A fresh, empty board on each backend, with a hand-moved clock."""
    b = await Board.connect(board_url, board=unique_board(), clock=clock, shards=shards_for(request))
    yield b
    await b.close()


@pytest.fixture
async def live_board(board_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Board]:
    """A fresh board on each backend that uses Redis's own clock."""
    b = await Board.connect(board_url, board=unique_board(), shards=shards_for(request))
    yield b
    await b.close()


@pytest.fixture
def artifacts() -> Path:
    path = Path(__file__).parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
