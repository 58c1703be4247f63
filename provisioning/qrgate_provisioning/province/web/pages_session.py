"""Log-in, log-out, the audit log, and the two machine endpoints: /healthz and /metrics.

The audit log is shown to operators and tracers, not to viewers. It is the check each of those two powers keeps on
the other (an operator sees who traced whom, a tracer sees which commands went to the gates), and a viewer, who
can do neither, has nothing in it to answer for; a trace line also names the pseudonymous ids that were asked for,
which a viewer has no reason to see.

/metrics carries the fleet's figures and no personal data. Prometheus usually scrapes from another machine, so it
cannot be limited to loopback; with ``web.metrics_token_file`` set it requires that bearer token (Prometheus's
``authorization: credentials_file``), otherwise it is open and the TLS proxy or firewall must keep it off the
public side (docs/operators.md).
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ...errors import ProvinceError
from ..accounts import UNKNOWN_ACTOR, Session
from . import auth
from . import format as fmt
from .auth import any_session, audit_request, context_of, read_session, require
from .render import Renderer

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

AUDIT_PAGE_LIMIT = 200
FORM_TEXT_MAX = 1024


def safe_next(target: str | None) -> str:
    """Where to go after the log-in: a path of this site only (never ``//host`` or ``https://...``, which would
    make the log-in page an open redirect to a look-alike site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or len(target) > 2000:
        return "/"
    return target


def read_metrics_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ProvinceError(f"web.metrics_token_file: cannot read {path}: {exc}") from exc
    if len(token) < 16:
        raise ProvinceError(f"web.metrics_token_file: {path} holds no token of at least 16 characters")
    return token


def session_router(renderer: Renderer, metrics_token: str | None) -> APIRouter:
    router = APIRouter()

    def login_page(request: Request, *, error: str = "", name: str = "", next_path: str = "/",
                   status: int = 200) -> Response:
        token = auth.new_login_token()
        response = renderer.page(request, "login.html", {"error": error, "name": name, "next": next_path,
                                                         "login_token": token}, status=status, anonymous=True)
        auth.set_login_cookie(response, context_of(request).config.web, token)
        return response

    @router.get("/login")
    def login_form(request: Request, next: str = "/") -> Response:
        if read_session(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return login_page(request, next_path=safe_next(next))

    @router.post("/login", dependencies=[Depends(auth.check_login_csrf)])
    def login(request: Request, name: Annotated[str, Form(max_length=FORM_TEXT_MAX)],
              password: Annotated[str, Form(max_length=FORM_TEXT_MAX)],
              next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
        context = context_of(request)
        name = name.strip()
        attempt = context.accounts.attempt(name, password)
        if attempt.user is None:
            # A name nobody has is not written down: it is often a password typed into the wrong field.
            actor = UNKNOWN_ACTOR if attempt.refusal == "unknown_name" else name
            audit_request(request, "login.failed", {"reason": attempt.refusal}, actor=actor)
            log.info("refused a log-in (%s)", attempt.refusal)
            return login_page(request, error="login_failed", name=name if actor != UNKNOWN_ACTOR else "",
                              next_path=safe_next(next), status=401)
        token, _csrf = context.accounts.start_session(attempt.user)
        audit_request(request, "login", {"role": attempt.user.role}, actor=attempt.user.name)
        response = RedirectResponse(safe_next(next), status_code=303)
        auth.set_session_cookie(response, context.config.web, token)
        return response

    @router.post("/logout", dependencies=[Depends(auth.check_csrf)])
    def logout(request: Request, session: Annotated[Session, Depends(any_session)]) -> Response:
        context = context_of(request)
        context.accounts.end_session(request.cookies.get(auth.session_cookie_name(context.config.web), ""))
        audit_request(request, "logout", {}, actor=session.user.name)
        response = RedirectResponse("/login", status_code=303)
        auth.clear_session_cookie(response, context.config.web)
        return response

    @router.get("/audit")
    def audit_log(request: Request, session: Annotated[Session, Depends(require("operator", "tracer"))],
                  actor: Annotated[str, Query(max_length=200)] = "") -> Response:
        context = context_of(request)
        zone = context.zone
        entries = context.accounts.audit_entries(AUDIT_PAGE_LIMIT, actor=actor or None)
        t = renderer.labels(request)
        rows = [{"at": fmt.local_datetime(entry.at, zone), "actor": entry.actor, "action": entry.action,
                 "action_label": t.get(f"action_{entry.action}", ""),
                 "detail": ", ".join(f"{key}={value}" for key, value in sorted(entry.detail.items())),
                 "remote": entry.remote or ""} for entry in entries]
        return renderer.page(request, "audit.html", {"rows": rows, "actor": actor})

    @router.get("/healthz")
    def healthz(request: Request) -> Response:
        """For the service manager and the load balancer: 200 when the database answers (a broker that is down
        is said, not failed on: the pages still serve what the fleet last knew)."""
        context = context_of(request)
        try:
            with context.database.connection() as connection:
                connection.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001  # any failure of the database is "not healthy", with the reason
            log.warning("health check: the database does not answer: %s", exc)
            return JSONResponse({"status": "database unreachable"}, status_code=503)
        broker = context.listener.connected if context.listener is not None else None
        return JSONResponse({"status": "ok", "broker_connected": broker, "gates": len(context.fleet.snapshot())})

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from ..metrics import province_metrics

        if metrics_token is not None:
            sent = request.headers.get("authorization", "")
            expected = f"Bearer {metrics_token}"
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                return Response("bearer token required\n", status_code=401, media_type="text/plain",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        context = context_of(request)
        registry = province_metrics(context.fleet, context.config.alerts, listener=context.listener)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
