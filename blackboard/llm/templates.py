"""Prompt templates: Jinja2 in its sandboxed environment.

A template sees the item (`item`, `payload`), its dependencies' results (`deps`), the board
queries the agent selected (`context`), and, after the call, the model's `output`. Templates
cannot reach Python internals (the sandbox refuses attribute tricks) and `file(name)` reads
only files inside the agent's own folder.

In YAML values that are data rather than text (post payloads, schema fragments), a string that
is one `{{ expression }}` and nothing else keeps the expression's type: a list stays a list.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from blackboard.errors import InvalidInput

_EXPR = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)
_NAME_PATH = re.compile(r"^\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*$")


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@cache
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["tojson"] = _tojson
    return env


class Files:
    """`file(name)` in templates: a file under one folder, re-read when it changes on disk."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()
        self._cache: dict[Path, tuple[int, str]] = {}

    def __call__(self, name: str) -> str:
        path = (self.base / name).resolve()
        if not path.is_relative_to(self.base):
            raise InvalidInput("file", f"{name!r} is outside the agent's folder")
        mtime = path.stat().st_mtime_ns
        hit = self._cache.get(path)
        if hit is None or hit[0] != mtime:
            hit = (mtime, path.read_text())
            self._cache[path] = hit
        return hit[1]


class Template:
    """A compiled text template; `field` names where it came from, for error messages."""

    def __init__(self, source: str, field: str) -> None:
        self.field = field
        try:
            self._t = environment().from_string(source)
        except TemplateError as e:
            raise InvalidInput(field, f"template error: {e}") from None

    def render(self, variables: dict[str, Any]) -> str:
        try:
            return self._t.render(variables)
        except TemplateError as e:
            raise InvalidInput(self.field, f"template error: {e}") from None


class _NamePath:
    """`{{ a.b.c }}`, evaluated without building a Jinja context per call (a planner posting a
    hundred children evaluates three of these per child), by the sandbox's own attribute
    lookup, so the answer is what the compiled expression would give."""

    def __init__(self, path: str) -> None:
        self.name, *self.attrs = path.split(".")

    def __call__(self, **variables: Any) -> Any:
        env = environment()
        value = variables[self.name] if self.name in variables else env.undefined(name=self.name)
        for attr in self.attrs:
            value = env.getattr(value, attr)
        return value


def compile_value(value: Any, field: str) -> Any:
    """Compile a data template: every string becomes a callable; containers are walked."""
    if isinstance(value, str):
        m = _EXPR.match(value)
        if m and "{{" not in m.group(1):
            if path := _NAME_PATH.match(m.group(1)):
                return ("expr", _NamePath(path.group(1)), field)
            try:
                expr = environment().compile_expression(m.group(1), undefined_to_none=False)
            except TemplateError as e:
                raise InvalidInput(field, f"expression error: {e}") from None
            return ("expr", expr, field)
        if "{{" in value or "{%" in value:
            return ("text", Template(value, field), field)
        return value
    if isinstance(value, dict):
        return {k: compile_value(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def render_value(compiled: Any, variables: dict[str, Any]) -> Any:
    """Evaluate a compiled data template against `variables`."""
    if isinstance(compiled, tuple) and len(compiled) == 3 and compiled[0] in ("expr", "text"):
        how, fn, field = compiled
        if how == "text":
            return fn.render(variables)
        try:
            return _plain(fn(**variables))
        except TemplateError as e:
            raise InvalidInput(field, f"expression error: {e}") from None
    if isinstance(compiled, dict):
        return {k: render_value(v, variables) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [render_value(v, variables) for v in compiled]
    return compiled


def _plain(value: Any) -> Any:
    """Jinja returns generators for filters like `map`; make them JSON data."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or (hasattr(value, "__iter__") and not isinstance(value, str | bytes)):
        return [_plain(v) for v in value]
    return value
