"""Who is asking: the session cookie, the role a route needs, the CSRF check on every POST, and the audit call path.

The cookie holds the session token (random; the server keeps its SHA-256, ``accounts``). It is ``HttpOnly`` (no
script reads it), ``SameSite=Strict`` (no other site's page sends it) and, with ``web.secure_cookies``, ``Secure``
and named with the ``__Host-`` prefix, which a browser keeps only for HTTPS, the whole site and no other domain.
SameSite alone would stop most cross-site forms; the per-session CSRF token (a hidden field of every form, or the
``X-CSRF-Token`` header) also covers old browsers and a sibling sub-domain. The log-in form, before any session,
is protected the same way by a token in a short-lived cookie that must match the form's (double submit).

``require("operator", "tracer")`` is a dependency that lets in a logged-in person with one of those roles, sends a
browser without a session to the log-in page, and refuses anyone else with 403. Roles are not a ladder
(``accounts``): a route names every role it admits.

``audit_request(request, action, detail)`` writes an audit line with the person and their address: the path the
trace queries and gate commands (next issue) must take.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ..accounts import ROLES, Role, Session

if TYPE_CHECKING:
    from fastapi import FastAPI, Response

    from ..settings import WebSettings
    from .context import ProvinceContext

log = logging.getLogger(__name__)

SESSION_COOKIE = "qrgate_session"
SECURE_SESSION_COOKIE = "__Host-qrgate_session"
LOGIN_CSRF_COOKIE = "qrgate_login"
LOGIN_CSRF_MAX_AGE_S = 3600  # the log-in form is good for an hour
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """No live session: a page sends the browser to the log-in form, the event stream answers 401."""


class Forbidden(Exception):
    """A live session whose role this route does not admit (403)."""


class CsrfRefused(Exception):
    """A POST without the right CSRF token (403): a forged request from another site, or a stale form."""


def context_of(request: Request) -> ProvinceContext:
    context: ProvinceContext = request.app.state.context
    return context


def session_cookie_name(web: WebSettings) -> str:
    return SECURE_SESSION_COOKIE if web.secure_cookies else SESSION_COOKIE


def read_session(request: Request) -> Session | None:
    """The request's live session, looked up once per request."""
    if not hasattr(request.state, "session"):
        context = context_of(request)
        token = request.cookies.get(session_cookie_name(context.config.web), "")
        request.state.session = context.accounts.session(token) if token else None
    found: Session | None = request.state.session
    return found


def any_session(request: Request) -> Session:
    """A dependency: any logged-in person."""
    session = read_session(request)
    if session is None:
        raise LoginRequired
    return session


def require(*roles: Role) -> Callable[[Request], Session]:
    """A dependency admitting a logged-in person with one of ``roles``."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"require(): roles must be among {ROLES}, got {roles}")
    admitted = frozenset(roles)

    def dependency(request: Request) -> Session:
        session = any_session(request)
        if session.user.role not in admitted:
            raise Forbidden
        return session

    dependency.__name__ = f"require_{'_or_'.join(roles)}"
    return dependency


async def check_csrf(request: Request, session: Annotated[Session, Depends(any_session)]) -> None:
    """A dependency of every POST made in a session: the form's (or header's) token must be the session's."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if sent is None or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        log.warning("refused a POST to %s without the session's CSRF token", request.url.path)
        raise CsrfRefused


async def check_login_csrf(request: Request) -> None:
    """A dependency of the log-in POST: the form's token must match the one its cookie was given with."""
    form = await request.form()
    field, cookie = form.get(CSRF_FIELD), request.cookies.get(LOGIN_CSRF_COOKIE)
    if not isinstance(field, str) or not cookie or not hmac.compare_digest(field.encode(), cookie.encode()):
        raise CsrfRefused


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def set_login_cookie(response: Response, web: WebSettings, token: str) -> None:
    """The log-in form's token, in the cookie that only the log-in POST is sent."""
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=LOGIN_CSRF_MAX_AGE_S, path="/login",
                        httponly=True, samesite="strict", secure=web.secure_cookies)


def set_session_cookie(response: Response, web: WebSettings, token: str) -> None:
    # no Max-Age beyond the session's own: the server refuses an expired session anyway
    response.set_cookie(session_cookie_name(web), token, max_age=web.session_max_age_s, path="/",
                        httponly=True, samesite="strict", secure=web.secure_cookies)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login", httponly=True, samesite="strict",
                           secure=web.secure_cookies)


def clear_session_cookie(response: Response, web: WebSettings) -> None:
    response.delete_cookie(session_cookie_name(web), path="/", httponly=True, samesite="strict",
                           secure=web.secure_cookies)


def remote_of(request: Request) -> str | None:
    """The client's address (uvicorn takes it from X-Forwarded-For when the TLS proxy on loopback sends one)."""
    return request.client.host if request.client is not None else None


def audit_request(request: Request, action: str, detail: dict[str, object], *, actor: str | None = None) -> None:
    """One audit line for this request: by ``actor``, else the logged-in person, from the client's address."""
    if actor is None:
        session = read_session(request)
        actor = session.user.name if session is not None else "?"
    context_of(request).accounts.audit(actor, action, detail, remote_of(request))


def _dependency_calls(dependant: Dependant) -> Iterator[object]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def assert_every_post_checks_csrf(app: FastAPI) -> None:
    """Refuse to build an app with a POST route that forgot its CSRF check (a mistake no test would notice)."""
    for route in app.routes:
        if isinstance(route, APIRoute) and "POST" in (route.methods or set()):
            calls = set(_dependency_calls(route.dependant))
            if check_csrf not in calls and check_login_csrf not in calls:
                raise RuntimeError(f"POST {route.path} has no CSRF check: add Depends(check_csrf)")
