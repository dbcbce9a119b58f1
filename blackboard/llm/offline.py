"""The offline model: a litellm custom provider (`offline/<anything>`) that answers without a
network or an API key.

Answers are deterministic: a seed is taken from the model name and the whole conversation, and
an answer valid for the requested JSON schema (`response_format`) is built from it, with text
made of words of the prompt. When tools are offered and the conversation has no tool results
yet, it first asks for each tool once, with arguments built the same way. It goes through
litellm exactly like a hosted model (routing, retries, fallbacks, cost, usage), so packs, tests
and the demo exercise the real call path.

Optional parameters (pass in an agent's `params`): `latency` (seconds to wait per call, to model
a slow provider; `BLACKBOARD_OFFLINE_LATENCY` sets it for every offline call) and
`rate_limited` (answer the first N calls of a conversation with a 429).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from typing import Any

import anyio

# USD per (prompt, completion) token: priced like a small hosted model, so usage and cost
# tracking have real numbers to show.
PRICE_PER_TOKEN = (0.15e-6, 0.60e-6)

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "from",
        "your",
        "you",
        "are",
        "was",
        "were",
        "have",
        "has",
        "not",
        "but",
        "its",
        "into",
        "any",
        "all",
        "json",
        "answer",
        "schema",
        "return",
        "only",
        "must",
        "should",
        "each",
        "item",
        "items",
        "payload",
    ]
)


def _text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):  # content blocks
            c = " ".join(str(b.get("text", "")) for b in c if isinstance(b, dict))
        parts.append(str(c or ""))
    return "\n".join(parts)


class Synth:
    """Builds a value for a JSON schema from a seeded random source and a pool of words."""

    def __init__(self, seed: bytes, words: list[str], root: dict[str, Any]) -> None:
        self.rng = random.Random(seed)
        self.words = words or ["offline", "answer"]
        self.root = root

    def phrase(self, hint: str, lo: int = 3, hi: int = 8) -> str:
        n = self.rng.randint(lo, hi)
        start = self.rng.randrange(len(self.words))
        picked = [self.words[(start + i) % len(self.words)] for i in range(n)]
        return f"{hint.replace('_', ' ')}: {' '.join(picked)}" if hint else " ".join(picked)

    def value(self, schema: Any, hint: str = "") -> Any:
        if not isinstance(schema, dict):
            return None
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), hint)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
                return self.value(options[0], hint)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for s in schema["allOf"]:
                merged.update(self._resolve(s["$ref"]) if "$ref" in s else s)
            return self.value(merged, hint)
        kind = schema.get("type", "object" if "properties" in schema else "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        return getattr(self, f"_{kind}", self._string)(schema, hint)

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return dict(node)

    def _object(self, schema: dict[str, Any], hint: str) -> dict[str, Any]:
        props = schema.get("properties", {})
        return {name: self.value(sub, name) for name, sub in props.items()}

    def _array(self, schema: dict[str, Any], hint: str) -> list[Any]:
        lo = int(schema.get("minItems", 1))
        hi = int(schema.get("maxItems", max(lo, 3)))
        n = self.rng.randint(lo, max(lo, hi))
        out: list[Any] = []
        for i in range(n * 4):  # uniqueItems: a few tries
            if len(out) == n:
                break
            v = self.value(schema.get("items", {"type": "string"}), hint.rstrip("s") if hint else hint)
            if not schema.get("uniqueItems") or v not in out or i >= n * 3:
                out.append(v)
        return out

    def _string(self, schema: dict[str, Any], hint: str) -> str:
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = self.phrase(hint)
        while len(text) < lo:
            text += " " + self.phrase("")
        return text[: int(hi)] if hi is not None else text

    def _integer(self, schema: dict[str, Any], hint: str) -> int:
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        hi = schema.get("maximum", schema.get("exclusiveMaximum", lo + 101) - 1)
        return self.rng.randint(int(lo), max(int(lo), int(hi)))

    def _number(self, schema: dict[str, Any], hint: str) -> float:
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 1.0))
        return round(self.rng.uniform(lo, hi), 3)

    def _boolean(self, schema: dict[str, Any], hint: str) -> bool:
        return self.rng.random() < 0.5

    def _null(self, schema: dict[str, Any], hint: str) -> None:
        return None


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        return dict(response_format.get("json_schema", {}).get("schema") or {})
    if response_format.get("type") == "json_object":
        return {"type": "object", "properties": {"answer": {"type": "string"}}}
    return None


def _words(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for w in _WORD.findall(text):
        lw = w.lower()
        if lw not in _STOP:
            seen.setdefault(lw, None)
    return list(seen)


class _Offline:
    """The provider's logic, apart from litellm's base class (which is imported lazily)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}  # conversation digest -> calls, for `rate_limited`

    def answer(self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        convo = json.dumps(messages, sort_keys=True, default=str)
        seed = hashlib.blake2b(f"{model}\n{convo}".encode(), digest_size=16).digest()
        text = _text(messages)
        words = _words(text)
        tools = params.get("tools") or []
        after_tools = any(m.get("role") == "tool" for m in messages)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if tools and not after_tools:
            calls = []
            for i, tool in enumerate(tools[:4]):
                fn = tool.get("function", {})
                schema = fn.get("parameters") or {"type": "object"}
                args = Synth(seed + bytes([i]), words, schema).value(schema)
                calls.append(
                    {
                        "id": f"call_{seed.hex()[:8]}_{i}",
                        "type": "function",
                        "function": {"name": fn.get("name", ""), "arguments": json.dumps(args)},
                    }
                )
            message["tool_calls"] = calls
        else:
            schema = _schema_of(params.get("response_format"))
            if schema is not None:
                message["content"] = json.dumps(Synth(seed, words, schema).value(schema))
            else:
                message["content"] = Synth(seed, words, {}).phrase("", 12, 30)
        completion = json.dumps(message)
        return {
            "message": message,
            "prompt_tokens": max(1, len(text) // 4),
            "completion_tokens": max(1, len(completion) // 4),
            "digest": seed.hex(),
        }

    def rate_limited(self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> bool:
        n = int(params.get("rate_limited") or 0)
        if n <= 0:
            return False
        key = hashlib.blake2b(json.dumps(messages, default=str).encode(), digest_size=8).hexdigest()
        self._seen[key] = self._seen.get(key, 0) + 1
        return self._seen[key] <= n


def _make_class() -> type:
    from litellm.exceptions import RateLimitError
    from litellm.llms.custom_llm import CustomLLM
    from litellm.types.utils import Choices, Message, ModelResponse, Usage

    class OfflineLLM(CustomLLM):
        """litellm custom provider for `offline/...` models."""

        def __init__(self) -> None:
            super().__init__()
            self.logic = _Offline()

        def _respond(
            self, model: str, messages: list[dict[str, Any]], optional_params: dict[str, Any]
        ) -> Any:
            if self.logic.rate_limited(model, messages, optional_params):
                raise RateLimitError(
                    message="offline model: rate limited (test knob)",
                    llm_provider="offline",
                    model=model,
                )
            a = self.logic.answer(model, messages, optional_params)
            msg = a["message"]
            response = ModelResponse(
                id=f"offline-{a['digest'][:16]}",
                model=f"offline/{model}",
                choices=[
                    Choices(
                        index=0,
                        finish_reason="tool_calls" if msg.get("tool_calls") else "stop",
                        message=Message(**msg),
                    )
                ],
            )
            response.usage = Usage(  # type: ignore[attr-defined]  # set like litellm's own handlers do
                prompt_tokens=a["prompt_tokens"],
                completion_tokens=a["completion_tokens"],
                total_tokens=a["prompt_tokens"] + a["completion_tokens"],
            )
            return response

        def completion(self, model: str, messages: list[dict[str, Any]], *args: Any, **kw: Any) -> Any:
            return self._respond(model, messages, kw.get("optional_params") or {})

        async def acompletion(self, model: str, messages: list[dict[str, Any]], *args: Any, **kw: Any) -> Any:
            params = kw.get("optional_params") or {}
            latency = float(params.get("latency") or os.environ.get("BLACKBOARD_OFFLINE_LATENCY") or 0)
            if latency > 0:
                await anyio.sleep(latency)  # a modelled provider delay, not synchronisation
            return self._respond(model, messages, params)

    return OfflineLLM


_cls: type | None = None


def OfflineLLM() -> Any:
    """An instance of the provider (its class is made on first use: litellm loads lazily)."""
    global _cls
    if _cls is None:
        _cls = _make_class()
    return _cls()
