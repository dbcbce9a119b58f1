"""The board on a real 3-master Redis Cluster: the claim race holds, and each board's keys sit in
one slot (its hash tag), so boards on different masters run side by side."""

from __future__ import annotations

import anyio
import pytest
import redis

from blackboard import Board, NewItem, connection
from tests.conftest import cluster_url, unique_board
from tests.support.redis_server import RedisServer
from tests.test_race import race

pytestmark = pytest.mark.anyio


def keys_by_node(nodes: list[RedisServer]) -> dict[int, set[str]]:
    """Every key stored on each node (by port), read from the node itself."""
    out = {}
    for node in nodes:
        with redis.Redis(port=node.port) as r:
            out[node.port] = {k.decode() for k in r.keys("*")}
    return out


def master_of(board: Board) -> int:
    """Port of the master that serves the board's hash-tag slot."""
    return int(board.redis.get_node_from_key(board.keys.tag).port)


async def boards_on_different_masters(nodes: list[RedisServer]) -> tuple[Board, Board]:
    first = await Board.connect(cluster_url(nodes), board=unique_board())
    for _ in range(100):
        second = await Board.connect(cluster_url(nodes), board=unique_board())
        if master_of(second) != master_of(first):
            return first, second
        await second.close()
    raise AssertionError("no board name found whose hash tag lands on another master")


def assert_one_slot(board: Board, stored: dict[int, set[str]]) -> None:
    """Every key of `board` is on the master of its slot, and on no other node."""
    mine = {port: {k for k in keys if board.keys.tag in k} for port, keys in stored.items()}
    assert {port for port, keys in mine.items() if keys} == {master_of(board)}
    slots = {board.redis.keyslot(k) for k in mine[master_of(board)]}
    assert slots == {board.redis.keyslot(board.keys.tag)}
    assert board.keys.state in mine[master_of(board)]


@pytest.mark.timeout(120)
async def test_concurrent_claimers_on_cluster(cluster: list[RedisServer]) -> None:
    async with await Board.connect(cluster_url(cluster), board=unique_board()) as board:
        await race(board, claimers=50)
        assert_one_slot(board, keys_by_node(cluster))


@pytest.mark.timeout(120)
async def test_boards_on_different_masters_race_side_by_side(cluster: list[RedisServer]) -> None:
    a, b = await boards_on_different_masters(cluster)
    try:
        assert master_of(a) != master_of(b)
        async with anyio.create_task_group() as tg:
            tg.start_soon(race, a)
            tg.start_soon(race, b)
        stored = keys_by_node(cluster)
        assert_one_slot(a, stored)
        assert_one_slot(b, stored)
    finally:
        await a.close()
        await b.close()


def connected_clients(port: int) -> int:
    with redis.Redis(port=port) as r:
        return int(r.info("clients")["connected_clients"])


@pytest.mark.timeout(90)
async def test_thousands_of_agents_on_one_handle_queue_for_redis(any_url: str) -> None:
    """5,000 agents on one handle claim at once: they wait their turn for one of MAX_IN_FLIGHT
    slots rather than open a connection each (redis-py's cluster client fails at once when a
    node's pool is empty; a single-node pool would open thousands of connections)."""
    # fakeredis runs each claim's Lua in Python, and has no pool to run dry: fewer there.
    agents, items = (1000, 200) if any_url.startswith("memory://") else (5000, 600)
    async with await Board.connect(any_url, board=unique_board()) as board:
        posted = await board.post_many([NewItem(kind="burst", payload={"n": n}) for n in range(items)])
        claimed: list[str] = []

        async def agent(n: int) -> None:
            claimed.extend(c.id for c in await board.claim(f"agent-{n}", ["burst"]))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(agents):
                    tg.start_soon(agent, n)
        assert sorted(claimed) == sorted(i.id for i in posted)  # each item once, nobody failed
        if any_url.startswith("memory://"):
            return
        port = (
            int(board.redis.get_node_from_key(board.keys.tag).port)
            if any_url.startswith("redis+cluster://")
            else int(any_url.rsplit(":", 1)[1])
        )
        # The pool's connections stay open once made, so this is the most the burst needed
        # (plus the test's own connection and, on the shared server, a few others).
        assert connected_clients(port) <= connection.MAX_IN_FLIGHT + 20
