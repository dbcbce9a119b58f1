"""Redis ACLs: a daemon connected as board A's ACL user does all its work on A and cannot read or
write any key of board B, however it asks (commands, scripts). Real Redis only: fakeredis has
no ACLs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError
from typer.testing import CliRunner

from blackboard import Board, NewItem, acl, audit
from blackboard.cli import app
from blackboard.keys import Keyspace
from tests.conftest import unique_board
from tests.support.packs import daemon_settings

pytestmark = [pytest.mark.anyio, pytest.mark.redis_only]

AGENT = """
from blackboard import agent

@agent(name="echo", consumes=["acl.task"], produces=["acl.note"])
async def echo(item, ctx):
    await ctx.post("acl.note", {"from": item.id})
    return {"echo": item.payload}
"""
POLICY = "roles:\n  all: {post: ['*'], claim: ['*']}\nprincipals:\n  '*': [all]\n"


@pytest.fixture
def boards(redis_url: str) -> Iterator[tuple[str, str, str]]:
    """Board A's ACL user (created for the test, deleted after) and its URL; board B's name."""
    a, b = unique_board(), unique_board()
    command, password = acl.render(a, "daemon")
    user = acl.user_name(a, "daemon")

    async def run(*args: str) -> None:
        admin = aioredis.from_url(redis_url)
        try:
            await admin.execute_command(*args)
        finally:
            await admin.aclose()

    anyio.run(run, *command.split()[:1], *command.split()[1:])
    parts = urlsplit(redis_url)
    yield f"redis://{user}:{password}@{parts.hostname}:{parts.port}", a, b
    anyio.run(run, "ACL", "DELUSER", user)


async def test_a_daemon_runs_as_its_boards_acl_user_and_cannot_reach_another_board(
    boards: tuple[str, str, str], redis_url: str, tmp_path: Path
) -> None:
    from blackboard.daemon import Daemon

    url, a, b = boards
    async with await Board.connect(redis_url, board=b) as other:  # board B, as the admin
        secret = await other.post("b.secret", {"pin": 1234}, actor="cli")

    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echo.py").write_text(AGENT)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    settings = daemon_settings(
        url, a, [tmp_path / "agents"], policies=[tmp_path / "policies"], audit_dir=tmp_path / "audit"
    )
    daemon = Daemon(settings)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert daemon.ready
        async with await Board.connect(url, board=a) as mine:  # everything on A works as the user
            [task] = await mine.post_many([NewItem(kind="acl.task", payload={"x": 1})], actor="cli")
            done = await mine.wait(task.id, timeout=15)
            assert done.result == {"echo": {"x": 1}} and (await mine.tree(task.id)).children
            with anyio.fail_after(15):
                while (await audit.exported(mine)).seq < (await audit.head(mine)).seq:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            assert (await audit.verify_board(mine))[0] is None
        daemon.stop()

    # As board A's user, nothing of board B: not by command, not by script, not by wildcard.
    raw = aioredis.from_url(url)
    other_keys = Keyspace(b)
    try:
        for attempt in (
            raw.hget(other_keys.state, secret.id),
            raw.hset(other_keys.state, secret.id, "{}"),
            raw.xrange(other_keys.audit),
            raw.delete(other_keys.items),
            raw.keys("*"),
            raw.flushall(),
            raw.eval("return redis.call('HGET', KEYS[1], ARGV[1])", 1, other_keys.items, secret.id),
        ):
            with pytest.raises((NoPermissionError, ResponseError), match=r"(?i)no ?perm|permission"):
                await attempt
    finally:
        await raw.aclose()
    with pytest.raises(NoPermissionError):  # a board handle on B: refused as it connects
        await Board.connect(url, board=b)
    async with await Board.connect(redis_url, board=b) as other:  # and B is as it was
        assert (await other.get(secret.id)).payload == {"pin": 1234}


def test_acl_render_prints_a_setuser_for_the_board() -> None:
    r = CliRunner().invoke(app, ["acl", "render", "--board", "research", "--principal", "daemon"])
    assert r.exit_code == 0, r.output
    line = r.stdout.strip().splitlines()[0]
    assert line.startswith("ACL SETUSER bb-research-daemon reset on >")
    assert "~{bb:research}:*" in line and "-@all" in line and "+evalsha" in line and "+flushall" not in line
    r = CliRunner().invoke(app, ["acl", "render", "--board", "bad board", "--principal", "d"])
    assert r.exit_code != 0
