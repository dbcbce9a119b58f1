"""Finding agents: plugin files in agent folders, and the `blackboard.agents` entry points.

A `.py` plugin is any module defining `Agent` instances (e.g. made with `@agent`) or `Agent`
subclasses. A `.yaml` plugin declares one agent: an LLM agent when it names a `model` (see
`blackboard.llm.spec`), a critic when it names `guards` (see `blackboard.critic`), a remote A2A
agent when it has a `remote:` block (see `blackboard.a2a.remote`), or else an agent whose
handler is a Python callable:

    name: summariser
    consumes: [doc.text]
    produces: [doc.summary]
    concurrency: 4
    handler: summarise.py:handle     # a file next to this one, or an importable "module:attr"

Loading never raises: a plugin that fails to import or validate comes back with its error, so
the daemon reports it and carries on with the others.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from blackboard.agents import Agent, FunctionAgent, spec_from
from blackboard.errors import InvalidInput

ENTRY_POINT_GROUP = "blackboard.agents"
SUFFIXES = (".py", ".yaml", ".yml")


@dataclass
class Plugin:
    """What one source (file or entry point) provided: its agents, or the error that stopped it."""

    source: str
    agents: list[Agent] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def agents_in(module: ModuleType) -> list[Agent]:
    """Agent instances in a module's namespace, and Agent subclasses defined there (instantiated)."""
    found: list[Agent] = []
    for value in vars(module).values():
        if isinstance(value, Agent):
            found.append(value)
        elif (
            inspect.isclass(value)
            and issubclass(value, Agent)
            and value not in (Agent, FunctionAgent)
            and value.__module__ == module.__name__
            and not inspect.isabstract(value)
            and "consumes" in dir(value)
        ):
            found.append(value())
    for a in found:
        a.spec  # noqa: B018 - validate now, so a bad declaration is this plugin's error
    return found


def _import_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"blackboard_plugins.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # replaced on reload
    # Compile the file as it is now: a cached .pyc is trusted by (mtime, size), so a changed
    # plugin with the same size saved within the same second (or copied with its mtime) would
    # otherwise hot-reload as its old code.
    exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    return module


def _resolve(ref: str, base: Path) -> Any:
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise InvalidInput("handler", f"expected 'file.py:function' or 'module:function', got {ref!r}")
    module = _import_file(base / target) if target.endswith(".py") else importlib.import_module(target)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InvalidInput("handler", f"{target} has no attribute {attr!r}") from None


def _load_yaml(path: Path) -> list[Agent]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise InvalidInput(path.name, "expected a mapping of agent fields")
    if "guards" in data:  # a critic
        from blackboard import critic

        return [critic.Critic(critic.parse(data, path), path.parent, path.name, _resolve)]
    if "remote" in data:  # a remote A2A agent
        from blackboard.a2a import remote

        return [remote.load(data, path)]
    if "model" in data:  # an LLM agent
        from blackboard.llm.agent import LLMAgent
        from blackboard.llm.spec import parse

        return [LLMAgent(parse(data, path), path.parent, path.name, _resolve)]
    fields = dict(data)
    ref = fields.pop("handler", None)
    if not isinstance(ref, str):
        raise InvalidInput(f"{path.name}.handler", "expected 'file.py:function' or 'module:function'")
    spec = spec_from(fields, path.name)
    fn = _resolve(ref, path.parent)
    if not inspect.iscoroutinefunction(fn) and not isinstance(fn, FunctionAgent):
        raise InvalidInput(f"{path.name}.handler", f"{ref} is not an async function")
    return [FunctionAgent(fn.fn if isinstance(fn, FunctionAgent) else fn, spec)]


def load_file(path: Path) -> Plugin:
    """Load one plugin file; never raises."""
    plugin = Plugin(str(path))
    try:
        if path.suffix == ".py":
            plugin.agents = agents_in(_import_file(path))
        else:
            plugin.agents = _load_yaml(path)
        if not plugin.agents:
            plugin.error = "defines no agents"
    except Exception as e:
        plugin.error = _describe(e, path)
    return plugin


def _describe(e: BaseException, path: Path) -> str:
    """One line: the error, and the plugin's own line where it happened."""
    where = ""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if frame.filename == str(path):
            where = f" (line {frame.lineno})"
            break
    if isinstance(e, SyntaxError):
        where = ""  # its message already names the file and line
    return f"{type(e).__name__}: {e}{where}"


def plugin_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in SUFFIXES
        and p.is_file()
        and not any(part.startswith((".", "_")) for part in p.parts[-1:])
    )


def load_entry_points() -> list[Plugin]:
    """Agents from installed packages: each entry point names an Agent, a module, or a list."""
    plugins = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        plugin = Plugin(f"entry point {ep.name} ({ep.value})")
        try:
            obj = ep.load()
            if isinstance(obj, ModuleType):
                plugin.agents = agents_in(obj)
            elif isinstance(obj, Agent):
                plugin.agents = [obj]
            elif inspect.isclass(obj) and issubclass(obj, Agent):
                plugin.agents = [obj()]
            else:
                plugin.agents = list(obj)
            for a in plugin.agents:
                a.spec  # noqa: B018
        except Exception as e:
            plugin.error = f"{type(e).__name__}: {e}"
        plugins.append(plugin)
    return plugins
