"""The reviewer's rules for a draft reply (a plain function: no model needed)."""

from __future__ import annotations

from blackboard import Item

MIN_BODY = 40  # characters: one line is not an answer (the offline drafter misses this at times)
BANNED = ("guarantee", "lawyer")


def review(draft: Item, producer: Item | None) -> str | None:
    """None approves; a string rejects with that critique.

    `producer` is the support.compose item the draft answers: the draft must go to the same
    customer, by name and id, since the sender addresses the reply from those fields.
    """
    p = draft.payload if isinstance(draft.payload, dict) else {}
    request = producer.payload if producer is not None and isinstance(producer.payload, dict) else {}
    body = str(p.get("body") or "").strip()
    if not body:
        return "The reply is empty."
    if not p.get("to") or not p.get("customer_id"):
        return "The reply does not say which customer it is for (name and customer id)."
    if (p["to"], p["customer_id"]) != (request.get("name"), request.get("customer_id")):
        return f"The reply is addressed to {p['to']} ({p['customer_id']}), not to the customer who wrote."
    if len(body) < MIN_BODY:
        return f"The reply is too short ({len(body)} characters); explain the next steps in full."
    if any(word in body.lower() for word in BANNED):
        return "Do not promise guarantees or mention lawyers."
    return None
