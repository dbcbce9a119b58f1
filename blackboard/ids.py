"""Item ids: ULIDs, sortable by creation time; children's ids derived from their parent.

A child's id keeps its parent's first 10 characters (its goal's time) and last 2, and takes the
14 between from a hash of (parent id, slot), so the same handler run twice posts the same ids
(the board writes each once) and a goal's items sort together, oldest goal first. The kept 12
characters are the id's route: on a board of K shards an item lives on shard `shard_of(id, K)`,
computed from the id alone, so a goal and everything under it share a shard and no lookup is
needed to find any item. The last 2 are in the route because ULIDs made in one millisecond
count up from there (python-ulid is monotonic): a batch of goals posted at once still spreads.
"""

from __future__ import annotations

import hashlib
import os
import zlib

from ulid import ULID

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
HEAD, TAIL = 10, 2  # characters of an id's route: its first (time) and its last (counting up)
_PAD = "_"  # pads an id shorter than HEAD + TAIL (ULIDs have no '_')
_MIDDLE = 26 - HEAD - TAIL
REVIEW_SUFFIX = ":review"  # a guarded item's review: lib.lua appends it to the item's id


def new_id() -> str:
    return str(ULID())


def _padded(item_id: str) -> str:
    """The id a route is read from: a review item's is its item's (see `route`), padded."""
    while item_id.endswith(REVIEW_SUFFIX):  # a review may be guarded too
        item_id = item_id[: -len(REVIEW_SUFFIX)]
    return item_id if len(item_id) >= HEAD + TAIL else item_id.ljust(HEAD + TAIL, _PAD)


def route(item_id: str) -> str:
    """The part of an id that chooses its shard (the same for a goal and all it holds).

    A guard's review item is `<id>:review` (made in lib.lua, in the same step as the item), so
    it routes as the item it reviews, and so do the ids made under it."""
    p = _padded(item_id)
    return (p[:HEAD] + p[-TAIL:]).rstrip(_PAD)


def shard_of(item_id: str, shards: int) -> int:
    """The shard (0 to shards-1) that holds `item_id` on a board of `shards` shards."""
    if shards == 1:
        return 0
    return zlib.crc32(route(item_id).encode()) % shards


def _text(n: int, length: int) -> str:
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(length)))


def _with_route_of(ref: str, middle: int) -> str:
    p = _padded(ref)
    return p[:HEAD] + _text(middle, _MIDDLE) + p[-TAIL:]


def child_id(parent_id: str, slot: str) -> str:
    """A deterministic id for the output in `slot` (e.g. 'o3') of `parent_id`."""
    digest = hashlib.blake2b(f"{parent_id}/{slot}".encode(), digest_size=10).digest()
    return _with_route_of(parent_id, int.from_bytes(digest, "big"))


def near_id(ref: str) -> str:
    """A new unique id on the same shard as `ref` (for an item posted under or after it)."""
    return _with_route_of(ref, int.from_bytes(os.urandom(9), "big"))


def id_on_shard(shard: int, shards: int) -> str:
    """A new id, of this millisecond, that lands on `shard` (its random part chosen to)."""
    head = new_id()[:HEAD]
    middle = _text(int.from_bytes(os.urandom(9), "big"), _MIDDLE)  # random: no clash with ULIDs
    for n in range(32**TAIL):
        candidate = head + middle + _text(n, TAIL)
        if shard_of(candidate, shards) == shard:
            return candidate
    raise ValueError(f"no id lands on shard {shard} of {shards}")  # pragma: no cover - shards <= 256


def key_shard(key: str, shards: int) -> int:
    """The shard of a goal posted with idempotency key `key` (so a repeat finds the first)."""
    return zlib.crc32(key.encode()) % shards
