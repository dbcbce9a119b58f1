"""Small pieces: ids, kinds and globs, keys, the exported API."""

from __future__ import annotations

import types

import blackboard
from blackboard import ids, kinds
from blackboard.keys import Keyspace


def test_child_ids_are_deterministic_and_keep_the_parent_time() -> None:
    parent = ids.new_id()
    a, b = ids.child_id(parent, "o0"), ids.child_id(parent, "o1")
    assert a == ids.child_id(parent, "o0") and a != b
    assert a[:10] == parent[:10] and len(a) == len(parent) == 26


def test_new_ids_sort_by_creation() -> None:
    made = [ids.new_id() for _ in range(50)]
    assert len(set(made)) == 50
    assert [m[:10] for m in made] == sorted(m[:10] for m in made)


def test_glob_expansion() -> None:
    known = ["a.b", "a.c", "b.a"]
    assert kinds.expand(["a.*"], known) == ["a.b", "a.c"]
    assert kinds.expand(["a.*", "b.a", "zzz"], known) == ["a.b", "a.c", "b.a", "zzz"]


def test_every_key_shares_the_board_hash_tag() -> None:
    ks = Keyspace("my-board")
    assert all(k.startswith("{bb:my-board}:") for k in (*ks.fixed, *ks.kind_keys("x.y"), ks.schemas))
    assert len(set(ks.fixed)) == len(ks.fixed) == 17


def test_exports_match_all() -> None:
    exported = {
        n
        for n in dir(blackboard)
        if not n.startswith("_") and not isinstance(getattr(blackboard, n), types.ModuleType)
    }
    assert exported - {"annotations"} == set(blackboard.__all__)
    for name in blackboard.__all__:
        assert getattr(getattr(blackboard, name), "__module__", "blackboard").startswith("blackboard")
