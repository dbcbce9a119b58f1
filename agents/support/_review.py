"""The reviewer's rules for a draft reply (a plain function: no model needed)."""

from __future__ import annotations

from blackboard import Item

MIN_BODY = 45  # characters: one line is not an answer
BANNED = ("guarantee", "lawyer")


def review(draft: Item, producer: Item | None) -> str | None:
    """None approves; a string rejects with that critique."""
    body = str(draft.payload.get("body", ""))
    if len(body) < MIN_BODY:
        return f"The reply is too short ({len(body)} characters); explain the next steps in full."
    if any(word in body.lower() for word in BANNED):
        return "Do not promise guarantees or mention lawyers."
    return None
