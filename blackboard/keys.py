"""Redis key names of one board. Every key carries the hash tag of its shard.

A board of one shard has the tag `{bb:<board>}`; a board of K shards has K tags, `{bb:<board>:0}`
to `{bb:<board>:K-1}`, and each goal lives wholly in one of them (`blackboard.ids.shard_of`). One
tag means one Redis Cluster slot, so every multi-key script is atomic and legal on Cluster.
The order of `fixed` is the KEYS layout that `lua/lib.lua` documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from blackboard.errors import InvalidInput

BOARD_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

FIXED_NAMES = (
    "meta",
    "kind",
    "items",
    "state",
    "results",
    "status",
    "waiting",
    "deps",
    "children",
    "lineage",
    "counts",
    "idem",
    "events",
    "kinds",
    "guards",
    "usage",
    "totals",
    "audit",
    "budgets",
    "repeats",
    "approvals",
    "paused",
    "waits",
)


MAX_SHARDS = 256


def check_shards(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise InvalidInput("shards", f"expected a shard count from 1 to {MAX_SHARDS}, got {value!r}")
    return value


def check_board_name(name: object) -> str:
    if not isinstance(name, str) or not BOARD_RE.match(name):
        raise InvalidInput("board", f"expected 1-64 letters, digits, '_', '.' or '-', got {name!r}")
    return name


@dataclass(frozen=True)
class Keyspace:
    """Key names of one shard of a board (`shard=None`: the one shard of an unsharded board)."""

    board: str
    shard: int | None = None
    tag: str = field(init=False)
    fixed: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        check_board_name(self.board)
        tag = "{bb:" + self.board + ("}" if self.shard is None else f":{self.shard}}}")
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "fixed", tuple(f"{tag}:{n}" for n in FIXED_NAMES))

    @property
    def index(self) -> int:
        """The shard's number (0 for an unsharded board)."""
        return self.shard or 0

    def __getattr__(self, name: str) -> str:
        # Named access to the fixed keys: ks.state, ks.lineage, ...
        if name in FIXED_NAMES:
            return f"{self.tag}:{name}"
        raise AttributeError(name)

    @property
    def schemas(self) -> str:
        """Hash kind -> JSON schema (written by `Board.register_kind`, not by scripts)."""
        return f"{self.tag}:schemas"

    def memory(self, agent: str) -> str:
        """Hash of one agent's private scratch store (`ctx.memory`, blackboard/memory.py)."""
        return f"{self.tag}:memory:{agent}"

    @property
    def policy(self) -> str:
        """Hash version -> policy JSON (written by `lua/policy_load.lua`); meta holds the current."""
        return f"{self.tag}:policy"

    def kind_keys(self, kind: str) -> tuple[str, str, str, str]:
        """(ready, delayed, leased, wake) of one kind."""
        t = self.tag
        return (f"{t}:ready:{kind}", f"{t}:delayed:{kind}", f"{t}:leased:{kind}", f"{t}:wake:{kind}")

    def ratelimit(self, model: str) -> str:
        """Hash holding one model's shared request/token buckets (see lua/ratelimit.lua)."""
        return f"{self.tag}:ratelimit:{model}"

    def wake(self, kind: str) -> str:
        return f"{self.tag}:wake:{kind}"


def shard_keyspaces(board: str, shards: int) -> tuple[Keyspace, ...]:
    """The keyspaces of a board of `shards` shards (one untagged-by-number shard when 1)."""
    check_shards(shards)
    if shards == 1:
        return (Keyspace(board),)
    return tuple(Keyspace(board, i) for i in range(shards))
