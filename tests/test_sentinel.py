"""A board reached through Redis Sentinel (a real sentinel process: `redis-server --sentinel`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from blackboard import Board, NewItem, Status
from tests.conftest import unique_board
from tests.support import redis_server
from tests.support.redis_server import RedisServer, free_port, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.redis_only, pytest.mark.timeout(60)]


def _sentinel_knows_master(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "sentinel", "get-master-addr-by-name", "main"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout
    return "127.0.0.1" in out


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    binary = redis_server.require()
    master = RedisServer(tmp_path / "master").start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor main 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds main 5000\n"
    )
    proc = subprocess.Popen(
        [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: _sentinel_knows_master(port), 10, 0.05, "the sentinel to know its master")
        yield f"redis+sentinel://127.0.0.1:{port}/main"
    finally:
        proc.terminate()
        proc.wait(10)
        master.stop()


async def test_board_works_through_sentinel(sentinel_url: str) -> None:
    board = await Board.connect(sentinel_url, board=unique_board())
    try:
        goal = await board.post("s.goal")
        [claim] = await board.claim("w", ["s.goal"])
        outs = await board.complete(claim, {"ok": True}, [NewItem(kind="s.step") for _ in range(3)])
        claims = await board.claim("w", ["s.step"], n=3)
        await board.complete_many([(c, c.id, ()) for c in claims])
        tree = await board.tree(goal.id)
        assert [i.status for i in tree.walk()] == [Status.DONE] * 4
        assert sorted(o.id for o in outs) == sorted(c.id for c in claims)
        assert await board.wait_for_work(["s.none"], timeout=0.1) is False  # blocking read works
    finally:
        await board.close()
