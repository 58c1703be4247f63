"""``create_app(context)``: the dashboard as one FastAPI application.

Every response carries the security headers: a Content-Security-Policy that allows only this site's own stylesheet,
script and event stream (no inline script, no inline style, nothing from a CDN; a place name that somehow held
markup could run nothing), ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'`` (no framing, so no
click-jacking of the log-out or, next issue, of a command), ``nosniff``, no referrer, and ``Cache-Control:
no-store`` on everything but the static files, since every page holds the province's data and a shared computer's
cache must not keep it. With ``web.secure_cookies`` (served over HTTPS) HSTS is sent too.

Errors: a page asked for without a session redirects to the log-in (the event stream and downloads answer 401
instead, a script cannot follow a redirect to a form); a role a route does not admit gets 403, and so does a POST
without its CSRF token.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import CsrfRefused, Forbidden, LoginRequired, assert_every_post_checks_csrf
from .pages_command import command_router
from .pages_fleet import fleet_router
from .pages_place import place_router
from .pages_reports import reports_router
from .pages_session import read_metrics_token, session_router
from .pages_trace import trace_router
from .render import STATIC, Renderer

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .context import ProvinceContext

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_NOT_PAGES = ("/events", "/metrics", "/healthz")


class SecurityHeaders:
    """ASGI middleware adding the headers above to every response (a pure ASGI one: it must not buffer the event
    stream, which Starlette's BaseHTTPMiddleware would have to wrap)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != b"cache-control" or static]
                headers += self.headers
                headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(context: ProvinceContext) -> FastAPI:
    """The dashboard over ``context``; serve it with uvicorn (``qrgate-province serve``)."""
    web = context.config.web
    renderer = Renderer(web)
    metrics_token = read_metrics_token(web.metrics_token_file)
    app = FastAPI(title="qrgate province dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.context = context
    app.state.renderer = renderer
    app.include_router(session_router(renderer, metrics_token))
    app.include_router(fleet_router(renderer))
    app.include_router(place_router(renderer))
    app.include_router(reports_router(renderer))
    app.include_router(trace_router(renderer))
    app.include_router(command_router(renderer))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityHeaders, hsts=web.secure_cookies)
    assert_every_post_checks_csrf(app)

    def error_page(request: Request, key: str, status: int) -> Response:
        t = renderer.labels(request)
        return renderer.page(request, "error.html", {"message": t[key]}, status=status, anonymous=True)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        path = request.url.path
        if path in _NOT_PAGES or path.endswith((".csv", ".pdf")) or request.method != "GET":
            return PlainTextResponse("log-in required\n", status_code=401)
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _exc: Forbidden) -> Response:
        return error_page(request, "error_forbidden", 403)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return error_page(request, "login_expired", 403)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_page(request, "error_not_found", 404)
        return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> Response:
        fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
        return PlainTextResponse(f"bad request: {fields}\n", status_code=400)

    return app
