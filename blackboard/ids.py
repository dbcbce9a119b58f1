"""Item ids: ULIDs, sortable by creation time; children's ids derived from their parent.

A child's id keeps its parent's timestamp and takes the rest from a hash of (parent id, slot),
so the same handler run twice posts the same ids (the board writes each once) and a goal's
items sort together, oldest goal first.
"""

from __future__ import annotations

import hashlib

from ulid import ULID

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    return str(ULID())


def child_id(parent_id: str, slot: str) -> str:
    """A deterministic id for the output in `slot` (e.g. 'o3') of `parent_id`."""
    digest = hashlib.blake2b(f"{parent_id}/{slot}".encode(), digest_size=10).digest()
    n = int.from_bytes(digest, "big")
    tail = "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(16)))
    return parent_id[:10] + tail
