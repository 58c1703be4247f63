"""The trace page (/trace, tracer role only): a case's visits and the people co-present, on the dashboard.

GET shows the form: a pass id or a subject id, the span in the province's local time (``report.timezone``) and
the co-presence window. POST runs ``trace.audited_trace`` with the logged-in person as the actor, the client's
address and ``{"via": "dashboard"}``, so the audit line is written before the query runs, and shows the visits
(place from the registry, gate, direction, local time) and the co-present people (pseudonymous id, place, time,
minutes apart). Bad input is answered on the form with what is wrong, never with an error page.

Why the traced id never goes into a URL: a query string is written to the TLS proxy's access log, to the
browser's history and to anything else that logs URLs, none of which is kept as the audit log is kept, nor as
briefly as the result itself (never stored). So the query is a POST, and so are the downloads: the CSV and JSON
buttons post the same query again with ``download=csv|json`` (each download is a trace of its own in the audit
log), rather than linking to a result kept on the server under a URL. Every response here is ``no-store``
(the app sends it on every page; said here again because these hold people's movements).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from ...errors import ProvinceError
from ..accounts import Session
from ..trace import MAX_SPAN, MAX_WINDOW_MIN, TraceResult, audited_trace
from . import format as fmt
from .auth import check_csrf, context_of, remote_of, require

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from ..registry import Place
    from .i18n import Language
    from .render import Renderer

log = logging.getLogger(__name__)

TRACE_ID_MAX = 256  # a pass id is what a QR code said; a longer one is a paste gone wrong
FORM_FIELD_MAX = 1024
DEFAULT_SPAN_DAYS = 14  # the usual look-back of a case
DEFAULT_WINDOW_MIN = 15
DOWNLOADS = ("csv", "json")
NO_STORE = {"Cache-Control": "no-store"}


class BadTraceInput(Exception):
    """What is wrong with the form: a label key and the values its sentence takes."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


@dataclass(frozen=True, slots=True)
class TraceForm:
    """The form's fields as typed (shown again with the answer or the error)."""

    pass_id: str = ""
    subject_id: str = ""
    start: str = ""
    end: str = ""
    window_min: str = str(DEFAULT_WINDOW_MIN)


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """A checked form: what ``audited_trace`` is asked."""

    pass_id: str | None
    subject_id: str | None
    start: dt.datetime
    end: dt.datetime
    window_min: int


def default_form(zone: ZoneInfo, now: float) -> TraceForm:
    """The last DEFAULT_SPAN_DAYS whole local days, today included."""
    tomorrow = dt.datetime.fromtimestamp(now, zone).date() + dt.timedelta(days=1)
    end = dt.datetime.combine(tomorrow, dt.time())
    return TraceForm(start=_local_input(end - dt.timedelta(days=DEFAULT_SPAN_DAYS)), end=_local_input(end))


def parse_trace_form(form: TraceForm, zone: ZoneInfo) -> TraceQuery:
    """The query the form asks for; BadTraceInput says what is wrong with it."""
    pass_id, subject_id = form.pass_id.strip(), form.subject_id.strip()
    if not pass_id and not subject_id:
        raise BadTraceInput("trace_error_no_id")
    if pass_id and subject_id:
        raise BadTraceInput("trace_error_both_ids")
    for value in (pass_id, subject_id):
        if len(value) > TRACE_ID_MAX or not value.isprintable():
            raise BadTraceInput("trace_error_id", max=TRACE_ID_MAX)
    start, end = _local_time(form.start, zone), _local_time(form.end, zone)
    if end <= start:
        raise BadTraceInput("trace_error_order")
    if end - start > MAX_SPAN:
        raise BadTraceInput("trace_error_span", days=MAX_SPAN.days)
    try:
        window_min = int(form.window_min.strip())
    except ValueError:
        raise BadTraceInput("trace_error_window", max=MAX_WINDOW_MIN) from None
    if not 0 <= window_min <= MAX_WINDOW_MIN:
        raise BadTraceInput("trace_error_window", max=MAX_WINDOW_MIN)
    return TraceQuery(pass_id or None, subject_id or None, start, end, window_min)


def result_rows(result: TraceResult, places: Mapping[str, Place], t: Mapping[str, str], language: Language,
                zone: ZoneInfo) -> dict[str, object]:
    """The result as the page shows it: places named from the registry, times local, directions in words."""

    def place_of(site_id: str) -> dict[str, object]:
        place = places.get(site_id)
        return {"place_id": site_id, "registered": place is not None,
                "place_name": place.name if place is not None else f"{site_id} {t['unregistered_place']}"}

    visits = [{**place_of(v.site_id), "gate": v.gate, "device_id": v.device_id,
               "direction": t.get(f"direction_{v.direction}", v.direction), "time": fmt.local_datetime(v.time, zone)}
              for v in result.visits]
    contacts = [{**place_of(c.site_id), "person": c.person, "time": fmt.local_datetime(c.time, zone),
                 "visit_time": fmt.local_datetime(c.visit_time, zone),
                 "minutes_apart": fmt.number(c.minutes_apart, language, 1)} for c in result.contacts]
    summary = t["trace_summary"].format(visits=len(result.visits), contacts=len(result.contacts),
                                        people=len(result.contact_people()))
    return {"visits": visits, "contacts": contacts, "summary": summary}


def trace_router(renderer: Renderer) -> APIRouter:
    router = APIRouter()

    def form_page(request: Request, form: TraceForm, *, error: str = "", result: dict[str, object] | None = None,
                  status: int = 200) -> Response:
        zone = context_of(request).zone
        response = renderer.page(request, "trace.html", {
            "form": form, "error": error, "result": result, "zone": zone.key, "max_window": MAX_WINDOW_MIN,
        }, status=status)
        response.headers.update(NO_STORE)
        return response

    @router.get("/trace")
    def trace_form(request: Request, session: Annotated[Session, Depends(require("tracer"))]) -> Response:
        return form_page(request, default_form(context_of(request).zone, time.time()))

    @router.post("/trace", dependencies=[Depends(check_csrf)])
    def trace_post(request: Request, session: Annotated[Session, Depends(require("tracer"))],
                   pass_id: Annotated[str, Form(max_length=FORM_FIELD_MAX)] = "",
                   subject_id: Annotated[str, Form(max_length=FORM_FIELD_MAX)] = "",
                   start: Annotated[str, Form(max_length=64)] = "",
                   end: Annotated[str, Form(max_length=64)] = "",
                   window_min: Annotated[str, Form(max_length=64)] = str(DEFAULT_WINDOW_MIN),
                   download: Annotated[str, Form(max_length=8)] = "") -> Response:
        context = context_of(request)
        t = renderer.labels(request)
        form = TraceForm(pass_id, subject_id, start, end, window_min)
        try:
            query = parse_trace_form(form, context.zone)
        except BadTraceInput as bad:
            return form_page(request, form, error=t[bad.key].format(**bad.values), status=400)
        output = download if download in DOWNLOADS else "html"
        try:
            result = audited_trace(context.database, context.accounts, session.user.name, pass_id=query.pass_id,
                                   subject_id=query.subject_id, start=query.start, end=query.end,
                                   window_min=query.window_min, remote=remote_of(request),
                                   detail={"via": "dashboard", "format": output})
        except ProvinceError as exc:
            # the message names the database's failure, never the traced id (which is not logged)
            log.warning("a trace by %s on the dashboard failed: %s", session.user.name, exc)
            return form_page(request, form, error=t["trace_failed"].format(detail=exc), status=503)
        log.info("%s traced a case on the dashboard (%s): %d visit(s), %d contact check-in(s)", session.user.name,
                 output, len(result.visits), len(result.contacts))
        if output != "html":
            stamp = query.start.astimezone(context.zone).strftime("%Y%m%d-%H%M")
            body, media = ((result.to_csv().encode("utf-8"), "text/csv; charset=utf-8") if output == "csv"
                           else (result.to_json(), "application/json"))
            # the file is named by the span, not the id: a download list is no place for whom was traced
            return Response(body, media_type=media, headers={
                **NO_STORE, "Content-Disposition": f'attachment; filename="qrgate-trace-{stamp}.{output}"'})
        places = {place.place_id: place for place in context.registry.places()}
        rows = result_rows(result, places, t, renderer.language(request), context.zone)
        return form_page(request, form, result=rows)

    return router


def _local_input(moment: dt.datetime) -> str:
    """A time as a ``datetime-local`` input holds it."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def _local_time(text: str, zone: ZoneInfo) -> dt.datetime:
    """A time typed in the form (``datetime-local``: 2024-05-01T08:00), in ``zone`` unless it names its own."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadTraceInput("trace_error_time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)
