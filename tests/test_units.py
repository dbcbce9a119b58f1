"""Small pieces: ids, kinds and globs, keys, the exported API."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import blackboard
from blackboard import ids, kinds
from blackboard.errors import InvalidInput
from blackboard.keys import Keyspace, shard_keyspaces

ID_CHARS = st.text("ABCDEFGHJKMNPQRSTVWXYZ0123456789abcz_.:-", min_size=1, max_size=40)


def test_child_ids_are_deterministic_and_keep_the_parent_time() -> None:
    parent = ids.new_id()
    a, b = ids.child_id(parent, "o0"), ids.child_id(parent, "o1")
    assert a == ids.child_id(parent, "o0") and a != b
    assert a[:10] == parent[:10] and a[-2:] == parent[-2:] and len(a) == len(parent) == 26


@given(
    root=ID_CHARS,
    shards=st.integers(1, 256),
    path=st.lists(st.sampled_from(["o0", "o1", "near", "review"]), max_size=6),
)
def test_everything_under_a_goal_routes_to_the_goals_shard(root: str, shards: int, path: list[str]) -> None:
    """However deep, and whatever the goal's own id (short, padded, user-given), a descendant's
    id routes to the shard its goal's id routes to: a goal never spans shards."""
    item = root
    for step in path:
        if step == "review":  # a guard's review item (lib.lua)
            item = item + ids.REVIEW_SUFFIX
        else:
            item = ids.near_id(item) if step == "near" else ids.child_id(item, step)
        assert ids.shard_of(item, shards) == ids.shard_of(root, shards)
        assert 0 <= ids.shard_of(item, shards) < shards


def test_ids_can_be_made_for_a_shard_and_new_ids_spread_over_all() -> None:
    for shard in range(6):
        made = ids.id_on_shard(shard, 6)
        assert ids.shard_of(made, 6) == shard and len(made) == 26
    # ULIDs of one millisecond count up from the last character, which is in the route: ids
    # made in a burst (a batch of goals posted at once) spread over the shards all the same.
    burst = [ids.new_id() for _ in range(120)]
    assert len({b[:10] for b in burst}) <= 3  # (mostly one millisecond)
    assert {ids.shard_of(b, 6) for b in burst} == set(range(6))


def test_shard_keyspaces_have_one_tag_each_and_one_shard_keeps_the_old_tag() -> None:
    assert [k.tag for k in shard_keyspaces("b", 1)] == ["{bb:b}"]
    many = shard_keyspaces("b", 4)
    assert [k.tag for k in many] == ["{bb:b:0}", "{bb:b:1}", "{bb:b:2}", "{bb:b:3}"]
    assert [k.index for k in many] == [0, 1, 2, 3] and all(k.state.startswith(k.tag) for k in many)
    for bad in (0, 257, True, "3"):
        with pytest.raises(InvalidInput, match="shards"):
            shard_keyspaces("b", bad)  # type: ignore[arg-type]


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
    lib = (Path(__file__).parent.parent / "blackboard" / "lua" / "lib.lua").read_text()
    nfixed = int(re.search(r"^local NFIXED = (\d+)$", lib, re.M).group(1))  # type: ignore[union-attr]
    assert len(set(ks.fixed)) == len(ks.fixed) == nfixed == 23
    for n, name in enumerate(ks.fixed, 1):  # the layout lib.lua documents, key by key
        assert re.search(rf"^--   KEYS\[{n}\] +{name.rsplit(':', 1)[1]} ", lib, re.M), name
    assert ks.fixed[17] == ks.audit == "{bb:my-board}:audit"  # KEYS[18] in lua/lib.lua


def test_exports_match_all() -> None:
    exported = {
        n
        for n in dir(blackboard)
        if not n.startswith("_") and not isinstance(getattr(blackboard, n), types.ModuleType)
    }
    assert exported - {"annotations"} == set(blackboard.__all__)
    for name in blackboard.__all__:
        assert getattr(getattr(blackboard, name), "__module__", "blackboard").startswith("blackboard")


def test_a_plain_name_path_template_gives_what_jinja_gives() -> None:
    """`{{ a.b }}` skips Jinja's per-call context, with the same answers and the same errors."""
    import pytest

    from blackboard.errors import InvalidInput
    from blackboard.llm.templates import _NamePath, compile_value, environment, render_value

    variables = {"payload": {"job": "j", "n": 3, "inner": {"a": None}}, "each": "x", "output": {"t": [1]}}
    exprs = [
        "payload.job",
        "payload.n",
        " payload.inner.a ",
        "output.t",
        "each",
        "payload.job.upper",  # a str method, as in Jinja
        "payload.missing",  # undefined attribute
        "nope",  # undefined name
        "nope.x",
        "payload.__class__",  # refused by the sandbox
    ]

    def outcome(compiled: object) -> object:
        try:
            return repr(render_value(compiled, variables))
        except InvalidInput as e:
            return f"error: {e}"

    for expr in exprs:
        fast = compile_value("{{" + expr + "}}", "f")
        assert isinstance(fast[1], _NamePath), expr
        jinja = ("expr", environment().compile_expression(expr, undefined_to_none=False), "f")
        assert outcome(fast) == outcome(jinja), expr
    assert outcome(compile_value("{{ nope }}", "f")) == "error: f: expression error: 'nope' is undefined"
    with pytest.raises(InvalidInput, match="unsafe"):
        render_value(compile_value("{{ payload.__class__ }}", "f"), variables)
