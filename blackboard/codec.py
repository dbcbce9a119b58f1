"""Items as stored in Redis (an immutable JSON doc plus a mutable JSON state) and back."""

from __future__ import annotations

import json
from typing import Any

from blackboard.errors import InvalidInput, PayloadTooLarge
from blackboard.models import Item, ModelCall, Status

# State fields that map onto Item fields under another name; the rest of the state that Item
# does not know (mark order key, last token, ...) stays internal.
_STATE_FIELDS = {
    "status": "status",
    "attempts": "attempts",
    "max_attempts": "max_attempts",
    "priority": "priority",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "not_before": "not_before",
    "owner": "lease_owner",
    "token": "lease_token",
    "deadline": "lease_deadline",
    "error": "error",
    "reason": "reason",
    "parent": "parent",
    "root": "root",
    "depth": "depth",
    "pending": "pending",
    "mark_strength": "mark_strength",
    "claimed_at": "claimed_at",
    "ready_at": "ready_at",
    "handled_by": "handled_by",
    "finished_at": "finished_at",
    "budget": "budget_exceeded",
}
_DOC_FIELDS = ("after", "created_by", "idempotency_key", "tags", "visibility", "traceparent")


def dumps(value: Any, field: str, limit: int | None = None) -> str:
    """Compact JSON of `value`, or `InvalidInput` naming `field` (NaN and infinities refused)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(field, f"expected JSON-serialisable data: {e}") from None
    if limit is not None and len(text.encode()) > limit:
        raise PayloadTooLarge(field, f"{len(text.encode())} bytes encoded, over the board's limit of {limit}")
    return text


def decode_item(
    item_id: str,
    kind: str | bytes,
    doc: str | bytes,
    state: str | bytes,
    result: Any = None,
    usage: str | bytes | None = None,
) -> Item:
    """Build an Item from the stored doc and state (and the raw result of a done item, and the
    model calls recorded for it)."""
    d = json.loads(doc)
    s = json.loads(state)
    data: dict[str, Any] = {"id": item_id, "kind": kind if isinstance(kind, str) else kind.decode()}
    data["payload"] = d.get("payload")
    for name in _DOC_FIELDS:
        value = d.get(name)
        if value:  # absent or empty
            data[name] = value
    for src, dst in _STATE_FIELDS.items():
        value = s.get(src)
        if value is not None:
            data[dst] = value
    if result is not None:
        data["result"] = json.loads(result)
    if usage is not None:
        data["usage"] = tuple(ModelCall.model_validate(c) for c in json.loads(usage))
    # Trusted data written by our own scripts: construct without re-validating (hot path).
    data["status"] = Status(data["status"])
    for name in ("after", "tags", "visibility"):
        if name in data:
            data[name] = tuple(data[name])
    return Item.model_construct(**data)
