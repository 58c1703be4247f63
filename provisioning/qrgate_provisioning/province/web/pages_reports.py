"""The daily reports: the list (/reports), one day's page (/reports/{day}), and its CSV and PDF as downloads.

The reports are the ones ``qrgate-province report`` built and stored (``report_store``); the pages never build
one (a build reads the whole day's check-ins: the 06:00 timer's job, not a page view's). The list reads its
headline figures straight out of the stored JSON, so that listing two months does not load every place's rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..accounts import Session
from ..report import REASON_LABELS, DailyReport, ReasonCode
from ..report_store import load_report
from . import format as fmt
from .auth import any_session, context_of
from .i18n import Language

if TYPE_CHECKING:
    import psycopg

    from .render import Renderer

LIST_LIMIT = 90


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One stored report as the list shows it."""

    day: dt.date
    built_at: dt.datetime
    places_registered: int
    places_with_gate: int
    gates_working: int
    scans: int
    places_non_complying: int


def report_lines(connection: psycopg.Connection[tuple[object, ...]], limit: int = LIST_LIMIT) -> list[ReportLine]:
    rows = connection.execute(
        "SELECT day, built_at, (body->>'places_registered')::int, (body->>'places_with_gate')::int, "
        "(body->>'gates_working')::int, (body->'scans'->>'total')::int, (body->>'places_non_complying')::int "
        "FROM daily_reports ORDER BY day DESC LIMIT %s", (limit,)).fetchall()
    lines = []
    for day, built_at, *figures in rows:
        assert isinstance(day, dt.date) and isinstance(built_at, dt.datetime)
        lines.append(ReportLine(day, built_at, *(int(value) if isinstance(value, int) else 0 for value in figures)))
    return lines


def reasons_text(codes: Sequence[ReasonCode], language: Language) -> str:
    return "; ".join(REASON_LABELS[language][code] for code in codes)


def reports_router(renderer: Renderer) -> APIRouter:
    router = APIRouter()

    def stored(request: Request, day: str) -> DailyReport | None:
        try:
            wanted = dt.date.fromisoformat(day)
        except ValueError:
            return None
        with context_of(request).database.connection() as connection:
            return load_report(connection, wanted)

    def not_found(request: Request) -> Response:
        return renderer.page(request, "error.html", {"message": renderer.labels(request)["report_not_found"]},
                             status=404)

    @router.get("/reports")
    def reports_page(request: Request, session: Annotated[Session, Depends(any_session)]) -> Response:
        context = context_of(request)
        language = renderer.language(request)
        with context.database.connection() as connection:
            lines = report_lines(connection)
        rows = [{"day": line.day.isoformat(), "day_label": line.day.strftime("%d/%m/%Y"),
                 "built_at": fmt.local_datetime(line.built_at, context.zone),
                 **{name: fmt.number(getattr(line, name), language)
                    for name in ("places_registered", "places_with_gate", "gates_working", "scans",
                                 "places_non_complying")},
                 "non_complying": line.places_non_complying > 0} for line in lines]
        return renderer.page(request, "reports.html", {"rows": rows})

    # the downloads first: "/reports/{day}" would otherwise take "2025-01-02.csv" as its day
    @router.get("/reports/{day}.csv")
    def report_csv_file(request: Request, day: str, session: Annotated[Session, Depends(any_session)]) -> Response:
        from ..report_csv import report_csv

        report = stored(request, day)
        if report is None:
            return not_found(request)
        return Response(report_csv(report).encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="qrgate-report-{report.day}.csv"'})

    @router.get("/reports/{day}.pdf")
    def report_pdf_file(request: Request, day: str, session: Annotated[Session, Depends(any_session)]) -> Response:
        from ..report_pdf import report_pdf

        report = stored(request, day)
        if report is None:
            return not_found(request)
        return Response(report_pdf(report), media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="qrgate-report-{report.day}.pdf"'})

    @router.get("/reports/{day}")
    def report_page(request: Request, day: str, session: Annotated[Session, Depends(any_session)]) -> Response:
        report = stored(request, day)
        if report is None:
            return not_found(request)
        language = renderer.language(request)
        number = lambda value: fmt.number(value, language)  # noqa: E731  # the template's one formatter
        non_complying = [{"place": place, "reasons": reasons_text(place.reasons, language),
                          "details": "; ".join(place.detail(code, language) for code in place.reasons)}
                         for place in report.non_complying]
        return renderer.page(request, "report.html", {
            "report": report, "day_label": report.day.strftime("%d/%m/%Y"), "number": number,
            "built_at": fmt.local_datetime(report.built_at, context_of(request).zone),
            "non_complying": non_complying,
        })

    return router
