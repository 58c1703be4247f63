"""The pages' templates: one Jinja2 environment, autoescaped (a place name is text, never markup) and strict (a
label or value a template names but nobody gave fails the page, in its test, rather than printing nothing).

``Renderer.page`` gives every page the frame's values: the labels ``t`` in the page's language, the person
logged in and their CSRF token for the log-out form, the link to the other language, the navigation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from .auth import read_session
from .i18n import LABELS_BY_LANGUAGE, Language, language_of

if TYPE_CHECKING:
    from ..settings import WebSettings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
LANGUAGE_COOKIE = "qrgate_lang"
LANGUAGE_COOKIE_MAX_AGE_S = 365 * 86400

# (path, label key, roles that see the link: None for everyone logged in)
NAVIGATION: tuple[tuple[str, str, frozenset[str] | None], ...] = (
    ("/", "nav_fleet", None),
    ("/alerts", "nav_alerts", None),
    ("/reports", "nav_reports", None),
    ("/trace", "nav_trace", frozenset({"tracer"})),
    ("/commands", "nav_commands", frozenset({"operator"})),
    ("/audit", "nav_audit", frozenset({"operator", "tracer"})),
)


class Renderer:
    """Renders the templates for one app."""

    def __init__(self, web: WebSettings) -> None:
        self.web = web
        self.environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    def language(self, request: Request) -> Language:
        return language_of(request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE), self.web.language)

    def labels(self, request: Request) -> Mapping[str, str]:
        return LABELS_BY_LANGUAGE[self.language(request)]

    def page(self, request: Request, template: str, values: Mapping[str, object], *, status: int = 200,
             anonymous: bool = False) -> HTMLResponse:
        """A whole page; ``anonymous`` pages (log-in, errors before log-in) do not look the session up."""
        language = self.language(request)
        session = None if anonymous else read_session(request)
        other: Language = "en" if language == "vi" else "vi"
        query = {key: value for key, value in request.query_params.items() if key != "lang"}
        query["lang"] = other
        navigation = [(path, key, request.url.path == path or (path != "/" and request.url.path.startswith(path)))
                      for path, key, roles in NAVIGATION
                      if session is not None and (roles is None or session.user.role in roles)]
        html = self.environment.get_template(template).render(
            t=LABELS_BY_LANGUAGE[language], lang=language, session=session, navigation=navigation,
            csrf_token=session.csrf_token if session is not None else "",
            other_language_url=f"{request.url.path}?{urlencode(query)}", **values)
        response = HTMLResponse(html, status_code=status)
        if request.query_params.get("lang") == language:
            response.set_cookie(LANGUAGE_COOKIE, language, max_age=LANGUAGE_COOKIE_MAX_AGE_S, path="/",
                                httponly=True, samesite="strict", secure=self.web.secure_cookies)
        return response

    def macro(self, template: str, name: str, *args: object) -> Markup:
        """One macro of a template (a fleet row, for the live updates), rendered alone."""
        module = self.environment.get_template(template).module
        rendered: Markup = getattr(module, name)(*args)
        return rendered
