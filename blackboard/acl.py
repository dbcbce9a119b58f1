"""Redis ACL rules that confine a connection to one board: isolation below the runtime.

Kind-level rules (`blackboard.policy`) are enforced by the runtime, so a plugin that opens its
own Redis connection goes around them. Redis ACLs don't depend on the client: a daemon that
connects as its board's ACL user (`redis://USER:PASSWORD@host:6379`) can touch only keys under
that board's hash tag, with only the commands the runtime sends, and Redis checks the commands
a Lua script runs against the same rules. What this does *not* give: isolation between agents
of one daemon (they share its connection and user) or between kinds of one board.
"""

from __future__ import annotations

import secrets

from blackboard.keys import Keyspace, check_board_name

# Every command the runtime sends, directly or from its Lua scripts (lua/*.lua); a test runs a
# daemon as such a user through posts, claims, completions, policies and audit export.
COMMANDS = (
    # scripts (EVALSHA, reloaded with SCRIPT LOAD after a restart) and transactions
    "evalsha", "eval", "script|load", "multi", "exec", "discard",
    # hashes, sorted sets, sets, lists, strings, streams
    "hget", "hmget", "hset", "hsetnx", "hdel", "hgetall", "hexists", "hincrby",
    "zadd", "zrem", "zcard", "zscore", "zrange", "zrangebyscore", "zrangebylex", "zlexcount",
    "sadd", "smembers", "rpush", "llen", "blpop", "lpop", "ltrim",
    "get", "set", "del", "exists", "unlink", "expire", "pexpire", "pttl",
    "xadd", "xtrim", "xlen", "xrange", "xrevrange", "xread",
    # connection and clock
    "ping", "hello", "auth", "select", "client|setname", "time",
)  # fmt: skip


def user_name(board: str, principal: str) -> str:
    return f"bb-{check_board_name(board)}-{principal}"


def render(board: str, principal: str, password: str | None = None) -> tuple[str, str]:
    """The `ACL SETUSER` command for `principal` on `board`, and the password it sets (a fresh
    random one unless given)."""
    password = password or secrets.token_urlsafe(24)
    if any(c.isspace() for c in password) or not principal.replace("-", "").replace("_", "").isalnum():
        raise ValueError("principal: letters, digits, '-' and '_'; password: no spaces")
    keys = Keyspace(board)
    shards = Keyspace(board, 0).tag.replace(":0}", ":*}")  # {bb:<board>:*}: any shard's tag
    rule = [
        "ACL SETUSER",
        user_name(board, principal),
        "reset",  # from nothing: no keys, no commands, no channels
        "on",
        f">{password}",
        f"~{keys.tag}:*",  # every key of the board, and only those
        f"~{shards}:*",  # ... or of its shards, when it has several
        "resetchannels",  # the runtime uses no pub/sub
        "-@all",
        *(f"+{c}" for c in COMMANDS),
    ]
    return " ".join(rule), password
