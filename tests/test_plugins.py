"""Finding agents in plugin files and entry points; broken plugins are reported, not raised."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from blackboard import plugins

GOOD = """
from blackboard import Agent, agent

@agent(consumes=["a"])
async def first(item, ctx):
    return 1

class Second(Agent):
    name = "second"
    consumes = ("b",)

    async def handle(self, item, ctx):
        return 2
"""


def test_py_plugin_yields_decorated_and_class_agents(tmp_path: Path) -> None:
    path = tmp_path / "good.py"
    path.write_text(GOOD)
    plugin = plugins.load_file(path)
    assert plugin.ok and sorted(a.spec.name for a in plugin.agents) == ["first", "second"]


def test_yaml_plugin_points_at_a_handler(tmp_path: Path) -> None:
    (tmp_path / "impl.py").write_text("async def handle(item, ctx):\n    return 'yaml'\n")
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nconsumes: [x.y]\nproduces: [x.z]\nconcurrency: 2\nhandler: impl.py:handle\n"
    )
    plugin = plugins.load_file(tmp_path / "mine.yaml")
    assert plugin.ok, plugin.error
    [a] = plugin.agents
    assert (a.spec.name, a.spec.consumes, a.spec.concurrency) == ("mine", ("x.y",), 2)


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("syntax.py", "def broken(:\n", "SyntaxError"),
        ("raises.py", "x = 1\nraise RuntimeError('boom')\n", "RuntimeError: boom (line 2)"),
        ("empty.py", "x = 1\n", "defines no agents"),
        (
            "badspec.py",
            "from blackboard import agent\n@agent(consumes=[])\nasync def f(i, c): ...\n",
            "consumes",
        ),
        ("nohandler.yaml", "name: x\nconsumes: [a]\n", "handler"),
        ("badfield.yaml", "name: x\nconsumes: [a]\nbogus: 1\nhandler: m:f\n", "bogus"),
        ("notmap.yaml", "- a\n", "expected a mapping"),
        ("missing.yaml", "name: x\nconsumes: [a]\nhandler: nope.py:f\n", "nope.py"),
    ],
)
def test_broken_plugins_come_back_with_their_error(tmp_path: Path, name: str, text: str, error: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    plugin = plugins.load_file(path)
    assert not plugin.ok and error in (plugin.error or "")


def test_plugin_files_skip_hidden_and_private(tmp_path: Path) -> None:
    for name in ("a.py", "b.yaml", "_private.py", ".hidden.py", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in plugins.plugin_files(tmp_path)] == ["a.py", "b.yaml"]
    assert plugins.plugin_files(tmp_path / "missing") == []


def test_entry_points_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real installed distribution on sys.path: a dist-info folder with entry_points.txt.
    (tmp_path / "ep_agents.py").write_text(GOOD)
    info = tmp_path / "ep_agents-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-agents\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[blackboard.agents]\nmine = ep_agents\nbroken = ep_agents:nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {p.source.split()[2]: p for p in plugins.load_entry_points()}
    assert sorted(a.spec.name for a in found["mine"].agents) == ["first", "second"]
    assert not found["broken"].ok and "nothing" in (found["broken"].error or "")
    sys.modules.pop("ep_agents", None)
