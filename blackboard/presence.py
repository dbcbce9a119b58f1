"""Daemons on a board: each writes a heartbeat record, so any process can list live agents.

The record lives in the board's `daemons` hash (one field per daemon, JSON). A daemon whose
beat is older than `stale_after` is shown as dead; records of daemons dead for a day are
pruned by whoever lists them. This is bookkeeping, not item state, so plain commands suffice.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from blackboard.board import Board

PRUNE_AFTER = 86_400.0


class AgentInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    consumes: tuple[str, ...]
    produces: tuple[str, ...] = ()
    concurrency: int = 1
    in_flight: int = 0
    completed: int = 0
    source: str = ""


class DaemonInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    host: str
    pid: int
    started_at: float
    beat_at: float
    ready: bool = True
    http: str | None = None
    agents: tuple[AgentInfo, ...] = ()
    plugin_errors: dict[str, str] = {}
    live: bool = True


def new_daemon_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000) % 10**6}"


def key(board: Board) -> str:
    return f"{board.keys.tag}:daemons"


async def beat(board: Board, info: DaemonInfo) -> None:
    text = info.model_dump_json()
    await board.retrying(lambda: board.redis.hset(key(board), info.id, text))


async def leave(board: Board, daemon_id: str) -> None:
    await board.retrying(lambda: board.redis.hdel(key(board), daemon_id))


async def daemons(board: Board, stale_after: float = 10.0) -> list[DaemonInfo]:
    """Every daemon on the board, live or dead (by heartbeat age), newest first."""
    raw: dict[bytes, bytes] = await board.retrying(lambda: board.redis.hgetall(key(board)))
    now, out, prune = time.time(), [], []
    for field, value in raw.items():
        data: dict[str, Any] = json.loads(value)
        age = now - data["beat_at"]
        if age > PRUNE_AFTER:
            prune.append(field)
            continue
        out.append(DaemonInfo.model_validate({**data, "live": age <= stale_after}))
    if prune:
        await board.retrying(lambda: board.redis.hdel(key(board), *prune))
    return sorted(out, key=lambda d: (not d.live, -d.beat_at))
