"""Who may call the daemon's HTTP routes, and as whom.

With API tokens configured, `/v1`, `/mcp` and `/a2a` need `Authorization: Bearer <token>`, and
each token acts as its principal (`api_token` as `http`, each of `api_principals` as its name);
the web view's routes take a bearer token or the session cookie its `/login` makes from one
(`blackboard.web.auth`). Health, readiness and metrics stay open for probes. With no token the
daemon listens on loopback only, and answers its API under loopback host names only, so a web
page whose DNS name is rebound to 127.0.0.1 can't drive it.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from blackboard.web import auth as web_auth

MAX_BODY = 2 << 20  # the largest request body the API takes
API = ("/v1", "/mcp", "/a2a")  # the routes behind the bearer token (or, on an open daemon, loopback names)


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower-cased ("" when it sends none). The
    API takes bodies only as application/json: a browser sends that cross-site only after a
    CORS preflight, which the daemon never answers, so another site's forms can't post."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def error(status: int, kind: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "field": field, "message": message}}, status_code=status)


class LoopbackOnly(BaseHTTPMiddleware):
    """An open daemon (no API token, so bound to loopback) answers its API (/v1, /mcp, /a2a)
    only under loopback host names: a page whose DNS name is rebound to 127.0.0.1 can't drive
    or read it."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith(API) and not web_auth.loopback_host(request.headers.get("host")):
            return error(
                403, "Forbidden", "this daemon has no API token: its API answers on loopback names only"
            )
        return await call_next(request)


class TokenAuth(BaseHTTPMiddleware):
    """Bearer-token check for the API routes (/v1, /mcp, /a2a; health, readiness and metrics
    stay open for probes); the web view's routes take a bearer token or a session cookie.
    Each token is a principal's (`request.state.principal`): the policy decides what it may do."""

    def __init__(self, app: Any, tokens: dict[str, str]) -> None:
        super().__init__(app)
        self.tokens = tokens

    def bearer(self, request: Request) -> str | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return web_auth.principal_for_token(given, self.tokens) if scheme == "Bearer" else None

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path.startswith(API):
            found = self.bearer(request)
            if found is None:
                denied = error(401, "Unauthorized", "missing or wrong bearer token")
                denied.headers["WWW-Authenticate"] = 'Bearer realm="blackboard"'  # required on a 401
                return denied
            request.state.principal = found
        elif web_auth.guarded(path):
            found = self.bearer(request) or web_auth.session_principal(request, self.tokens)
            if found is None:
                return web_auth.login_required(request)
            request.state.principal = found
        return await call_next(request)


def principal_of(request: Request) -> str:
    """Who is asking: the principal of the request's token (`http` with no tokens configured)."""
    return getattr(request.state, "principal", "http")
