"""The researchers' search tool: a keyword search over the pack's small corpus file."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).with_name("_corpus.json")


def search(query: str) -> list[dict[str, str]]:
    """Search the research library; returns up to three matching documents (title, text)."""
    words = {w.lower() for w in query.split() if len(w) > 3}
    docs = json.loads(CORPUS.read_text())
    scored = sorted(docs, key=lambda d: -len(words & set(d["text"].lower().split())))
    return scored[:3]
