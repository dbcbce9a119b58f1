"""The Lua scripts, loaded once from `blackboard/lua/` and registered on a client.

Each operation is one file; `lib.lua` (shared helpers and the KEYS layout) is prepended to it,
so a script is still one self-contained EVAL. Registered scripts run by EVALSHA and reload
themselves after a NOSCRIPT (e.g. after Redis restarted).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

OPERATIONS = (
    "post",
    "claim",
    "heartbeat",
    "complete",
    "fail",
    "release",
    "reap",
    "cancel",
    "mark",
    "requeue",
    "ratelimit",
    "audit_trim",
    "policy_load",
    "policy_clear",
    "deny",
    "approve",
    "pause",
    "purge",
)


@cache
def source(name: str) -> str:
    """Full source of one operation: lib.lua followed by the operation's file."""
    lua = files("blackboard") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Scripts:
    """One registered script per operation (redis-py `AsyncScript` objects)."""

    post: Any
    claim: Any
    heartbeat: Any
    complete: Any
    fail: Any
    release: Any
    reap: Any
    cancel: Any
    mark: Any
    requeue: Any
    ratelimit: Any
    audit_trim: Any
    policy_load: Any
    policy_clear: Any
    deny: Any
    approve: Any
    pause: Any
    purge: Any

    @classmethod
    def register(cls, client: Any) -> Scripts:
        return cls(**{name: client.register_script(source(name)) for name in OPERATIONS})
