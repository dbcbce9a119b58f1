"""litellm, imported on first use (it takes seconds), with the offline provider registered.

`LITELLM_LOCAL_MODEL_COST_MAP=True` is set before the import so litellm reads its bundled price
list instead of fetching one: importing it never touches the network.
"""

from __future__ import annotations

import importlib
import os
import threading
from functools import cache
from typing import Any

_lock = threading.Lock()  # agents warm up in worker threads at once: register the provider once


@cache
def litellm() -> Any:
    """The litellm module, ready: local cost map, no telemetry, `offline/...` models registered."""
    with _lock:
        return _load()


def _load() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm as lib

    from blackboard.llm.offline import OfflineLLM

    lib.telemetry = False
    lib.suppress_debug_info = True
    if not any(p.get("provider") == "offline" for p in lib.custom_provider_map):
        lib.custom_provider_map = [
            *lib.custom_provider_map,
            {"provider": "offline", "custom_handler": OfflineLLM()},
        ]
    return lib


def warm_up() -> None:
    """Import litellm and the modules its first calls import (tool calling pulls in the MCP
    SDK), so the first handler does not pay for them. Blocking: run it in a worker thread."""
    litellm()
    importlib.import_module("litellm.responses.mcp.chat_completions_handler")


def price_offline(models: list[str]) -> None:
    """Give litellm the offline models' nominal small-model price, so it prices their responses
    in its own pipeline as it does a hosted model's (`cost_of` reads that price)."""
    from blackboard.llm.offline import PRICE_PER_TOKEN

    lib = litellm()
    new = [m for m in dict.fromkeys(models) if m.startswith("offline/") and m not in lib.model_cost]
    if new:
        price = {
            "input_cost_per_token": PRICE_PER_TOKEN[0],
            "output_cost_per_token": PRICE_PER_TOKEN[1],
            "cache_creation_input_token_cost": 0.0,
            "cache_read_input_token_cost": 0.0,
            "litellm_provider": "offline",
            "mode": "chat",
        }
        with _lock:
            lib.register_model({m: dict(price) for m in new})


def cost_of(response: Any) -> float | None:
    """litellm's price of one response in USD (computed as litellm handled the call), or None
    when it does not know the model's price (a local model, say)."""
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    if cost is not None:
        return float(cost)
    try:
        return float(litellm().completion_cost(completion_response=response))
    except Exception:
        return None
