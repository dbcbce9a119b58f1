"""Rendering the web view: one Jinja2 environment over the package's templates, autoescaped.

Payloads, results and errors are untrusted text (an LLM's output may well hold `<script>`), so
autoescape is on for every template, `StrictUndefined` turns a typo into an error instead of a
blank, and no filter here returns `Markup`. A page and its live fragment are one template: the
fragment is the page's `live` block rendered alone, so a refresh can't drift from the first
render. Every response carries a Content-Security-Policy that lets only the daemon's own
scripts and styles run: a second line of defence should anything slip past the escaping.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

HERE = Path(__file__).parent
STATIC = HERE / "static"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # ids stay home; with no-referrer, forms would send Origin: null
    "Cache-Control": "no-store",
    "Vary": "HX-Request",  # a page and its fragment share a URL
}


def shown(value: Any) -> str:
    """A payload or result as text: strings as they are, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def took(item: dict[str, Any]) -> str:
    """How long an item (as JSON) took from posting to finishing."""
    if not item.get("finished_at"):
        return ""
    return f"{(item['finished_at'] - item['created_at']) / 1000:.3f}s"


def tokens(item: dict[str, Any]) -> int:
    return sum(c["prompt_tokens"] + c["completion_tokens"] for c in item.get("usage", ()))


def cost(item: dict[str, Any]) -> str:
    return f"${sum(c.get('cost') or 0 for c in item.get('usage', ())):.4f}"


def when(ms: float | None) -> str:
    """A board timestamp (ms since the epoch) as UTC time."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(shown=shown, took=took, tokens=tokens, cost=cost, when=when)


def fragment_wanted(request: Request) -> bool:
    """htmx asks for a page's live part (its refresh); a navigation gets the whole page."""
    return request.headers.get("hx-request") == "true"


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """`name` rendered whole, or only its `live` block when htmx refreshes it."""
    template = env.get_template(name)
    context = {"path": request.url.path, "events": None, "who": None, "sessions": False, **context}
    if fragment_wanted(request) and "live" in template.blocks:
        html = "".join(template.blocks["live"](template.new_context(context)))
    else:
        html = template.render(context)
    return HTMLResponse(html, status, headers=HEADERS)


def message(text: str, status: int = 200, *, error: bool = False) -> HTMLResponse:
    """The answer to an action: a line shown in the page's message area."""
    html = env.get_template("message.html").render(text=text, error=error)
    return HTMLResponse(html, status, headers=HEADERS)
