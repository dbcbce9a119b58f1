"""Small pieces: ids, kinds and globs, keys, the exported API."""

from __future__ import annotations

import re
import types
from pathlib import Path

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
