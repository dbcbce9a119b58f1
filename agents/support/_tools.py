"""Tools over the pack's small data files (a stand-in for a CRM and a help centre)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def account_history(customer_id: str) -> dict[str, Any]:
    """The customer's orders, tickets and flags."""
    accounts: dict[str, dict[str, Any]] = json.loads((HERE / "_accounts.json").read_text())
    return accounts.get(customer_id, {"error": f"no customer {customer_id}"})


def search_kb(query: str) -> list[dict[str, str]]:
    """Knowledge-base articles matching the query, best first (at most three)."""
    words = {w.lower().strip(".,?!") for w in query.split() if len(w) > 3}
    articles = json.loads((HERE / "_kb.json").read_text())
    return sorted(articles, key=lambda a: -len(words & set(a["text"].lower().split())))[:3]
