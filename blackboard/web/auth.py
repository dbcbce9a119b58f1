"""Signing in to the web view, and keeping other sites from acting or reading through it.

**Sessions.** A browser can't send `Authorization: Bearer` on a navigation, so with API tokens
configured the view also takes a session cookie. `POST /login` with a token (from a form: a
token in a URL would land in history, access logs and Referer headers) sets `bb_session`, an
HttpOnly, SameSite=Strict cookie whose value is `principal.expiry.mac`, the MAC being
HMAC-SHA256 keyed by that principal's token. So a session is stateless (every daemon of a
board accepts it), expires (`SESSION_SECONDS`), dies when the token is rotated, and is not the
token itself (page scripts can't read it, and it is no bearer token for /v1). The token
middleware in `blackboard.http` accepts it on the web view's routes only (`guarded`), never on
/v1; the session acts as the token's principal, so the policy decides exactly as for the API.

**Forgery.** Every state-changing request (`forged`) must carry `HX-Request: true`: a
cross-site form can't set a header, and a cross-site fetch that sets one needs a CORS preflight
the daemon never answers. When the browser says where a request comes from (`Origin`,
`Sec-Fetch-Site`), that must be this daemon. On top, the SameSite=Strict cookie is never sent
on a request another site starts. These checks hold with no token too: an open daemon on
loopback is exactly what a hostile page in the operator's browser would try to drive.

**Rebinding.** An open daemon (no token) answers the view only under loopback host names
(`loopback_host`), so a page that rebinds its own DNS name to 127.0.0.1 can't read it either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import time
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

SESSION_COOKIE = "bb_session"
SESSION_SECONDS = 12 * 3600
OPEN_PATHS = ("/web/static/",)  # public: the vendored scripts and the stylesheet


def guarded(path: str) -> bool:
    """Whether `path` is a web-view route that needs a principal (a token or a session)."""
    return path == "/" or (path.startswith("/web/") and not path.startswith(OPEN_PATHS))


def _mac(principal: str, expires: int, token: str) -> str:
    msg = f"blackboard-web-session|{principal}|{expires}".encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def session_value(principal: str, token: str, now: float | None = None) -> str:
    """The cookie value of a session for `principal` (whose token is `token`)."""
    expires = int(now if now is not None else time.time()) + SESSION_SECONDS
    name = base64.urlsafe_b64encode(principal.encode()).decode().rstrip("=")
    return f"{name}.{expires}.{_mac(principal, expires, token)}"


def session_principal(request: Request, tokens: dict[str, str], now: float | None = None) -> str | None:
    """The principal of the request's session cookie, if it is genuine and not expired."""
    value = request.cookies.get(SESSION_COOKIE, "")
    name, _, rest = value.partition(".")
    expires, _, mac = rest.partition(".")
    try:
        principal = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        deadline = int(expires)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    token = tokens.get(principal)
    if token is None or deadline < (now if now is not None else time.time()):
        return None
    return principal if hmac.compare_digest(mac, _mac(principal, deadline, token)) else None


def principal_for_token(given: str, tokens: dict[str, str]) -> str | None:
    """The principal whose token is `given` (compared with every token, in constant time each)."""
    found = [p for p, t in tokens.items() if hmac.compare_digest(given.encode(), t.encode())]
    return found[0] if found else None


def login_required(request: Request) -> Response:
    """No principal: send a page to the login form, and anything else a 401."""
    if request.headers.get("hx-request") == "true":  # htmx follows HX-Redirect with a navigation
        return JSONResponse({"error": "login required"}, 401, headers={"HX-Redirect": "/login"})
    if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
    return JSONResponse(
        {"error": {"type": "Unauthorized", "field": None, "message": "log in at /login first"}}, 401
    )


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this daemon only (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def forged(request: Request, *, htmx: bool = True) -> str | None:
    """Why a state-changing request may have been started by another site (None: it wasn't)."""
    if htmx and request.headers.get("hx-request") != "true":
        return "an action needs the HX-Request header its page sends"
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request may not act here"
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return f"origin {origin!r} is not this daemon's"
    return None


def loopback_host(host_header: str | None) -> bool:
    """Whether a Host header names this machine's loopback (localhost, 127.0.0.0/8, ::1)."""
    if not host_header:
        return False
    host = urlsplit(f"//{host_header}").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def set_session(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
